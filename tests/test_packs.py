"""Offline packs made against the fake Strava through the real tile service, cache and cookie store."""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import redirector
from heatmap import settings as config
from heatmap.layers import transparent_png
from heatmap.packs import PackBusy, PackFailed
from heatmap.packs.area import cover
from heatmap.packs.jobs import PackService, PackTooLarge
from heatmap.packs.progress import ConsoleProgress
from heatmap.packs.request import make_request
from tests.conftest import ROOT, cookie_export, redirector_env
from tests.fake_strava import has_heat
from tests.test_tiles import import_cookies, png_label

BBOX = '7.40,46.90,7.50,46.96'  # 15 tiles at z11-13


def build_tiles(strava, data_dir: Path):
    """The server's own tile service (cache, cookie store, refresher) for ``data_dir``, as redirector.py builds it."""
    return redirector.build(config.load(argparse.Namespace(), redirector_env(strava, data_dir)))


@pytest.fixture(scope='module')
def imported_cookies(_strava_server, tmp_path_factory) -> Path:
    """cookies.json with valid tile cookies, imported once by `redirector.py import-cookies` for every test here."""
    data_dir = tmp_path_factory.mktemp('imported')
    import_cookies(_strava_server, data_dir)
    return data_dir / 'cookies.json'


@pytest.fixture
def data_dir(strava, imported_cookies, tmp_path) -> Path:
    (tmp_path / 'data').mkdir()
    shutil.copy(imported_cookies, tmp_path / 'data' / 'cookies.json')
    return tmp_path / 'data'


@pytest.fixture
def packs(strava, data_dir) -> PackService:
    _, _, tiles = build_tiles(strava, data_dir)
    return PackService(tiles, data_dir, rate=500, backoff=(0.05, 0.4))


def stored_tiles(path: Path, format: str) -> dict[tuple[int, int, int], bytes]:
    """(z, x, y) -> image of every tile in a pack, reading each format by its own rules."""
    with sqlite3.connect(path) as db:
        if format == 'mbtiles':
            rows = db.execute('SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles')
            return {(z, x, 2 ** z - 1 - row): image for z, x, row, image in rows}
        return {(z, x, y): image for z, x, y, image in db.execute('SELECT z, x, y, image FROM tiles')}


def assert_holds_the_fakes_tiles(path: Path, request) -> int:
    """Every tile over the area is where the fake says it served it; tiles without heat are transparent in the
    sqlitedb and left out of MBTiles. Returns the number of tiles over the area."""
    stored = stored_tiles(path, request.format)
    wanted = [(z, x, y) for z, tiles in cover(request.area, request.zooms, 100_000).tiles.items() for x, y in tiles]
    heat = [tile for tile in wanted if has_heat(*tile)]
    assert 0 < len(heat) < len(wanted), 'the area has tiles with and without heat'
    for z, x, y in heat:
        assert png_label(stored[z, x, y]) == f'{request.layer}/{z}/{x}/{y}@{request.px}'
    empty = [tile for tile in wanted if not has_heat(*tile)]
    if request.format == 'osmand':
        assert all(stored[tile] == transparent_png(request.px) for tile in empty)
    assert set(stored) == set(heat if request.format == 'mbtiles' else wanted)
    return len(wanted)


def test_an_mbtiles_pack_holds_each_tile_in_its_tms_row_with_the_metadata(packs, strava, tmp_path):
    request = make_request('ride/hot', '11-13', bbox=BBOX)
    out = packs.run(request, tmp_path / 'maps' / 'bern.mbtiles')
    assert out == tmp_path / 'maps' / 'bern.mbtiles'
    assert os.listdir(tmp_path / 'maps') == ['bern.mbtiles'], 'no part file is left beside the pack'
    total = assert_holds_the_fakes_tiles(out, request)
    assert strava.counters['tiles'] == total
    with sqlite3.connect(out) as db:
        metadata = dict(db.execute('SELECT name, value FROM metadata'))
        assert db.execute('PRAGMA application_id').fetchone() == (0x4D504258,)
    assert metadata == {
        'name': 'Strava heatmap ride/hot', 'description': 'bbox 7.40,46.90,7.50,46.96, zooms 11-13', 'format': 'png',
        'type': 'overlay', 'version': '1', 'bounds': '7.4,46.9,7.5,46.96', 'center': '7.45,46.93,13', 'minzoom': '11',
        'maxzoom': '13', 'attribution': 'Heatmap © Strava'}


