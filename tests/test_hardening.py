"""Hostile and heavy use on a real server: oversized bodies, connection floods, racing writers, crowds on one
tile, what the logs say about whom."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import requests

from heatmap.server import too_large
from tests.conftest import REFRESH_POLL, WATCH, cookie_export, redirector_env, run_cli, stays
from tests.test_tiles import heat_tile, import_cookies


def raw_socket(server, source: str = '127.0.0.1') -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((parts.hostname, parts.port))
    return sock


def is_closed_by_server(sock: socket.socket, wait: float = 0.2) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b''
    except (socket.timeout, BlockingIOError):
        return False
    except OSError:
        return True


def answer_before_a_reset(sock: socket.socket) -> str:
    """What the server sent before it closed, or reset for the bytes it left unread."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b''.join(chunks).decode()


def test_oversized_bodies_are_refused_at_once_without_filling_the_disk(start_redirector, tmp_path):
    spool = tmp_path / 'spool'
    spool.mkdir()
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token', TMPDIR=spool)
    for headers in (b'Content-Length: 300000000\r\n', b'Transfer-Encoding: chunked\r\n'):
        sock = raw_socket(server)
        sock.settimeout(30)  # a server that neither reads nor answers fails the test here
        sock.sendall(b'POST /admin/cookies HTTP/1.1\r\nHost: x\r\n' + headers + b'\r\n')
        sent = 0
        try:
            while not select.select([sock], [], [], 0.05)[0] and sent < 2 ** 22:  # until it answers, or 4 MB
                sent += sock.send(b'10000\r\n' + bytes(65536) + b'\r\n' if b'chunked' in headers else bytes(65536))
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed between the look and the send: the answer is read next
        answer = answer_before_a_reset(sock)
        sock.close()
        assert answer.startswith('HTTP/1.1 413 '), (headers, answer[:200])
        assert '\r\nAccess-Control-Allow-Origin: *\r\n' in answer, "the extension's push can read why"
        assert answer.split('\r\n\r\n', 1)[1].strip() == too_large(upload=False), answer
        assert sent <= 2 ** 21, f'{sent} bytes sent before the answer: the server read far past its 1 MiB limit'
        assert sum(p.stat().st_size for p in spool.rglob('*') if p.is_file()) < 2 ** 21
    assert server.get('/livez').ok


def test_a_flood_of_half_sent_requests_from_one_address_leaves_room_for_everyone_else(start_redirector, strava,
                                                                                     tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='map-key')
    flood = []
    try:
        for _ in range(510):
            try:
                sock = raw_socket(server, '127.0.0.2')
                sock.sendall(b'GET /healthz HTTP/1.1\r\nHost: x\r\n')  # never finished
                flood.append(sock)
            except OSError:
                pass  # refused at once: fine
        for path in ('/healthz', '/tiles/all/hot/13/4401/2686.png?key=map-key'):
            assert server.get(path, timeout=30).status_code == 200
        held = [sock for sock in flood if not is_closed_by_server(sock, wait=0)]
        assert held, 'the others were answered while the flood still held its connections, not after they timed out'
        assert len(held) <= 32, 'one address holds at most 32 connections'

        dribblers = [raw_socket(server, '127.0.0.3') for _ in range(5)]
        for sock in dribblers:
            sock.sendall(b'GET /healthz HTTP/1.1\r\n')
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(is_closed_by_server(s) for s in dribblers):
            for sock in dribblers:
                try:
                    sock.sendall(b'X-Slow: 1\r\n')  # one header line a second: never the end of the head
                except OSError:
                    pass
            time.sleep(1)
        assert all(is_closed_by_server(sock) for sock in dribblers), 'a head must arrive within its deadline'
        assert 'refused connections from 127.0.0.2' in server.logs()
    finally:
        for sock in flood:
            sock.close()


