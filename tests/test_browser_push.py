"""Cookies pushed by the user's own browser, and imports after Strava refused the stored cookies."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import redirector_env, run_cli
from tests.test_tiles import heat_tile, import_cookies

ADMIN = 'admin-token'


def refused_and_session_ended(server, strava, revoked) -> dict:
    """Strava ends the session and revokes the tile cookies; the server finds out on the next tile.

    Returns the tile cookies the user's browser still holds from before: time-valid, but refused now.
    """
    held = strava.tile_cookies()
    revoked()
    strava.end_all_sessions()
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 503
    server.wait_until(lambda: 'session has expired' in (server.health()['reason'] or ''), timeout=20)
    return held


@pytest.mark.parametrize('way', ['import-cookies', 'admin'])
def test_an_import_after_strava_refused_the_cookies_brings_tiles_back_at_once(way, start_redirector, strava, tmp_path,
                                                                              revoked):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ADMIN_TOKEN=ADMIN)
    held = refused_and_session_ended(server, strava, revoked)
    # The user logs in again in the browser, which still holds yesterday's (now refused) tile cookies.
    export = strava.cookie_export(tiles=held)

    if way == 'import-cookies':
        done = run_cli('import-cookies', '-', env=redirector_env(strava, server.data_dir), stdin=export)
        assert done.returncode == 0, done.stderr
    else:
        answer = requests.post(server.url + '/admin/cookies', data=export, timeout=10,
                               headers={'Authorization': f'Bearer {ADMIN}'})
        assert answer.status_code == 200, answer.text
    imported = time.monotonic()

    z, x, y = heat_tile(start=4450)
    server.wait_until(lambda: server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200, timeout=30)
    assert time.monotonic() - imported < 10, 'not after the minute of rejection cool-down'
    assert server.health()['ok'] and server.health()['cookies']['source'] == 'session'
