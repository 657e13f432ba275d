"""Pack jobs: cancel, delete, the same pack asked again, the disk they take, overzoom and personal packs, and job
files that a crash or a hand damaged."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest
import requests

from heatmap.packs import PackBusy, PackFailed
from heatmap.packs.area import cover
from heatmap.packs.jobs import PackService, PackTooLarge
from heatmap.packs.request import make_request
from tests import test_packs
from tests.conftest import run_cli, stays
from tests.test_packs import BBOX, build_tiles, stored_tiles, wait_for
from tests.test_packs_web import form
from tests.test_tiles import import_cookies, png_label

data_dir, imported_cookies = test_packs.data_dir, test_packs.imported_cookies  # fixtures: valid cookies, copied
OTHER_BBOX = '7.60,46.60,7.70,46.66'
WATCH = 2  # seconds, four tiles' time in the cancel test: a running pack is seen to fetch within it


def job_files(data_dir) -> list[str]:
    return sorted(name for name in os.listdir(data_dir / 'packs') if name != '.lock')


def start(server, **fields) -> requests.Response:
    return requests.post(f'{server.url}/packs/', files=form(**{'layer': 'ride/hot', 'zooms': '11-13', **fields}),
                         timeout=30)


def test_a_running_pack_is_cancelled_with_its_files_and_the_next_one_starts_at_once(start_redirector, strava,
                                                                                    data_dir):
    strava.tile_latency = 0.5  # 15 tiles: 7.5 s or more
    server = start_redirector(data_dir=data_dir, HEATMAP_PACK_RATE=50)
    job = start(server, bbox=BBOX).json()
    server.wait_until(lambda: server.get(f'/packs/{job["id"]}.json').json()['progress']['done'] >= 2)
    fetched = strava.counters['tiles']
    server.wait_until(lambda: strava.counters['tiles'] > fetched, timeout=WATCH, interval=0.05)  # seen fetching
    cancelled = requests.delete(f'{server.url}/packs/{job["id"]}', timeout=30)
    assert cancelled.json() == {'id': job['id'], 'result': 'cancelled'}
    shown = server.get(f'/packs/{job["id"]}.json').json()
    assert shown['status'] == 'cancelled' and shown['progress']['done'] < 15
    assert job_files(data_dir) == [f'{job["id"]}.json'], 'no part file or journal is left'
    stays(lambda: strava.counters['tiles'], strava.counters['tiles'], seconds=WATCH, what='the tiles fetched')

    strava.tile_latency = 0
    following = start(server, bbox=OTHER_BBOX)
    assert following.status_code == 202, following.text
    server.wait_until(lambda: server.get(f'/packs/{following.json()["id"]}.json').json()['status'] == 'done')
    deleted = requests.delete(f'{server.url}/packs/{job["id"]}', timeout=30)
    assert deleted.json()['result'] == 'deleted'
    assert server.get(f'/packs/{job["id"]}.json').status_code == 404
    assert f'pack {job["id"]} cancelled after ' in server.logs()
    assert f'pack {following.json()["id"]} finished: strava-ride-hot-z11-13-256px.mbtiles' in server.logs()


def test_a_finished_pack_asked_again_is_the_same_job_and_delete_removes_its_file(start_redirector, strava,
                                                                                 data_dir):
    server = start_redirector(data_dir=data_dir, HEATMAP_PACK_RATE=50)
    first = start(server, bbox=BBOX)
    assert first.status_code == 202
    job = first.json()
    server.wait_until(lambda: server.get(f'/packs/{job["id"]}.json').json()['status'] == 'done')
    fetched = strava.counters['tiles']
    again = start(server, bbox=BBOX)
    assert again.status_code == 200 and again.json()['id'] == job['id'] and again.json()['existing'] is True
    other_format = start(server, bbox=BBOX, format='osmand')
    assert other_format.status_code == 202 and other_format.json()['id'] != job['id'], 'another file is another pack'
    server.wait_until(lambda: server.get(f'/packs/{other_format.json()["id"]}.json').json()['status'] == 'done')
    assert strava.counters['tiles'] == fetched, 'the second file came from the cache'
    assert len([name for name in job_files(data_dir) if name.endswith('.mbtiles')]) == 1

    assert requests.delete(f'{server.url}/packs/{job["id"]}', timeout=30).json()['result'] == 'deleted'
    assert not (data_dir / 'packs' / job['file']).exists() and not (data_dir / 'packs' / f'{job["id"]}.json').exists()
    assert requests.delete(f'{server.url}/packs/{job["id"]}', timeout=30).status_code == 404
    assert start(server, bbox=BBOX).status_code == 202, 'once deleted, the pack can be made again'


def test_the_routes_that_cancel_and_delete_need_the_key(start_redirector, data_dir):
    server = start_redirector(data_dir=data_dir, HEATMAP_ACCESS_KEY='k')
    assert requests.delete(f'{server.url}/packs/20260101-000000-abcdef', timeout=30).status_code == 403
    assert requests.delete(f'{server.url}/packs/20260101-000000-abcdef?key=k', timeout=30).status_code == 404


def test_finished_packs_stay_under_the_disk_cap_oldest_first_and_a_pack_too_large_alone_is_refused(strava, data_dir,
                                                                                                   tmp_path):
    _, _, tiles = build_tiles(strava, data_dir)
    roomy = PackService(tiles, data_dir, rate=500)
    roomy.run(make_request('ride/hot', '11-13', bbox=OTHER_BBOX), tmp_path)  # cached: estimated as they are
    first, _ = roomy.start(make_request('ride/hot', '11-13', bbox=BBOX))
    wait_for(lambda: roomy.job(first.id).status == 'done')
    size = (data_dir / 'packs' / first.file).stat().st_size

    capped = PackService(tiles, data_dir, rate=500, max_bytes=int(size * 1.5))
    second, _ = capped.start(make_request('ride/hot', '11-13', bbox=OTHER_BBOX))
    wait_for(lambda: capped.job(second.id).status == 'done')
    assert capped.job(first.id) is None and not (data_dir / 'packs' / first.file).exists(), 'the oldest pack went'
    assert (data_dir / 'packs' / second.file).exists()

    with pytest.raises(PackTooLarge) as refused:
        capped.start(make_request('ride/hot', '11-14', bbox='7.30,46.80,7.60,47.00'))
    assert str(refused.value).startswith('the pack would take about ') and 'HEATMAP_PACKS_MAX_MB' in str(refused.value)
    assert capped.job(second.id).status == 'done', 'a refused pack removes nothing'


def test_a_pack_that_outgrows_the_room_left_while_it_is_made_stops_with_the_reason(strava, data_dir, tmp_path):
    _, _, tiles = build_tiles(strava, data_dir)
    packs = PackService(tiles, data_dir, rate=500)
    request = make_request('ride/hot', '11-15', bbox=BBOX)
    found = cover(request.area, request.zooms, 10_000)
    asked = []

    def room(size: int) -> float:
        asked.append(size)
        return 20_000

    with pytest.raises(PackFailed, match=r'^the pack grew to \d+ kB, more than the room left for packs \(20 kB, '
                                         r'HEATMAP_PACKS_MAX_MB\)'):
        packs.runner.write(request, found, packs.estimate(request), tmp_path / 'big.mbtiles', lambda _: None,
                           room=room)
    assert asked and asked[-1] > 20_000 and strava.counters['tiles'] < found.total


def test_a_zoom_15_to_17_pack_asks_strava_only_for_the_zoom_15_tiles_and_is_not_slowed_by_the_rest(strava, data_dir,
                                                                                                   tmp_path):
    _, _, tiles = build_tiles(strava, data_dir)
    packs = PackService(tiles, data_dir, rate=4)
    request = make_request('ride/hot', '15-17', bbox='7.440,46.940,7.455,46.948', deepest=18)
    found = cover(request.area, request.zooms, 10_000)
    estimate = packs.estimate(request)
    ancestors = {(x >> (zoom - 15), y >> (zoom - 15), zoom - 15) for zoom, tiles_ in found.tiles.items()
                 for x, y in tiles_ if zoom > 15}
    assert estimate.total == found.total > 40
    # Each zoom needs its own ancestor size: z15 256 px, z16 from 512 px, z17 from 1024 px (@2x).
    assert estimate.requests == len(found.tiles[15]) + len({a for a in ancestors if a[2] == 1}) \
        + len({a for a in ancestors if a[2] == 2})
    assert estimate.seconds == estimate.requests / 4 < estimate.total / 4
    started = time.monotonic()
    out = packs.run(request, tmp_path / 'deep.mbtiles')
    took = time.monotonic() - started
    assert strava.counters['tiles'] == estimate.requests, 'Strava was asked for the zoom-15 tiles only'
    assert took < (estimate.total - 1) / 4, f'{took:.1f} s: as slow as every tile waiting for the rate'
    stored = stored_tiles(out, 'mbtiles')
    assert {z for z, _, _ in stored} == {15, 16, 17}


def test_a_personal_pack_holds_the_athletes_own_tiles_and_needs_the_athlete(strava, data_dir, tmp_path):
    import_cookies(strava, data_dir, force=True)  # a session the fake knows: personal tiles need it
    _, _, tiles = build_tiles(strava, data_dir)
    packs = PackService(tiles, data_dir, rate=500, backoff=(0.05, 0.2), give_up_after=2)
    request = packs.request('personal/ride/hot', '11-12', bbox=BBOX)
    out = packs.run(request, tmp_path / 'mine.mbtiles')
    labels = {png_label(image) for image in stored_tiles(out, 'mbtiles').values()}
    assert labels and all(label.startswith('personal/12345678/ride/hot/') for label in labels)
    assert request.file_name == 'strava-personal-ride-hot-z11-12-256px.mbtiles'
    with sqlite3.connect(out) as db:
        assert dict(db.execute('SELECT name, value FROM metadata'))['name'] == 'Strava heatmap personal/ride/hot'

    without = run_cli('pack', '--layer', 'personal/ride/hot', '--bbox', BBOX, '--zooms', '11', '--dry-run',
                      env=test_packs.redirector_env(strava, tmp_path / 'empty'))
    assert without.returncode == 2 and without.stderr.strip().startswith('the personal heatmap needs your athlete id')


def test_the_command_line_lists_cancels_and_deletes_the_pages_packs(start_redirector, strava, data_dir):
    strava.tile_latency = 2  # the pack runs for half a minute: the commands meet it running on a busy machine
    server = start_redirector(data_dir=data_dir, HEATMAP_PACK_RATE=50)
    job = start(server, bbox=BBOX).json()
    env = test_packs.redirector_env(strava, data_dir)
    listed = run_cli('pack', '--list', env=env)
    assert listed.returncode == 0 and listed.stdout.startswith(f'{job["id"]}  ride/hot, bbox 7.40,46.90,7.50,46.96, '
                                                               'zooms 11-13, 256 px, mbtiles  ')
    assert run_cli('pack', '--delete', job['id'], env=env).stderr.strip() == \
        f'pack {job["id"]} is still being made: `pack --cancel {job["id"]}` stops it first'
    cancelled = run_cli('pack', '--cancel', job['id'], env=env)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f'pack {job["id"]} cancelled'
    shown = server.get(f'/packs/{job["id"]}.json').json()
    assert shown['status'] == 'cancelled', 'the server saw the cancel and stopped'
    assert job_files(data_dir) == [f'{job["id"]}.json']
    deleted = run_cli('pack', '--delete', job['id'], env=env)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f'pack {job["id"]} deleted'
    assert server.get(f'/packs/{job["id"]}.json').status_code == 404
    assert run_cli('pack', '--cancel', 'nonsense', env=env).stderr.strip() == \
        "no pack job 'nonsense': `pack --list` shows them"


def test_damaged_and_leftover_job_files_never_stop_the_server(start_redirector, strava, data_dir):
    folder = data_dir / 'packs'
    folder.mkdir()
    good = make_request('ride/hot', '11', bbox=BBOX).to_json()
    job = {'id': '', 'status': 'running', 'error': None, 'request': good, 'progress': {'done': 0, 'total': 2},
           'estimate': {'tiles': {'11': 2}, 'complete': True, 'max_zoom': 11, 'cached': 0, 'requests': 2,
                        'size_bytes': 1, 'rate': 4}, 'created_at': '2026-01-01T00:00:00Z', 'finished_at': None}
    damaged = {
        '20260101-000001-aaaaaa': {**job, 'request': {**good, 'area': {'name': 'x', 'circle': [7, 46, 5]}}},
        '20260101-000002-bbbbbb': {**job, 'status': 'done', 'request': {**good, 'format': 'kmz'}},
        '20260101-000003-cccccc': {**job, 'request': {**good, 'area': {'name': 'x', 'lines': [[[7, 46]] * 40_000],
                                                                        'polygons': [], 'line_reach_m': 1,
                                                                        'polygon_reach_m': 0}}},
        '20260101-000004-dddddd': 'not a job',
    }
    for job_id, content in damaged.items():
        (folder / f'{job_id}.json').write_text(json.dumps({**content, 'id': job_id} if isinstance(content, dict)
                                                          else content))
    (folder / '.20260101-000002-bbbbbb.json.999999.1.tmp').write_bytes(b'x' * 100_000)  # a kill -9 mid-save
    server = start_redirector(data_dir=data_dir)
    for job_id in damaged:
        shown = server.get(f'/packs/{job_id}.json')
        assert shown.status_code == 200 and shown.json()['status'] == 'failed', shown.text
        assert shown.json()['error'].startswith('the job file cannot be read (')
    assert json.loads((folder / '20260101-000001-aaaaaa.json').read_text())['status'] == 'failed', \
        'a damaged running job is never resumed again'
    assert server.get('/packs/').status_code == 200
    assert not (folder / '.20260101-000002-bbbbbb.json.999999.1.tmp').exists()
    assert requests.delete(f'{server.url}/packs/20260101-000004-dddddd', timeout=30).json()['result'] == 'deleted'
    assert strava.counters['tiles'] == 0


def test_a_pack_busy_elsewhere_is_named_and_never_reused_by_mistake(strava, data_dir):
    _, _, tiles = build_tiles(strava, data_dir)
    strava.tile_latency = 0.2
    packs = PackService(tiles, data_dir, rate=500)
    job, existing = packs.start(make_request('ride/hot', '11-13', bbox=BBOX))
    assert not existing
    assert packs.start(make_request('ride/hot', '11-13', bbox=BBOX)) == (job, True), 'the running job is the pack'
    with pytest.raises(PackBusy):
        packs.start(make_request('ride/hot', '11-13', bbox=OTHER_BBOX))
    assert packs.remove(job.id) == 'cancelled'
