"""Field faults a VPS meets: Strava revoking cookies early, files the server cannot read or write,
connections Strava refuses. Each is a clear one-line reason where the operator looks, and recovery
without a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REFRESH_POLL, cookie_export, redirector_env, run_cli
from tests.test_memory_cache import cached_file
from tests.test_refresh import no_second_refresh
from tests.test_tiles import heat_tile, import_cookies, png_label

NOBODY = 65534


def test_100_new_tiles_during_a_revocation_all_load_after_one_refresh(start_redirector, strava, tmp_path, revoked):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_REFRESH_POLL=REFRESH_POLL)
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200  # cached before the revocation
    revoked()
    strava.counters.clear()

    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda i: server.get(f'/tiles/all/hot/14/{8800 + i}/5372.png', timeout=60),
                                range(100)))

    assert [a.status_code for a in answers] == [200] * 100, {a.text for a in answers if a.status_code != 200}
    fetched = strava.counters['tiles']
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200
    assert strava.counters['tiles'] == fetched, 'a tile cached before the revocation is served from the cache'
    assert server.health()['ok'] is True
    no_second_refresh(server, strava)


def test_healthz_and_the_status_page_say_why_when_strava_refuses_the_cookies(start_redirector, strava, tmp_path,
                                                                           revoked):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_AUTH='none')  # nothing can renew them
    assert server.health()['ok'] is True
    strava.tile_status = 500
    assert server.get('/tiles/all/hot/13/4400/2686.png').status_code == 502  # Strava's tile server failed first
    strava.tile_status = None
    revoked()

    tile = server.get('/tiles/all/hot/13/4401/2686.png')
    assert tile.status_code == 503
    assert 'Strava refused the stored cookies (403) before their expiry' in server.logs()

    healthz = server.get('/healthz')
    assert healthz.status_code == 503
    assert healthz.json()['ok'] is False and healthz.json()['cookies']['valid'] is False
    assert 'refused' in healthz.json()['reason'], 'what the cookies need comes before the failed fetch'
    page = server.get('/').text
    assert 'The map works' not in page and 'refused' in page


def test_unreadable_cookies_json_is_reported_and_picked_up_once_fixed(start_redirector, strava, tmp_path,
                                                                      unprivileged):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    server = start_redirector(prefix=unprivileged)
    assert server.get('/tiles/all/hot/13/4401/2686.png').status_code == 200
    stored_before = server.health()['cookies']['refreshed_at']

    time.sleep(1.1)  # a new import is a new refreshed_at
    import_cookies(strava, data_dir)  # as `sudo … import-cookies` does: a file the server's user cannot read
    os.chown(data_dir / 'cookies.json', NOBODY, NOBODY)
    reason = server.wait_until(lambda: server.health()['reason'], timeout=20)
    assert 'cannot read' in reason and 'permission denied' in reason and 'chown' in reason
    assert server.get('/healthz').status_code == 503
    assert server.get('/livez').status_code == 200
    assert server.get('/tiles/all/hot/13/4402/2686.png').status_code == 200, 'the cookies in memory still work'
    status = run_cli('status', env=redirector_env(strava, data_dir), prefix=unprivileged)
    assert status.returncode == 1 and 'Traceback' not in status.stderr + status.stdout
    assert 'permission denied' in status.stdout

    os.chown(data_dir / 'cookies.json', os.geteuid(), os.getegid())
    server.wait_until(lambda: server.health()['ok'], timeout=20)
    assert server.health()['cookies']['refreshed_at'] != stored_before, 'the new import was read'
    assert server.logs().count('cannot read') == 1, 'one line when it breaks, not one per poll'
    assert 'can be used again' in server.logs()
    assert 'Traceback' not in server.logs()


def test_refresh_that_cannot_be_saved_is_reported_and_saved_once_writable(start_redirector, strava, tmp_path,
                                                                          unprivileged):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    server = start_redirector(prefix=unprivileged, HEATMAP_BACKOFF_MIN=1)
    import_cookies(strava, data_dir, lifetime=-60, force=True)  # expired cookies: a refresh is due at once
    data_dir.chmod(0o500)  # e.g. a volume mounted read-only, or owned by root after a restore
    try:
        reason = server.wait_until(lambda: 'cannot write' in (server.health()['reason'] or '')
                                   and server.health()['reason'], timeout=20)
        assert 'permission denied' in reason
        tile = server.get('/tiles/all/hot/13/4401/2686.png')
        assert tile.status_code == 503 and 'cannot write' in tile.text
    finally:
        data_dir.chmod(0o700)
    server.wait_until(lambda: server.health()['ok'], timeout=30)
    assert server.health()['cookies']['source'] == 'session'
    assert server.get('/tiles/all/hot/13/4401/2686.png').status_code == 200
    assert strava.counters['maps_ok'] <= 4, 'a refresh that cannot be saved is not repeated in a loop'
    assert 'Traceback' not in server.logs()


def test_data_dir_owned_by_another_user_is_used_without_a_crash(start_redirector, strava, tmp_path, unprivileged):
    data_dir = tmp_path / 'shared'
    data_dir.mkdir(mode=0o777)
    data_dir.chmod(0o777)
    os.chown(data_dir, NOBODY, NOBODY)
    server = start_redirector(data_dir=data_dir, prefix=unprivileged)
    assert server.get('/livez').status_code == 200
    assert 'others can read it' in server.logs()
    done = run_cli('import-cookies', '-', env=redirector_env(strava, data_dir), stdin=cookie_export(strava),
                   prefix=unprivileged)
    assert done.returncode == 0, done.stderr
    server.wait_until(lambda: server.health()['ok'], timeout=20)
    assert oct((data_dir / 'cookies.json').stat().st_mode & 0o777) == '0o600'


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB filesystem of its own that a test can fill, as a VPS's disk runs full."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f'the full-disk test mounts a small tmpfs, which needs root: {mounted.stderr.strip()}',
                    pytrace=False)
    yield disk
    subprocess.run(['umount', '--lazy', str(disk)], check=True)


def fill(path):
    """Write zeros to ``path`` until the disk is full."""
    with open(path, 'wb', buffering=0) as file:
        try:
            while True:
                file.write(bytes(65536))
        except OSError:
            pass


def test_a_full_disk_serves_new_tiles_without_a_copy_says_so_and_caches_again_once_freed(start_redirector, strava,
                                                                                      small_disk):
    data_dir = small_disk / 'data'
    import_cookies(strava, data_dir)
    server = start_redirector(data_dir=data_dir)
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200  # cached before the disk fills
    fill(small_disk / 'filler')

    new = [server.get(f'/tiles/all/hot/13/{4401 + i}/2686.png') for i in range(3)]
    assert [t.status_code for t in new] == [200] * 3, {t.text[:200] for t in new}
    assert all(t.content.startswith(b'\x89PNG') for t in new)
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200
    # each tile's disk copy is tried just after its answer: the warning follows a moment later
    health = server.wait_until(lambda: (answer := server.get('/healthz')).json()['warning'] and answer, timeout=10)
    assert health.status_code == 200 and 'the disk is full' in health.json()['warning']
    assert 'the disk is full' in server.get('/').text
    assert server.logs().count('the disk is full') == 1, 'one line when it starts, not one a tile'
    assert 'Traceback' not in server.logs()

    (small_disk / 'filler').unlink()
    assert server.get('/tiles/all/hot/13/4410/2686.png').status_code == 200
    server.wait_until(lambda: server.health()['warning'] is None, timeout=10)
    assert 'can be written again' in server.logs()
    fetched = strava.counters['tiles']
    assert server.get('/tiles/all/hot/13/4401/2686.png', headers={'Range': 'bytes=0-'}).status_code in (200, 206)
    assert strava.counters['tiles'] == fetched + 1, 'a tile served without a copy is fetched again'
    assert server.get('/tiles/all/hot/13/4401/2686.png', headers={'Range': 'bytes=0-'}).status_code in (200, 206)
    assert strava.counters['tiles'] == fetched + 1, '... and cached this time'


def test_a_tile_cache_left_to_another_user_is_named_with_its_fix_and_tiles_keep_coming(start_redirector, strava,
                                                                                      tmp_path, unprivileged):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    server = start_redirector(prefix=unprivileged, HEATMAP_MEMORY_CACHE_MB=0)  # each answer from the disk
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200
    cache = data_dir / 'tiles'
    cached_file(server, f'/tiles/all/hot/{z}/{x}/{y}.png')  # its disk copy comes just after the answer
    for path in [cache, *cache.rglob('*')]:  # as a `sudo … pack` run as another user would leave it
        os.chown(path, NOBODY, NOBODY)
    fetched = strava.counters['tiles']

    again = server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    assert again.status_code == 200 and png_label(again.content).startswith('all/hot')
    assert strava.counters['tiles'] == fetched + 1, 'a copy this server cannot read is fetched again'
    assert server.get('/tiles/all/hot/13/4420/2686.png').status_code == 200
    warning = server.wait_until(lambda: server.health()['warning'], timeout=10)
    assert 'permission denied' in warning and 'chown' in warning and str(cache) in warning
    assert 'Traceback' not in server.logs()

    for path in [cache, *cache.rglob('*')]:
        os.chown(path, os.geteuid(), os.getegid())
    assert server.get('/tiles/all/hot/13/4421/2686.png').status_code == 200
    server.wait_until(lambda: server.health()['warning'] is None, timeout=10)


def test_refused_connection_to_strava_is_a_502_at_once(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    closed = 'http://127.0.0.1:9/identified/globalheat/{activity}/{color}/{z}/{x}/{y}{suffix}.png'
    server = start_redirector(STRAVA_TILE_URL=closed, HEATMAP_UPSTREAM_TIMEOUT=40)
    answer = server.get('/tiles/all/hot/13/4401/2686.png', timeout=60)
    assert answer.status_code == 502
    assert 'could not connect' in answer.text and 'refused' in answer.text
    assert answer.elapsed.total_seconds() < 40 / 4, 'the refusal is the answer: no wait for the upstream timeout'


def test_healthz_says_why_while_strava_fails_tiles_and_recovers_with_the_next_tile(start_redirector, strava,
                                                                                 tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200
    strava.tile_status = 503

    assert server.get('/tiles/all/hot/13/4401/2686.png').status_code == 502
    healthz = server.get('/healthz')
    assert healthz.status_code == 503 and healthz.json()['cookies']['valid'] is True
    assert "Strava's tile server is failing (Strava answered 503" in healthz.json()['reason']
    page = server.get('/').text
    assert 'The map works' not in page and 'Strava answered 503' in page
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200, 'cached tiles are still served'

    strava.tile_status = None
    assert server.get('/tiles/all/hot/13/4401/2686.png').status_code == 200
    assert server.get('/healthz').status_code == 200 and server.health()['ok'] is True


def test_the_docker_image_holds_everything_the_server_needs(start_redirector, tmp_path):
    """What the Dockerfile copies, and nothing else, starts and answers; no Docker engine needed."""
    from tests.conftest import ROOT
    app = tmp_path / 'app'
    app.mkdir()
    copies = [line.split()[1:] for line in (ROOT / 'Dockerfile').read_text().splitlines()
              if line.startswith('COPY ') and '--from' not in line]
    for *sources, _ in copies:
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, app / source, ignore=shutil.ignore_patterns('__pycache__'),
                                dirs_exist_ok=True)
            else:
                (app / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, app / source)
    server = start_redirector(cwd=app, data_dir=tmp_path / 'data')
    assert server.get('/').status_code == 200
    assert server.get('/healthz').json()['ok'] is False
    assert server.get('/presets/').status_code == 200
    assert server.get('/static/leaflet/leaflet.js').status_code == 200