def test_a_second_pack_of_the_same_area_asks_strava_for_nothing_and_follows_osmands_schema(packs, strava, tmp_path):
    packs.run(make_request('ride/hot', '11-13', bbox=BBOX, px='512'), tmp_path / 'first.mbtiles')
    fetched = strava.counters['tiles']
    request = make_request('ride/hot', '11-13', bbox=BBOX, px='512', format='osmand')
    assert packs.estimate(request).cached == fetched
    out = packs.run(request, tmp_path / 'bern.sqlitedb')
    assert strava.counters['tiles'] == fetched, 'every tile came from the cache'
    assert assert_holds_the_fakes_tiles(out, request) == fetched
    with sqlite3.connect(out) as db:
        info = db.execute('SELECT * FROM info').fetchall()
        columns = [row[1] for row in db.execute('PRAGMA table_info(tiles)')]
    assert columns == ['x', 'y', 'z', 's', 'image', 'time']
    assert info == [('simple', '11', '13', '', 'Strava heatmap ride/hot', '0', '0', 'yes', '', '512', '', '', '', '')]


def test_a_pack_goes_into_a_folder_under_its_own_name_and_an_unwritable_place_is_one_line(packs, strava, tmp_path):
    request = make_request('ride/hot', '11-13', bbox=BBOX)
    (tmp_path / 'notes').write_text('a file, not a folder')
    with pytest.raises(PackFailed, match=r'^cannot write the pack to \S+/notes/bern.mbtiles \(.+\): choose a folder'):
        packs.run(request, tmp_path / 'notes' / 'bern.mbtiles')
    assert strava.counters['tiles'] == 0, 'nothing is fetched for a pack that cannot be written'
    assert packs.run(request, tmp_path) == tmp_path / 'strava-ride-hot-z11-13-256px.mbtiles'


