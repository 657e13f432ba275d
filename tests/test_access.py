"""Access control: the key, the admin token, the per-client rate limit, trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
import requests

from heatmap.access import (
    RateLimiter,
    base_url,
    client_address,
    is_trusted,
    parse_networks,
    valid_host,
)
from tests.test_tiles import heat_tile, import_cookies


def test_wrong_key_gets_403_without_a_hint_on_every_keyed_route(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='correct-key')
    z, x, y = heat_tile()
    for path in (f'/tiles/all/hot/{z}/{x}/{y}.png', '/tiles/nonsense', f'/tiles/all/hot/{z}/{x}/{y}@2x.png'):
        for query in ('', '?key=correct-kez', '?key='):
            response = server.get(path + query)
            assert response.status_code == 403, path + query
            assert 'correct' not in response.text and 'kez' not in response.text
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png?key=correct-key').status_code == 200
    assert 'rejected a request with a missing or wrong key' in server.logs()
    assert 'correct-key' not in server.logs()


def test_admin_token_is_enforced_on_every_admin_route(start_redirector):
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token')
    for path in ('/admin/refresh', '/admin/cookies'):
        for headers in ({}, {'Authorization': 'Bearer admin-tokem'}, {'Authorization': 'admin-token-and-more'}):
            response = requests.post(server.url + path, headers=headers, data='x', timeout=5)
            assert response.status_code == 403 and 'admin-token' not in response.text


def test_rate_limit_answers_429_with_retry_after_and_keeps_serving_the_cache(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_RATE_LIMIT=5, HEATMAP_TRUSTED_PROXIES='127.0.0.1')
    statuses = [server.get(f'/tiles/all/hot/13/{x}/2686.png').status_code for x in range(4400, 4407)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]
    limited = server.get('/tiles/all/hot/13/4410/2686.png')
    assert limited.status_code == 429 and int(limited.headers['Retry-After']) >= 1
    assert server.get('/tiles/all/hot/13/4400/2686.png').status_code == 200, 'cached tiles are not limited'
    assert strava.counters['tiles'] == 5

    other_client = server.get('/tiles/all/hot/13/4410/2686.png', headers={'X-Forwarded-For': '203.0.113.7'})
    assert other_client.status_code == 200, 'behind a trusted proxy, each client has its own budget'


def test_forwarded_for_from_an_untrusted_peer_is_ignored(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_RATE_LIMIT=2)
    for x in (4400, 4401):
        assert server.get(f'/tiles/all/hot/13/{x}/2686.png').status_code == 200
    spoofed = server.get('/tiles/all/hot/13/4402/2686.png', headers={'X-Forwarded-For': '198.51.100.1'})
    assert spoofed.status_code == 429


def test_tiles_allow_web_maps_from_other_origins(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').headers['Access-Control-Allow-Origin'] == '*'


def test_one_ipv6_network_or_forwarded_junk_does_not_buy_fresh_budgets(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_RATE_LIMIT=2, HEATMAP_TRUSTED_PROXIES='127.0.0.1')

    def fetch(x: int, client: str) -> int:
        return server.get(f'/tiles/all/hot/13/{x}/2686.png', headers={'X-Forwarded-For': client}).status_code

    one_network = [fetch(4400 + n, f'2001:db8:7:1:{n:x}::{n + 1}') for n in range(6)]
    assert one_network == [200, 200, 429, 429, 429, 429], 'addresses of one /64 are one subscriber'
    assert fetch(4410, '2001:db8:7:2::1') == 200, 'another /64 has its own budget'
    junk = [fetch(4420 + n, f'not-an-ip-{n}') for n in range(4)]
    assert junk == [200, 200, 429, 429], 'a hop that is no address is not a client of its own'


def test_forwarded_scheme_host_or_prefix_that_is_not_one_falls_back_to_the_requests_own(start_redirector):
    server = start_redirector(HEATMAP_TRUSTED_PROXIES='127.0.0.1')
    for forwarded in ({'X-Forwarded-Proto': 'javascript'}, {'X-Forwarded-Host': 'evil.example/"><b'},
                      {'X-Forwarded-Host': 'maps.example.org:99999'}, {'X-Forwarded-Prefix': 'javascript:alert(1)'},
                      {'X-Forwarded-Prefix': '/heat?x="'}):
        page = server.get('/presets/', headers=forwarded).text
        assert f'Made for <code>{server.url}</code>' in page, forwarded
        assert 'javascript' not in page.lower() and 'evil' not in page and '99999' not in page
    proxied = server.get('/presets/', headers={'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'maps.example.org',
                                               'X-Forwarded-Prefix': '/heat'}).text
    assert 'Made for <code>https://maps.example.org/heat</code>' in proxied


def test_a_server_with_a_key_shows_its_state_to_anyone_and_its_details_only_with_a_key(start_redirector, strava,
                                                                                       tmp_path):
    accounts = tmp_path / 'accounts.txt'
    accounts.write_text('club@example.org pass word\n')
    accounts.chmod(0o600)
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='map-key', STRAVA_ACCOUNTS_FILE=accounts, HEATMAP_AUTH='local')
    brief = server.get('/healthz')
    assert brief.status_code == 200 and brief.json() == {'ok': True, 'reason': None}
    assert server.get('/healthz?key=wrong').json() == {'ok': True, 'reason': None}
    details = server.get('/healthz?key=map-key').json()
    assert details['cookies']['valid'] is True and 'accounts' in details and 'browsers' in details
    page = server.get('/').text
    assert 'The map works.' in page and 'add <code>?key=…</code>' in page
    assert 'example.org' not in page and 'id="accounts"' not in page and 'expire' not in page
    assert 'c***@example.org' in server.get('/?key=map-key').text

    strava.tile_status = 500  # still one line of why, for a monitor that has no key
    server.get('/tiles/all/hot/13/4390/2686.png?key=map-key')
    failing = server.get('/healthz')
    assert failing.status_code == 503 and set(failing.json()) == {'ok', 'reason'}
    assert failing.json()['reason'].startswith("Strava's tile server is failing (Strava answered 500")

    open_server = start_redirector(data_dir=tmp_path / 'data')  # no key: nothing to hide
    assert 'cookies' in open_server.get('/healthz').json()


# --- who is asking, the base URL and the rate limit (heatmap.access, no server) ---

TRUSTED = parse_networks('127.0.0.1, 10.1.2.3/8')


def test_a_client_without_a_trusted_proxy_or_forwarded_header_is_its_peer():
    assert parse_networks('127.0.0.1, 10.1.2.3/8') == TRUSTED, 'a network written with host bits is its network'
    assert TRUSTED == (ipaddress.ip_network('127.0.0.1'), ipaddress.ip_network('10.0.0.0/8'))
    assert client_address({}, TRUSTED) == ''
    assert client_address({'REMOTE_ADDR': '127.0.0.1'}, TRUSTED) == '127.0.0.1'
    assert client_address({'REMOTE_ADDR': '10.9.9.9', 'HTTP_X_FORWARDED_FOR': '203.0.113.9'}, TRUSTED) == '203.0.113.9'
    assert not is_trusted('localhost', TRUSTED) and not is_trusted('', TRUSTED)


def test_a_host_header_is_at_most_260_characters_and_its_port_at_most_65535():
    name = '.'.join(['a' * 63] * 4)  # 255 characters
    assert valid_host(name + ':1234') and not valid_host(name + ':12345') and len(name + ':12345') == 261
    assert valid_host('h:65535') and not valid_host('h:65536')
    assert valid_host('[::1]') and not valid_host('[1:2:3]:80')


def test_the_base_url_falls_back_to_the_servers_own_name_and_port_and_keeps_the_script_name():
    assert base_url({}, ()) == 'http://localhost:80'
    assert base_url({}, (), 'https://maps.example.org/heat/') == 'https://maps.example.org/heat'
    assert base_url({}, (), 'https://box/X') == 'https://box/X'
    assert base_url({'wsgi.url_scheme': 'https', 'HTTP_HOST': 'a b', 'SERVER_NAME': 'box', 'SERVER_PORT': '8443',
                     'SCRIPT_NAME': '/OSMX/'}, ()) == 'https://box:8443/OSMX'


def test_a_trusted_proxy_forwards_the_first_of_several_values_and_only_what_is_valid():
    own = {'wsgi.url_scheme': 'https', 'HTTP_HOST': 'box', 'SCRIPT_NAME': '/app', 'REMOTE_ADDR': '127.0.0.1'}
    assert base_url(own, TRUSTED) == 'https://box/app'
    assert base_url({**own, 'HTTP_X_FORWARDED_PROTO': 'http,https', 'HTTP_X_FORWARDED_HOST': 'a.org,b.org'},
                    TRUSTED) == 'http://a.org/app'
    assert base_url({**own, 'HTTP_X_FORWARDED_HOST': 'a/"><b'}, TRUSTED) == 'https://box/app'


def test_a_client_has_its_budget_per_minute_refilled_evenly_and_a_refusal_costs_nothing():
    limiter = RateLimiter(per_minute=60)
    assert [limiter.wait_needed('a', now=0) for _ in range(60)] == [0] * 60
    assert [limiter.wait_needed('a', now=0) for _ in range(3)] == [1.0] * 3
    assert limiter.wait_needed('a', now=0.25) == pytest.approx(0.75)
    assert [limiter.wait_needed('a', now=30) for _ in range(30)] == [0] * 30
    assert limiter.wait_needed('a', now=30) > 0
    assert limiter.wait_needed('b') == 0  # now is the monotonic clock's
    twice = RateLimiter(per_minute=120)
    assert [twice.wait_needed('a', now=0) for _ in range(121)][-1] == 0.5
    assert twice.wait_needed('a', now=0.25) == pytest.approx(0.25)


def test_a_limit_of_zero_lets_everyone_through():
    assert RateLimiter(per_minute=0).wait_needed('a') == 0
