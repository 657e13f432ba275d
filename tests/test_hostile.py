"""Hostile input and faults: fuzzed requests, slow clients. Bounded in time, run in CI."""

from __future__ import annotations

import http.client
import json
import os
import socket
from urllib.parse import quote, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import redirector_env, run_cli
from tests.test_hardening import is_closed_by_server
from tests.test_tiles import import_cookies

SENTINEL = 'sentinel-outside-the-cache-8c1f'
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

valid_activity = st.sampled_from(['all', 'ride', 'run', 'water', 'winter', 'sport_GravelRide'])
valid_color = st.sampled_from(['hot', 'blue', 'purple', 'gray', 'bluered', 'orange', 'mobileblue'])
junk = st.one_of(
    st.sampled_from(['..', '.', '%2e%2e', '..%2f..%2fsecret.txt', '%2f', '%00', '-1', '1e3', '0x10', ' 1',
                     '99999999999999999999', '1' * 400, '٣', '%', '%zz', 'secret.txt', '@2x', '%40', '..\\..']),
    st.text(min_size=0, max_size=30),
    st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
)
number = st.one_of(st.integers(min_value=0, max_value=70000).map(str), junk)
segment = {'activity': st.one_of(valid_activity, junk), 'color': st.one_of(valid_color, junk),
           'z': st.one_of(st.integers(0, 17).map(str), junk), 'x': number,
           'y': st.one_of(number, number.map(lambda y: y + '@2x'))}
query = st.dictionaries(st.sampled_from(['px', 'key', 'v', 'x']),
                        st.one_of(st.sampled_from(['256', '512', '1024', '']), st.text(max_size=40)), max_size=3)
headers = st.dictionaries(
    st.sampled_from(['If-None-Match', 'If-Modified-Since', 'Range', 'X-Forwarded-For', 'X-Forwarded-Host',
                     'X-Forwarded-Proto', 'X-Forwarded-Prefix', 'Authorization', 'Cookie', 'Accept-Encoding']),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60), max_size=4)


