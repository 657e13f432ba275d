"""The server against Strava as others observed it in 2025–2026: the bare /maps refresh with the remember
cookies, a busy Strava that is not a dead session, redirect mode under today's cookie policy, the layers."""

from __future__ import annotations

import pytest

from heatmap.settings import SETTINGS
from heatmap.upstream import REDIRECT_REFUSED
from tests.conftest import PASSWORD, redirector_env, run_cli
from tests.test_tiles import heat_tile, import_cookies, png_label


def test_tile_cookies_are_renewed_from_bare_maps_with_the_remember_cookies(start_redirector, strava, tmp_path):
    assert dict((variable, default) for variable, default, *_ in SETTINGS)['STRAVA_MAPS_URL'] == \
        'https://www.strava.com/maps'
    import_cookies(strava, tmp_path / 'data', lifetime=-60)
    server = start_redirector(STRAVA_MAPS_URL=strava.url + '/maps')
    server.wait_until(lambda: server.health()['ok'], timeout=20)
    assert strava.counters['maps_ok'] == 1 and strava.counters['maps_with_remember'] == 1
    stored = {c['name'] for c in __import__('json').loads((tmp_path / 'data' / 'cookies.json').read_text())
              ['state']['1']['cookies']}
    assert {'strava_remember_id', 'strava_remember_token', '_strava4_session'} <= stored


@pytest.mark.parametrize('status', [429, 503])
def test_a_busy_strava_is_not_a_dead_session(start_redirector, strava, apify, tmp_path, status):
    import_cookies(strava, tmp_path / 'data', lifetime=-60)
    strava.maps_status = status
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD,
                              HEATMAP_BACKOFF_MIN=2)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=20)
    assert f'Strava answered {status}' in error and 'nothing is needed from you' in error
    assert apify.counters['runs'] == 0, 'a busy Strava gets no login on top'
    page = server.get('/').text
    assert 'nothing is needed from you' in page and 'Automatic logins are paused' not in page

    strava.maps_status = None
    server.wait_until(lambda: server.health()['ok'], timeout=20)
    assert apify.counters['runs'] == 0 and server.health()['cookies']['source'] == 'session'


def test_redirect_mode_under_todays_policy_says_to_use_proxy_everywhere(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')  # today's policy: content-*.strava.com/identified/* only
    legacy = strava.url + '/tiles-auth/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'
    server = start_redirector(HEATMAP_MODE='redirect', STRAVA_TILE_URL=legacy)
    z, x, y = heat_tile()

    tile = server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    assert tile.status_code == 503 and REDIRECT_REFUSED in tile.text
    assert 'Location' not in tile.headers
    healthz = server.get('/healthz')
    assert healthz.status_code == 503 and REDIRECT_REFUSED in healthz.json()['reason']
    assert REDIRECT_REFUSED in server.get('/').text.replace('&#039;', "'")
    doctor = run_cli('doctor', env=redirector_env(strava, tmp_path / 'data', HEATMAP_MODE='redirect',
                                                   STRAVA_TILE_URL=legacy))
    assert f'FAIL  one tile loads: {REDIRECT_REFUSED}' in doctor.stdout
    assert strava.counters['legacy_tiles'] == 2, 'checked once by the server for this cookie set, once by doctor'


def test_grayscale_is_a_color_and_an_unknown_sport_is_a_400_naming_it(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    z, x, y = heat_tile()
    gray = server.get(f'/tiles/all/grayscale/{z}/{x}/{y}.png')
    assert gray.status_code == 200 and png_label(gray.content).startswith('all/grayscale/')
    assert server.get(f'/tiles/sport_GravelRide/hot/{z}/{x}/{y}.png').status_code == 200

    for _ in range(2):
        unknown = server.get(f'/tiles/sport_Quidditch/hot/{z}/{x}/{y}.png')
        assert unknown.status_code == 400 and "'sport_Quidditch'" in unknown.text
    assert strava.counters['tiles'] == 4, 'the refusal is not cached as a blank tile'
    assert not [p for p in (tmp_path / 'data' / 'tiles').rglob('*') if 'Quidditch' in p.name]
