"""`redirector.py pack`: the estimate first, a dry run, Ctrl-C and a run that goes on, one line for every mistake."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

import redirector
from heatmap import cli
from heatmap.packs.request import make_request
from tests import test_packs
from tests.conftest import ROOT, redirector_env, run_cli
from tests.test_packs import BBOX, assert_holds_the_fakes_tiles

data_dir, imported_cookies = test_packs.data_dir, test_packs.imported_cookies  # fixtures: valid cookies, copied
PACK = ('pack', '--layer', 'ride/hot', '--bbox', BBOX)


def test_pack_command_estimates_first_goes_on_after_ctrl_c_and_asks_strava_nothing_the_second_time(
        strava, data_dir, tmp_path):
    env = redirector_env(strava, data_dir, HEATMAP_PACK_RATE=10)
    dry = run_cli(*PACK, '--zooms', '11-14', '--dry-run', env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith('estimate: 45 tiles (z11: 2, z12: 4, z13: 9, z14: 30), 0 already cached, 45 to fetch '
                                 'from Strava; about ')
    assert dry.stdout.rstrip().endswith('about 4 s at 10 tiles/s; centred on 46.93° N, 7.45° E')
    assert strava.counters['tiles'] == 0, 'a dry run fetches nothing'

    out = tmp_path / 'maps' / 'bern.mbtiles'
    strava.tile_latency = 0.3  # 45 tiles take 13 s or more: a busy machine still interrupts the pack midway
    interrupted = subprocess.Popen([sys.executable, 'redirector.py', *PACK, '--zooms', '11-14', '--out', str(out)],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a shell
    deadline = time.monotonic() + 60
    while strava.counters['tiles'] < 5 and interrupted.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGINT)  # what Ctrl-C sends
    strava.tile_latency = 0
    _, stderr = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, stderr
    assert stderr.splitlines()[-1] == 'stopped: run the same command again to go on where it stopped'
    assert not out.exists(), 'a half-built pack is never where the user looks'
    fetched = strava.counters['tiles']
    assert 5 <= fetched < 45

    again = run_cli(*PACK, '--zooms', '11-14', '--out', str(out), env={**env, 'HEATMAP_PACK_RATE': '50'})
    assert again.returncode == 0, again.stderr
    cached = int(re.search(r'\(z11: 2, z12: 4, z13: 9, z14: 30\), (\d+) already cached', again.stdout)[1])
    assert fetched - 1 <= cached <= fetched, 'what was fetched before Ctrl-C is cached (but for a tile in flight)'
    assert again.stdout.splitlines()[-1].startswith(f'wrote {out} (')
    assert again.stderr.splitlines()[-1] == \
        f'pack: 45/45 tiles (100%), {45 - cached} requests to Strava, about 0 s left'
    assert strava.counters['tiles'] - fetched == 45 - cached, 'no cached tile was fetched again'
    assert_holds_the_fakes_tiles(out, make_request('ride/hot', '11-14', bbox=BBOX))

    fetched = strava.counters['tiles']
    osmand = run_cli(*PACK, '--zooms', '11-14', '--out', str(tmp_path / 'bern.sqlitedb'), env=env)
    assert osmand.returncode == 0, osmand.stderr
    assert strava.counters['tiles'] == fetched, 'the second pack of the area came from the cache'
    assert_holds_the_fakes_tiles(tmp_path / 'bern.sqlitedb', make_request('ride/hot', '11-14', bbox=BBOX,
                                                                          format='osmand'))


@pytest.mark.parametrize('args, error', [
    (('--layer', 'bike/hot', '--bbox', BBOX), "layer 'bike/hot': unknown activity 'bike'"),
    (('--layer', 'ride/hot', '--bbox', '7.50,46.90,7.40,46.96'), 'bbox is inverted: west (7.5) must be less than'),
    (('--layer', 'ride/hot', '--bbox', '-200,46.90,-190,46.96'), 'bbox west must be between -180 and 180 degrees'),
    (('--layer', 'ride/hot', '--bbox', BBOX, '--zooms', '13-19'), "zooms '13-19': z must be between 0 and 18"),
    (('--layer', 'ride/hot', '--bbox', BBOX, '--zooms', '13-17', '--max-zoom', '16'), 'between 0 and 16, not 17'),
    (('--layer', 'ride/hot', '--track', 'empty.gpx', '--corridor-km', '2'), 'empty.gpx is empty: give a GPX'),
    (('--layer', 'ride/hot', '--track', 'missing.gpx', '--corridor-km', '2'), 'cannot read --track '),
    (('--layer', 'ride/hot', '--track', 'ride.geojson'), 'a track needs a corridor: how many km either side'),
    (('--layer', 'ride/hot', '--track', 'ride.geojson', '--corridor-km', '-2'), 'corridor must be more than 0'),
    (('--layer', 'ride/hot', '--bbox', BBOX, '--format', 'osmand'), 'bern.mbtiles is named for mbtiles, not osmand'),
    (('--layer', 'ride/hot', '--bbox', BBOX, '--out', 'bern.db'), 'name the file .mbtiles or .sqlitedb, or give'),
    (('--layer', 'ride/hot', '--bbox', BBOX, '--pack-max-tiles', '5'),
     'the pack would hold more than 6 tiles, more than the 5 allowed (--pack-max-tiles): choose a narrower corridor'),
])
def test_pack_command_refuses_bad_input_in_one_line_before_fetching(strava, data_dir, tmp_path, monkeypatch, capsys,
                                                                   args, error):
    (tmp_path / 'empty.gpx').write_bytes(b'')
    (tmp_path / 'ride.geojson').write_text('{"type": "LineString", "coordinates": [[7.40, 46.90], [7.45, 46.93]]}')
    monkeypatch.chdir(tmp_path)
    for variable, value in redirector_env(strava, data_dir).items():
        monkeypatch.setenv(variable, value)
    argv = ['pack', '--zooms', '11-13', '--out', 'bern.mbtiles', *args]
    assert cli.main(argv, cli.Wiring(redirector.build, redirector.make_app)) == 2
    captured = capsys.readouterr()
    assert captured.err.count('\n') == 1 and error in captured.err, captured.err
    assert strava.counters['tiles'] == 0 and not (tmp_path / 'bern.mbtiles').exists()
    if '--pack-max-tiles' in args:
        assert captured.out.startswith('estimate: more than 6 tiles (z11: 2, z12: 4, z13: not counted)')