def test_gdal_reads_the_mbtiles_bounds_and_zoom_levels(packs, tmp_path):
    gdalinfo = shutil.which('gdalinfo')
    if gdalinfo is None:
        pytest.fail("GDAL's gdalinfo is needed to check MBTiles files: apt-get install gdal-bin", pytrace=False)
    out = packs.run(make_request('ride/hot', '11-13', bbox=BBOX), tmp_path / 'bern.mbtiles')
    done = subprocess.run([gdalinfo, '-json', str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report['driverShortName'] == 'MBTiles'
    assert report['metadata']['']['ZOOM_LEVEL'] == '13'
    assert len(report['bands'][0]['overviews']) == 2, 'zooms 12 and 11 are the overviews of zoom 13'
    corners = report['wgs84Extent']['coordinates'][0]
    longitudes, latitudes = [lon for lon, _ in corners], [lat for _, lat in corners]
    assert (min(longitudes), min(latitudes), max(longitudes), max(latitudes)) == pytest.approx(
        (7.40, 46.90, 7.50, 46.96), abs=1e-3)


def test_a_pack_over_the_limit_is_refused_with_the_estimate_before_any_fetch(strava, data_dir):
    _, _, tiles = build_tiles(strava, data_dir)
    packs = PackService(tiles, data_dir, max_tiles=5)
    request = make_request('ride/hot', '11-13', bbox=BBOX)
    with pytest.raises(PackTooLarge) as raised:
        packs.start(request)
    assert str(raised.value).startswith('the pack would hold more than')
    assert 'z11: 2, z12: 4, z13: not counted' in str(raised.value)
    assert 'narrower corridor' in str(raised.value) and 'fewer zooms' in str(raised.value)
    assert strava.counters['tiles'] == 0 and packs.jobs() == []
    preview = packs.preview(request)  # what the page's map draws
    assert preview['allowed'] is False and preview['estimate']['summary'].startswith('more than 6 tiles')
    assert preview['tiles'] == [[12, x, y] for x, y in cover(request.area, range(12, 13), 10).tiles[12]]
    assert preview['area']['type'] == 'Polygon'
    assert PackService(tiles, data_dir, max_tiles=14).estimate(request).summary().startswith(
        '15 tiles (z11: 2, z12: 4, z13: 9), 0 already cached')


def test_new_fetches_keep_to_the_pack_rate_and_cached_tiles_are_free(strava, data_dir, tmp_path):
    _, _, tiles = build_tiles(strava, data_dir)
    request = make_request('ride/hot', '11-13', bbox=BBOX)
    started = time.monotonic()
    PackService(tiles, data_dir, rate=10).run(request, tmp_path / 'first.mbtiles')
    assert time.monotonic() - started >= 1.4, '15 new tiles at 10 a second take at least 1.4 s'
    assert strava.counters['tiles'] == 15
    started = time.monotonic()
    lines = io.StringIO()
    with ConsoleProgress(lines) as progress:
        PackService(tiles, data_dir, rate=0.2).run(request, tmp_path / 'again.mbtiles', progress)
    assert time.monotonic() - started < 30, 'cached tiles do not wait for the rate (15 at 0.2/s would take 70 s)'
    assert lines.getvalue().splitlines()[-1] == 'pack: 15/15 tiles (100%), 0 requests to Strava, about 0 s left'


@pytest.mark.parametrize('status, waits', [
    (500, ['0.05 s', '0.1 s', '0.2 s']),  # doubling from the shortest wait
    (429, ['0.4 s', '0.4 s', '0.4 s']),  # Strava's Retry-After (60 s by default), up to the longest wait
])
def test_failed_fetches_back_off_and_then_the_pack_goes_on(packs, strava, tmp_path, status, waits):
    strava.tile_status = status
    notes = []

    def watch(progress):
        if progress.note:
            notes.append(progress.note)
            if len(notes) == 3:
                strava.tile_status = None

    request = make_request('ride/hot', '11-13', bbox=BBOX)
    out = packs.run(request, tmp_path / 'bern.mbtiles', watch)
    assert [note.rsplit(' in ', 1)[1] for note in notes] == waits
    assert all(str(status) in note for note in notes), notes
    assert strava.counters['tiles'] == 15 + 3, 'one request per wait: no hammering'
    assert_holds_the_fakes_tiles(out, request)


def test_refused_cookies_make_the_pack_wait_for_new_ones(strava, tmp_path):
    export = json.loads(cookie_export(strava))
    for cookie in export:
        if cookie['name'] == 'CloudFront-Signature':
            cookie['value'] = 'forged' + cookie['value'][6:]
    done = subprocess.run([sys.executable, 'redirector.py', 'import-cookies', '-'], cwd=ROOT, input=json.dumps(export),
                          env=redirector_env(strava, tmp_path / 'data'), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _, refresher, tiles = build_tiles(strava, tmp_path / 'data')
    refresher.start()
    packs = PackService(tiles, tmp_path / 'data', rate=500, backoff=(0.1, 0.5))
    request = make_request('ride/hot', '11-13', bbox=BBOX)
    out = packs.run(request, tmp_path / 'bern.mbtiles')
    assert strava.counters['tiles_denied'] >= 1, 'Strava refused the forged cookies'
    assert strava.counters['maps_ok'] == 1, 'the refresher got new cookies once'
    assert_holds_the_fakes_tiles(out, request)


def test_only_one_pack_is_made_at_a_time_even_from_another_process(packs, strava, data_dir, tmp_path):
    strava.tile_latency = 0.1  # the first pack takes 1.5 s or more
    job, _ = packs.start(make_request('ride/hot', '11-13', bbox=BBOX))
    with pytest.raises(PackBusy, match=r'another pack is being made \(ride/hot, bbox 7.40,46.90,7.50,46.96, zooms'):
        packs.start(make_request('run/blue', '11', bbox=BBOX))
    other = PackService(build_tiles(strava, data_dir)[2], data_dir)  # what a `pack` command would have
    with pytest.raises(PackBusy):
        other.run(make_request('run/blue', '11', bbox=BBOX), tmp_path / 'run.mbtiles')
    wait_for(lambda: packs.job(job.id).status != 'running')
    assert packs.job(job.id).status == 'done'
    assert other.run(make_request('run/blue', '11', bbox=BBOX), tmp_path / 'run.mbtiles').exists()


def wait_for(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'not within the time allowed'
        time.sleep(0.05)


KILLED_SERVER = """
import argparse, os, time
from pathlib import Path
import redirector
from heatmap import settings as config
from heatmap.packs.jobs import PackService
from heatmap.packs.request import make_request
_, _, tiles = redirector.build(config.load(argparse.Namespace(), os.environ))
packs = PackService(tiles, Path(os.environ['HEATMAP_DATA_DIR']), rate=100)
packs.start(make_request('ride/hot', '11-14', bbox={bbox!r}))
time.sleep(600)
"""


def test_a_job_killed_midway_goes_on_after_a_restart_without_fetching_a_cached_tile_again(strava, data_dir):
    strava.tile_latency = 0.02
    server = subprocess.Popen([sys.executable, '-c', KILLED_SERVER.format(bbox=BBOX)], cwd=ROOT,
                              env=redirector_env(strava, data_dir))
    cached = lambda: list((data_dir / 'tiles').rglob('*.png'))  # noqa: E731
    try:
        wait_for(lambda: len(cached()) >= 12 or server.poll() is not None)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    cached_before, fetched_before = len(cached()), strava.counters['tiles']
    [job_file] = (data_dir / 'packs').glob('*.json')
    assert json.loads(job_file.read_text())['status'] == 'running'
    assert job_file.stat().st_mode & 0o777 == 0o600

    _, _, tiles = build_tiles(strava, data_dir)
    restarted = PackService(tiles, data_dir, rate=100)
    job = restarted.resume_unfinished()
    wait_for(lambda: restarted.job(job.id).status != 'running')
    job = restarted.job(job.id)
    assert job.status == 'done', job.error
    assert job.estimate.cached == cached_before
    assert strava.counters['tiles'] - fetched_before == job.progress.fetched == job.estimate.total - cached_before
    total = assert_holds_the_fakes_tiles(data_dir / 'packs' / job.file, job.request)
    assert total == job.estimate.total > cached_before
    wait_for(lambda: json.loads(job_file.read_text())['status'] != 'running')  # saved just after the job ends
    shown = json.loads(job_file.read_text())
    assert shown['status'] == 'done' and shown['progress']['percent'] == 100
    assert shown['download_name'] == 'strava-ride-hot-z11-14-256px.mbtiles'
    assert sorted(os.listdir(data_dir / 'packs')) == sorted(['.lock', job_file.name, job.file])


def read_all(leader: int) -> str:
    """Everything written to a pseudo-terminal, read from its leader side (one read may return only a part)."""
    chunks = []
    try:
        while select.select([leader], [], [], 0.5)[0]:
            chunk = os.read(leader, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:  # EIO: the terminal's other side is closed and everything has been read
        pass
    finally:
        os.close(leader)
    return b''.join(chunks).decode()


def test_progress_is_a_bar_with_the_time_left_on_a_terminal(packs, tmp_path):
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 120, 0, 0))  # 24 rows, 120 columns
    with open(follower, 'w') as terminal, ConsoleProgress(terminal) as progress:
        packs.run(make_request('ride/hot', '11-13', bbox=BBOX), tmp_path / 'bern.mbtiles', progress)
    screen = read_all(leader)
    assert 'pack 100%|' in screen and '| 15/15 tiles [' in screen and 'requests to Strava, about 0 s left]' in screen
    assert ', ]' not in screen, 'the first drawing of the bar already says what is left'