def raw_get(url: str, path: str, extra_headers: dict) -> tuple[int, dict, bytes]:
    """GET exactly this path (http.client does not normalise it as requests would)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest('GET', path, skip_accept_encoding=True)
        for name, value in extra_headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def tile_path(parts: dict, params: dict) -> str:
    path = '/tiles/' + '/'.join(quote(parts[name], safe="%.@") for name in ('activity', 'color', 'z', 'x', 'y'))
    path += '.png'
    if params:
        path += '?' + '&'.join(f'{quote(k)}={quote(v, safe="%")}' for k, v in params.items())
    return path


def check_answer(status: int, response_headers: dict, body: bytes, allowed_host: str | None = None) -> None:
    assert status < 500, (status, body[:200])
    assert b'Traceback' not in body and b'Critical error' not in body
    assert SENTINEL.encode() not in body, 'a file outside the cache was served'
    assert b'root:x:0:0' not in body
    if 300 <= status < 400:
        location = response_headers.get('Location', '')
        assert allowed_host and urlsplit(location).netloc == allowed_host, location


@pytest.fixture
def fuzz_server(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    (tmp_path / 'data' / 'secret.txt').write_text(SENTINEL)
    (tmp_path / 'secret.txt').write_text(SENTINEL)
    return start_redirector(HEATMAP_RATE_LIMIT=0, HEATMAP_ACCESS_KEY='', HEATMAP_TRUSTED_PROXIES='127.0.0.1')


@FUZZ
@given(parts=st.fixed_dictionaries(segment), params=query, extra=headers)
def test_fuzzed_tile_requests_never_fail_the_server(fuzz_server, parts, params, extra):
    check_answer(*raw_get(fuzz_server.url, tile_path(parts, params), extra))


@FUZZ
@given(path=st.one_of(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80).map(lambda p: '/' + p),
    st.sampled_from(['/tiles/../secret.txt', '/tiles/%2e%2e/%2e%2e/secret.txt', '/presets/../../secret.txt',
                     '/presets/%2e%2e%2fsecret.txt', '/static/leaflet/../../../../../etc/passwd',
                     '/static/leaflet/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/tiles/all/hot/1/1/1.png/../../x',
                     '//etc/passwd', '/healthz?' + 'a' * 5000])),
       extra=headers)
def test_fuzzed_paths_never_fail_or_leave_their_directories(fuzz_server, path, extra):
    check_answer(*raw_get(fuzz_server.url, quote(path, safe="/%?=&.@:~!$'()*+,;-_"), extra))


@pytest.fixture
def redirect_server(start_redirector, strava, tmp_path):
    strava.policy_scope = 'legacy'  # an upstream that still accepts query-signed URLs
    import_cookies(strava, tmp_path / 'data')
    return start_redirector(
        HEATMAP_MODE='redirect', HEATMAP_TRUSTED_PROXIES='127.0.0.1',
        STRAVA_TILE_URL=strava.url + '/tiles-auth/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256',
        STRAVA_PUBLIC_TILE_URL=strava.url + '/tiles/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256')


@FUZZ
@given(parts=st.fixed_dictionaries(segment), params=query, extra=headers)
def test_redirects_only_ever_go_to_the_configured_upstream(redirect_server, strava, parts, params, extra):
    status, response_headers, body = raw_get(redirect_server.url, tile_path(parts, params), extra)
    check_answer(status, response_headers, body, allowed_host=f'{strava.host}:{strava.port}')


def test_slow_clients_do_not_stop_others_from_getting_tiles(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    slow = []
    try:
        for _ in range(150):  # more than waitress's default connection limit of 100
            sock = socket.create_connection((host, port))
            sock.sendall(b'GET /tiles/all/hot/13/4400/2686.png HTTP/1.1\r\nHost: x\r\n')  # never finished
            slow.append(sock)
        for x in range(4400, 4405):
            assert server.get(f'/tiles/all/hot/13/{x}/2686.png', timeout=30).status_code == 200
        assert not any(is_closed_by_server(sock, wait=0) for sock in slow), \
            'the tiles were served while the slow clients still held their connections, not after they timed out'
        for sock in slow[:50]:
            sock.sendall(b'X-Slow: 1\r\n')  # still dribbling
        assert server.get('/healthz', timeout=10).ok
    finally:
        for sock in slow:
            sock.close()


ODD_BODIES = {
    'nested': b'[' * 100_000 + b']' * 100_000,
    'junk': os.urandom(700_000),
    'not_utf8': b'\xff\xfe' * 1000,
    'empty': b'',
    'huge_string': b'["' + b'x' * 900_000 + b'"]',
    'many_cookies': json.dumps([{'name': f'c{i}', 'value': 'v', 'domain': '.strava.com'}
                                for i in range(15_000)]).encode(),
}


@pytest.mark.parametrize('body', ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_an_odd_body_on_any_route_that_takes_one_is_a_one_line_4xx(start_redirector, strava, tmp_path, body):
    import_cookies(strava, tmp_path / 'data')
    done = run_cli('pair', 'laptop', env=redirector_env(strava, tmp_path / 'data'))
    token = done.stdout.splitlines()[-1]
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token')
    admin = {'Authorization': 'Bearer admin-token'}
    for path, headers in (('/admin/cookies', admin), ('/browser/cookies', {'Authorization': f'Bearer {token}'}),
                          ('/admin/browsers', admin), ('/admin/keys', admin), ('/packs/estimate', {}),
                          ('/packs/', {}),
                          ('/packs/estimate', {'Content-Type': 'multipart/form-data; boundary=x'})):
        answer = requests.post(server.url + path, data=body, headers=headers, timeout=30)
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:200])
        assert answer.text.count('\n') == 1 and 'Traceback' not in answer.text, (path, answer.text[:200])
    assert server.get('/livez').status_code == 200 and 'Traceback' not in server.logs()
    assert server.health()['cookies']['valid'], 'the cookies are as they were'