def test_an_import_during_a_refresh_is_kept_whether_the_refresh_succeeds_or_fails(start_redirector, strava,
                                                                                  tmp_path):
    for refresh_fails in (False, True):
        data_dir = tmp_path / f'data-{refresh_fails}'
        import_cookies(strava, data_dir, lifetime=-60)
        if refresh_fails:
            strava.end_all_sessions()
        strava.maps_gate = threading.Event()  # the refresh waits at Strava until the import is done
        server = start_redirector(data_dir=data_dir, HEATMAP_UPSTREAM_TIMEOUT=120)
        server.wait_until(lambda: server.health()['refreshing'] and strava.counters['maps'], timeout=30)
        export = cookie_export(strava, 7200)
        done = run_cli('import-cookies', '-', env=redirector_env(strava, data_dir), stdin=export)
        strava.maps_gate.set()
        assert done.returncode == 0, done.stderr
        server.wait_until(lambda: not server.health()['refreshing'], timeout=30)

        stored = json.loads((data_dir / 'cookies.json').read_text())['state']['1']
        imported = {c['name']: c['value'] for c in json.loads(export)}
        assert stored['source'] == 'import'
        assert {c['name']: c['value'] for c in stored['cookies']}['_strava4_session'] == imported['_strava4_session']
        assert stored['last_error'] is None and stored['failures'] == 0, 'a failed refresh does not taint the import'
        server.wait_until(lambda: server.health()['ok'], timeout=10)
        server.stop()


def test_command_line_imports_beside_admin_imports_never_break_a_write(start_redirector, strava, tmp_path):
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token')
    env = redirector_env(strava, server.data_dir)

    def admin_import(_):
        return requests.post(server.url + '/admin/cookies?force=1', data=cookie_export(strava), timeout=30,
                             headers={'Authorization': 'Bearer admin-token'}).status_code

    def cli(_):
        return run_cli('import-cookies', '-', '--force', env=env, stdin=cookie_export(strava)).returncode

    with ThreadPoolExecutor(8) as pool:
        posts = pool.map(admin_import, range(40))
        runs = pool.map(cli, range(16))
        statuses, codes = list(posts), list(runs)
    assert statuses == [200] * 40
    assert codes == [0] * 16
    json.loads((server.data_dir / 'cookies.json').read_text())
    assert not list(server.data_dir.glob('.cookies.json.*.tmp'))
    assert server.health()['ok']


def test_a_crowd_on_one_slow_tile_leaves_threads_for_healthz_and_cached_tiles(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_THREADS=8)
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200  # cached
    strava.tile_latency = 5  # the crowd's one fetch is held upstream this long
    strava.counters.clear()
    parts = urlsplit(server.url)
    crowd = [http.client.HTTPConnection(parts.hostname, parts.port, timeout=30) for _ in range(20)]
    for connection in crowd:
        connection.request('GET', f'/tiles/all/hot/{z}/{x + 3}/{y}.png')  # all sent before the others ask
    server.wait_until(lambda: strava.counters['tiles'], timeout=30, interval=0.05)
    for path in ('/healthz', f'/tiles/all/hot/{z}/{x}/{y}.png'):
        assert server.get(path, timeout=30).status_code == 200
        assert strava.counters['tiles_ok'] == 0, f'{path} was answered only once the crowd had its tile'
    answers = [connection.getresponse() for connection in crowd]
    for connection in crowd:
        connection.close()
    assert strava.counters['tiles'] == 1
    ok = [a for a in answers if a.status == 200]
    busy = [a for a in answers if a.status == 503]
    assert len(ok) + len(busy) == 20 and 1 <= len(ok) <= 5
    assert all(a.getheader('Retry-After') == '1' for a in busy)


def test_log_lines_name_the_address_the_rate_limit_uses_and_never_a_secret(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='map-key', HEATMAP_ADMIN_TOKEN='admin-token',
                              HEATMAP_LOG_LEVEL='DEBUG')
    spoofed = {'X-Forwarded-For': '203.0.113.66'}
    assert server.get('/tiles/all/hot/13/4401/2686.png?key=wrong-key', headers=spoofed).status_code == 403
    assert requests.post(server.url + '/admin/refresh', headers={'Authorization': 'Bearer wrong-token', **spoofed},
                         timeout=5).status_code == 403
    logs = server.logs()
    assert 'rejected a request with a missing or wrong key from 127.0.0.1' in logs
    assert 'rejected an admin request with a missing or wrong token from 127.0.0.1' in logs
    assert '203.0.113.66' not in logs
    assert 'wrong-key' not in logs and 'wrong-token' not in logs and 'map-key' not in logs


