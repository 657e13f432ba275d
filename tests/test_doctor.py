"""`redirector.py doctor` names the step that fails and what to do."""

from __future__ import annotations

import os

from tests.conftest import redirector_env, run_cli
from tests.test_faults import NOBODY
from tests.test_tiles import import_cookies


def doctor(strava, data_dir, prefix=(), **settings):
    return run_cli('doctor', env=redirector_env(strava, data_dir, **settings), prefix=prefix)


def test_doctor_passes_every_step_when_all_works(strava, apify, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    done = doctor(strava, tmp_path / 'data', HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                  APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='a@b.c', STRAVA_PASSWORD='p')
    assert done.returncode == 0, done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines()] == ['ok'] * 7
    assert done.stdout.startswith(f"ok    cookies.json usable: {tmp_path / 'data' / 'cookies.json'} can be read\n")
    assert apify.counters['runs'] == 0, 'doctor checks the actor without running it'


def test_doctor_names_a_dead_session(strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    strava.end_all_sessions()
    done = doctor(strava, tmp_path / 'data')
    assert done.returncode == 1
    assert 'FAIL  session valid' in done.stdout and 'import fresh cookies' in done.stdout


def test_doctor_names_refused_tiles(strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    strava.tile_status = 403
    done = doctor(strava, tmp_path / 'data')
    assert done.returncode == 1
    assert 'ok    session valid' in done.stdout
    assert 'FAIL  one tile loads: Strava refused the new cookies on a tile (403)' in done.stdout


def test_doctor_names_an_unreachable_strava(strava, tmp_path):
    done = doctor(strava, tmp_path / 'data', STRAVA_MAPS_URL='http://127.0.0.1:9/maps')
    assert done.returncode == 1 and 'FAIL  heatmap page reachable' in done.stdout


def test_doctor_names_a_wrong_apify_token(strava, apify, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    done = doctor(strava, tmp_path / 'data', HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN='wrong',
                  APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='a@b.c', STRAVA_PASSWORD='p')
    assert done.returncode == 1
    assert 'FAIL  actor reachable on Apify: Apify refused the token: check APIFY_TOKEN' in done.stdout


def test_doctor_names_a_tile_cache_it_cannot_write_and_the_fix(strava, tmp_path, unprivileged):
    import_cookies(strava, tmp_path / 'data')
    assert 'ok    tile cache writable' in doctor(strava, tmp_path / 'data').stdout
    os.chown(tmp_path / 'data' / 'tiles', NOBODY, NOBODY)
    done = doctor(strava, tmp_path / 'data', prefix=unprivileged)
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert 'FAIL  tile cache writable: cannot write to the tile cache' in done.stdout
    assert 'permission denied' in done.stdout and 'sudo chown -R' in done.stdout
