"""The cookie store on disk: atomic writes, mode 0600, corrupt files moved aside."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

from heatmap.store import CookieStore
from tests.conftest import ROOT, cookie_export, redirector_env, run_cli

NAMES = ['_strava4_session', 'CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature', '_strava_idcf',
         '_strava_CloudFront-Expires']
WRITER = f'''
import itertools, sys
sys.path.insert(0, {str(ROOT)!r})
from heatmap.store import CookieStore
store = CookieStore(sys.argv[1])
print('ready', flush=True)
for generation in itertools.count():
    store.save_cookies([{{'name': n, 'value': f'{{n}}-{{generation}}-' + 'x' * 2000}} for n in {NAMES!r}], 'test')
'''


def test_kill_9_during_writes_always_leaves_a_complete_set(tmp_path):
    data_dir = tmp_path / 'data'
    generations = set()
    for _ in range(30):
        writer = subprocess.Popen([sys.executable, '-c', WRITER, str(data_dir)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == 'ready'
        time.sleep(random.uniform(0.01, 0.15))
        writer.send_signal(signal.SIGKILL)
        writer.wait()

        cookies = CookieStore(data_dir).state.cookies
        assert [c['name'] for c in cookies] == NAMES
        generation = {c['value'].split('-')[-2] for c in cookies}
        assert len(generation) == 1, 'cookies from two different writes'
        generations |= generation
    assert len(generations) > 5, 'the writer must have been killed at many different points'
    assert not list(data_dir.glob('.*.tmp')), 'leftover temporary files are cleaned up on open'


def test_store_file_and_directory_are_private(strava, tmp_path):
    data_dir = tmp_path / 'data'
    done = run_cli('import-cookies', '-', env=redirector_env(strava, data_dir), stdin=cookie_export(strava))
    assert done.returncode == 0
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data_dir / 'cookies.json').st_mode) == 0o600


def test_corrupt_cookies_json_is_moved_aside_and_the_server_starts(start_redirector, tmp_path):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    (data_dir / 'cookies.json').write_text('{"state": {"1": {"cookies": [{"name": "_strava4_sess')
    server = start_redirector(data_dir=data_dir)

    assert server.health()['cookies']['valid'] is False
    aside = list(data_dir.glob('cookies.json.corrupt-*'))
    assert len(aside) == 1 and 'strava4_sess' in aside[0].read_text(), 'the damaged file is kept for the user'
    assert 'moved it aside' in server.logs()
    assert server.get('/tiles/all/hot/13/4400/2686.png').status_code == 503


def test_cookies_imported_while_the_server_runs_are_picked_up(start_redirector, strava, tmp_path):
    server = start_redirector()
    assert server.get('/tiles/all/hot/13/4401/2686.png').status_code == 503
    done = run_cli('import-cookies', '-', env=redirector_env(strava, server.data_dir), stdin=cookie_export(strava))
    assert done.returncode == 0
    server.wait_until(lambda: server.health()['cookies']['valid'], timeout=15)
    assert server.get('/tiles/all/hot/13/4401/2686.png').status_code == 200


def test_store_keeps_the_last_error_across_restarts(tmp_path):
    store = CookieStore(tmp_path)
    store.record_failure('bad_credentials: wrong password', 'bad_credentials', None)
    reopened = CookieStore(tmp_path).state
    assert reopened.last_error == 'bad_credentials: wrong password'
    assert reopened.failures == 1
    assert json.loads((tmp_path / 'cookies.json').read_text())['state']['1']['last_error_reason'] == 'bad_credentials'