def test_debug_log_shows_one_line_a_tile_and_no_signed_url(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    proxy = start_redirector(HEATMAP_LOG_LEVEL='DEBUG')
    for x in range(4401, 4406):
        strava.tile_max_age = 2 if x == 4403 else 3600  # Strava lets 4403 alone go stale at once
        assert proxy.get(f'/tiles/all/hot/13/{x}/2686.png').status_code == 200
    stale_from = time.monotonic() + 2
    assert proxy.get('/tiles/all/hot/13/4401/2686.png').status_code == 200
    assert proxy.get('/tiles/all/hot/17/70416/42976.png').status_code == 200
    debug = [line.split(' DEBUG ', 1)[1] for line in proxy.logs().splitlines() if ' DEBUG ' in line]
    assert debug == [*(f'tile /tiles/all/hot/13/{x}/2686.png for 127.0.0.1 (anyone): 200 strava'
                       for x in range(4401, 4406)),
                     'tile /tiles/all/hot/13/4401/2686.png for 127.0.0.1 (anyone): 200 memory',
                     'tile /tiles/all/hot/17/70416/42976.png for 127.0.0.1 (anyone): 200 overzoom'], debug
    proxy.stop()
    again = start_redirector(HEATMAP_LOG_LEVEL='DEBUG')  # the memory is new, the disk is not
    assert again.get('/tiles/all/hot/13/4402/2686.png').status_code == 200
    strava.tile_status = 503
    time.sleep(max(0.0, stale_from - time.monotonic()))  # 4403's copy is no longer fresh: a failing Strava leaves it
    assert again.get('/tiles/all/hot/13/4403/2686.png').status_code == 200
    assert again.get('/tiles/all/hot/13/4390/2686.png?px=256').status_code == 502
    strava.tile_status = None
    lines = [line.split(' DEBUG ', 1)[1] for line in again.logs().splitlines() if ' DEBUG ' in line]
    assert lines == ['tile /tiles/all/hot/13/4402/2686.png for 127.0.0.1 (anyone): 200 disk',
                     'tile /tiles/all/hot/13/4403/2686.png for 127.0.0.1 (anyone): 200 stale',
                     'tile /tiles/all/hot/13/4390/2686.png for 127.0.0.1 (anyone): 502 Strava answered 503'], lines

    strava.policy_scope = 'legacy'
    import_cookies(strava, tmp_path / 'legacy', lifetime=-60)  # expired: the refresh checks new ones on a signed URL
    redirect = start_redirector(data_dir=tmp_path / 'legacy', HEATMAP_LOG_LEVEL='DEBUG', HEATMAP_MODE='redirect',
                                STRAVA_TILE_URL=strava.url + '/tiles-auth/{activity}/{color}/{z}/{x}/{y}{suffix}.png')
    redirect.wait_until(lambda: redirect.health()['ok'], timeout=20)
    assert redirect.get('/tiles/all/hot/13/4401/2686.png').status_code == 302
    assert strava.counters['legacy_tiles'] >= 1
    assert 'Signature' not in redirect.logs() and 'Policy=' not in redirect.logs()


def test_an_access_key_that_is_not_ascii_works(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='schlüssel-ñ')
    assert server.get('/tiles/all/hot/13/4401/2686.png?key=' + quote('schlüssel-ñ')).status_code == 200
    assert server.get('/tiles/all/hot/13/4401/2686.png?key=schl%FCssel-%F1').status_code == 403


def test_a_second_admin_refresh_during_a_refresh_runs_after_it(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token', HEATMAP_REFRESH_POLL=REFRESH_POLL)
    strava.maps_latency = 1.5
    strava.counters.clear()
    headers = {'Authorization': 'Bearer admin-token'}
    assert requests.post(server.url + '/admin/refresh', headers=headers, timeout=5).status_code == 202
    server.wait_until(lambda: server.health()['refreshing'], timeout=10, interval=0.05)
    second = requests.post(server.url + '/admin/refresh', headers=headers, timeout=5)
    assert second.status_code == 202 and 'after the one running now' in second.text
    server.wait_until(lambda: strava.counters['maps_ok'] == 2, timeout=15)
    stays(lambda: strava.counters['maps_ok'], 2, what='the refreshes')  # two asked for, two made
    strava.maps_latency = 0
    assert requests.post(server.url + '/admin/refresh', headers=headers, timeout=5).status_code == 202
    server.wait_until(lambda: strava.counters['maps_ok'] == 3, timeout=WATCH)  # the watch would have seen a third
