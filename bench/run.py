"""Benchmarks: the redirector against the fake Strava, next to the true limit of its WSGI server.

    .venv/bin/python bench/run.py [--seconds 3] [--rounds 3] [--latency 0.025] [--tile-kb 20] [--members 30]
                                  [--servers waitress,cheroot,gunicorn] [--bare-python PYTHON]

The limit is a bare Bottle handler that returns the same PNG bytes from memory, on the same waitress with the
same thread count. Cache hits are measured at 1, 16 and 64 keep-alive clients, interleaved with the bare handler
round by round so that both see the same machine; each ratio is the median of the rounds' ratios. The server has
``--members`` member keys (a club), and the hits go round them, every tile with every key (``--members 0``: a
server that needs no key). The load
comes from one client process that drives every connection from a single thread (a selector loop over raw
sockets): it costs a fraction of what the servers do, so the servers, not the client, are measured.

Then: the extra latency of a cache miss over fetching the same fake directly (1 client, interleaved; beside it a
bare proxy, a Bottle handler that fetches with urllib3 on the same waitress: the floor of this stack), upstream
requests per tile, resident memory after 10,000 distinct tiles, start to first tile, tiles while the cookies are
renewed, and the actor's login. ``--servers`` also measures the bare handler on other pure-Python servers
(``--bare-python`` names an interpreter that has them, if this one does not).

The fake's tiles are tiny (2 kB): here they carry an extra PNG chunk so that they weigh what a busy 512 px
heatmap tile does (``--tile-kb``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tests.fake_strava as fake_strava  # noqa: E402
from tests.conftest import cookie_export, find_chromium, free_port, redirector_env  # noqa: E402
from tests.fake_strava import FakeStrava  # noqa: E402

THREADS = 16  # the server's default (HEATMAP_THREADS), given to the bare handler too
CLIENT_COUNTS = (1, 16, 64)
BARE_APP = '''
import logging, sys, bottle
from pathlib import Path
logging.getLogger('waitress').setLevel(logging.ERROR)
server, port, threads, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
TILES = {line.split(' ')[0]: (folder / line.split(' ')[1]).read_bytes()
         for line in (folder / 'paths.txt').read_text().splitlines()}
app = bottle.Bottle()
@app.get('/tiles/<rest:path>')
def tile(rest):
    bottle.response.content_type = 'image/png'
    bottle.response.set_header('Cache-Control', 'public, max-age=86400')
    return TILES[bottle.request.path]
if server == 'waitress':
    import waitress
    waitress.serve(app, host='127.0.0.1', port=port, threads=threads, _quiet=True)
elif server == 'cheroot':
    from cheroot import wsgi
    wsgi.Server(('127.0.0.1', port), app, numthreads=threads).safe_start()
elif server == 'gunicorn':
    from gunicorn.app.base import BaseApplication
    class Bare(BaseApplication):
        def load_config(self):
            for key, value in {'bind': f'127.0.0.1:{port}', 'worker_class': 'gthread', 'workers': 1,
                               'threads': threads, 'loglevel': 'error', 'keepalive': 60}.items():
                self.cfg.set(key, value)
        def load(self):
            return app
    Bare().run()
'''
BARE_PROXY = '''
import logging, sys, bottle, urllib3, waitress
logging.getLogger('waitress').setLevel(logging.ERROR)
port, threads, upstream, cookie = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
http = urllib3.PoolManager(maxsize=2 * threads)
app = bottle.Bottle()
@app.get('/tiles/<activity>/<color>/<z>/<x>/<y>.png')
def tile(activity, color, z, x, y):
    fetched = http.request('GET', f'{upstream}/identified/globalheat/{activity}/{color}/{z}/{x}/{y}.png?v=19',
                           headers={'Cookie': cookie}, retries=False, redirect=False)
    bottle.response.content_type = 'image/png'
    return fetched.data
waitress.serve(app, host='127.0.0.1', port=port, threads=threads, _quiet=True)
'''


def heavy_tile_png(kilobytes: int):
    """The fake's ``tile_png`` with an ancillary chunk of incompressible bytes, so tiles weigh ``kilobytes``."""
    light = fake_strava.tile_png

    def tile_png(size: int, color: str, label: str) -> bytes:
        png = light(size, color, label)
        filler = os.urandom(max(0, kilobytes * 1024 - len(png) - 12))
        chunk = struct.pack('>I', len(filler)) + b'heAt' + filler + struct.pack('>I', zlib.crc32(b'heAt' + filler))
        return png[:-12] + chunk + png[-12:]  # before IEND
    return tile_png


# -- load ------------------------------------------------------------------------------------------------------

class Connection:
    """One keep-alive client connection of the load loop: its socket, what it has read, when it asked."""

    def __init__(self, port: int):
        self.port = port
        self.connect()

    def connect(self) -> None:
        self.socket = socket.create_connection(('127.0.0.1', self.port))
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.setblocking(False)
        self.buffer, self.needed, self.status, self.asked = bytearray(), None, 0, 0.0

    def ask(self, request: bytes) -> None:
        """Send ``request``; on a connection the server has closed, on a new one."""
        self.buffer, self.needed, self.asked = bytearray(), None, time.perf_counter()
        try:
            self.socket.sendall(request)
        except OSError:
            self.socket.close()
            self.connect()
            self.asked = time.perf_counter()
            self.socket.sendall(request)

    def read(self) -> bool:
        """Read what arrived; True when the whole response is in, or the peer closed or reset (``status`` 0)."""
        try:
            data = self.socket.recv(1 << 18)
        except OSError:
            data = b''
        if not data:
            self.status = 0
            return True
        self.buffer += data
        if self.needed is None:
            end = self.buffer.find(b'\r\n\r\n')
            if end < 0:
                return False
            head = bytes(self.buffer[:end]).decode('latin-1').lower()
            self.status = int(head[9:12])
            length = head.partition('content-length:')[2].partition('\r\n')[0].strip()
            self.needed = end + 4 + int(length or 0)
        return len(self.buffer) >= self.needed


def drive(port: int, paths: list[str], clients: int, seconds: float, results) -> None:
    """Closed-loop load: ``clients`` keep-alive connections, each asking for the next path as soon as it has its
    answer; put (answers/s, failures, latencies in ms) into ``results``. Client i asks for paths[i::clients]."""
    requests = [f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.encode() for path in paths]
    selector = selectors.DefaultSelector()
    connections = [Connection(port) for _ in range(clients)]
    turns = [0] * clients
    latencies, failures, done = [], 0, 0
    warm_until = time.perf_counter() + min(0.5, seconds / 4)
    deadline = warm_until + seconds

    def next_request(index: int) -> bytes:
        turns[index] += 1
        return requests[(index + turns[index] * clients) % len(requests)]

    for index, connection in enumerate(connections):
        selector.register(connection.socket, selectors.EVENT_READ, index)
        connection.ask(next_request(index))
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        for key, _ in selector.select(deadline - now):
            index = key.data
            connection = connections[index]
            if not connection.read():
                continue
            finished = time.perf_counter()
            if finished > warm_until:
                if connection.status == 200:
                    done += 1
                    latencies.append((finished - connection.asked) * 1000)
                else:
                    failures += 1
            selector.unregister(connection.socket)
            if connection.status == 0:
                connection.socket.close()
                connection.connect()
            connection.ask(next_request(index))
            selector.register(connection.socket, selectors.EVENT_READ, index)
    for connection in connections:
        connection.socket.close()
    results.put((done / seconds, failures, latencies))


def load(port: int, paths: list[str], clients: int, seconds: float) -> dict:
    """Answers/s, failures and latency percentiles from a client in a process of its own (its own GIL)."""
    results = multiprocessing.Queue()
    process = multiprocessing.Process(target=drive, args=(port, paths, clients, seconds, results))
    process.start()
    rate, failures, latencies = results.get(timeout=seconds + 60)
    process.join()
    return {'rate': rate, 'failures': failures, 'p50': percentile(latencies, 50), 'p99': percentile(latencies, 99)}


def percentile(samples: list[float], q: int) -> float:
    """The q-th percentile (nearest rank) of ``samples``; NaN when there are none.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50), percentile([], 99)
    (3.0, nan)
    """
    if not samples:
        return float('nan')
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def latency(host: str, port: int, path: str, headers: dict | None = None) -> float:
    """Milliseconds for one GET on a new connection, as a navigator's first request for a tile."""
    connection = http.client.HTTPConnection(host, port)
    started = time.perf_counter()
    connection.request('GET', path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    connection.close()
    assert response.status in (200, 404), response.status  # the fake has no heat on some tiles
    return elapsed


def wait_up(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection('127.0.0.1', port, timeout=1).request('GET', '/healthz')
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f'nothing listens on {port}')


def rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


# -- the servers -----------------------------------------------------------------------------------------------

def start_server(strava: FakeStrava, lifetime: int | None = None, members: int = 0,
                 **settings) -> tuple[subprocess.Popen, int, Path, float, list[str]]:
    """Import the fake's cookies, give ``members`` members a key and start ``redirector.py``; its process, port,
    data dir, start to first tile and the members' keys."""
    from heatmap.keys import Keys
    data_dir = Path(tempfile.mkdtemp(prefix='heatmap-bench-'))
    env = redirector_env(strava, data_dir, HEATMAP_LOG_LEVEL='WARNING', HEATMAP_RATE_LIMIT=0, **settings)
    subprocess.run([sys.executable, 'redirector.py', 'import-cookies', '-'], cwd=ROOT, env=env, check=True,
                   input=cookie_export(strava, lifetime=lifetime), capture_output=True, text=True)
    keys = [Keys(data_dir).add(f'member-{number}')[0] for number in range(members)]
    port = free_port()
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, 'redirector.py', '--port', str(port), '--threads', str(THREADS)],
                              cwd=ROOT, env=env)
    while True:
        try:
            connection = http.client.HTTPConnection('127.0.0.1', port)
            connection.request('GET', f'/tiles/all/hot/12/2048/1361.png{keyed(keys, 0)}')
            if connection.getresponse().status == 200:
                return server, port, data_dir, time.monotonic() - started, keys
        except OSError:
            time.sleep(0.005)


def keyed(keys: list[str], number: int) -> str:
    """The query of a request with the number-th member key (round the members), or none without members.

    >>> keyed(['a', 'b'], 3), keyed([], 3)
    ('?key=b', '')
    """
    return f'?key={keys[number % len(keys)]}' if keys else ''


def start_bare(server: str, python: str, tiles: dict[str, bytes]) -> subprocess.Popen | None:
    """The bare handler on ``server``, answering each path in ``tiles`` with its bytes; None if not installed."""
    folder = Path(tempfile.mkdtemp(prefix='heatmap-bench-bare-'))
    for number, (path, body) in enumerate(tiles.items()):
        (folder / f'{number}.png').write_bytes(body)
    (folder / 'paths.txt').write_text(''.join(f'{path} {number}.png\n' for number, path in enumerate(tiles)))
    port = free_port()
    check = subprocess.run([python, '-c', f'import bottle, {server}'], capture_output=True)
    if check.returncode != 0:
        print(f'(bare handler on {server}: not installed for {python}; pip install {server})', file=sys.stderr)
        return None
    process = subprocess.Popen([python, '-c', BARE_APP, server, str(port), str(THREADS), str(folder)])
    process.port = port
    wait_up(port)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait()


# -- the figures -----------------------------------------------------------------------------------------------

def hits_against_bare(port: int, bare_port: int, hot: list[str], seconds: float, rounds: int) -> dict:
    """Per client count, each round's hit and bare figures, measured back to back in alternating order."""
    figures = {clients: {'hit': [], 'bare': []} for clients in CLIENT_COUNTS}
    for round_number in range(rounds):
        for clients in CLIENT_COUNTS:
            order = [('hit', port), ('bare', bare_port)]
            for which, target in order if round_number % 2 == 0 else reversed(order):
                figures[clients][which].append(load(target, hot, clients, seconds))
    return figures


def miss_latency(strava: FakeStrava, port: int, samples: int, keys: list[str]) -> tuple[dict[str, list[float]],
                                                                                         float]:
    """Interleaved, each on a new tile: through the server, directly from the fake with the cookies, and through
    a bare proxy (a Bottle handler fetching with urllib3 on the same waitress: the floor of this stack)."""
    cookie = '; '.join(f'{k}={v}' for k, v in strava.tile_cookies().items() if v)
    proxy_port = free_port()
    proxy = subprocess.Popen([sys.executable, '-c', BARE_PROXY, str(proxy_port), str(THREADS), strava.url, cookie])
    try:
        wait_up(proxy_port)
        before = strava.counters['tiles']
        times = {'through': [], 'direct': [], 'bare proxy': []}
        for i in range(samples):
            times['through'].append(latency('127.0.0.1', port,
                                            f'/tiles/all/hot/15/{9000 + i}/5000.png{keyed(keys, i)}'))
            times['direct'].append(latency(strava.host, strava.port,
                                           f'/identified/globalheat/all/hot/15/{20000 + i}/5000.png',
                                           {'Cookie': cookie}))
            times['bare proxy'].append(latency('127.0.0.1', proxy_port, f'/tiles/all/hot/15/{30000 + i}/5000.png'))
        return times, (strava.counters['tiles'] - before - 2 * samples) / samples
    finally:
        stop(proxy)


def rss_after_distinct_tiles(strava: FakeStrava, port: int, pid: int, tiles: int,
                             keys: list[str]) -> tuple[float, int]:
    """Resident memory after ``tiles`` distinct tiles, each asked for twice (a miss, then a hit)."""
    latency_before, strava.tile_latency = strava.tile_latency, 0
    side = int(tiles ** 0.5) + 1
    paths = [f'/tiles/all/hot/15/{10000 + n // side}/{12000 + n % side}.png{keyed(keys, n)}' for n in range(tiles)]
    try:
        failed = 0
        for _ in range(2):
            for start in range(0, tiles, 1000):
                results = multiprocessing.Queue()
                chunk = paths[start:start + 1000]
                process = multiprocessing.Process(target=fetch_all, args=(port, chunk, results))
                process.start()
                failed += results.get()
                process.join()
    finally:
        strava.tile_latency = latency_before
    return rss_mb(pid), failed


def fetch_all(port: int, paths: list[str], results) -> None:
    """Each path once, over 8 keep-alive connections; put the number of non-200 answers into ``results``."""
    from concurrent.futures import ThreadPoolExecutor

    def some(share: list[str]) -> int:
        connection, failed = http.client.HTTPConnection('127.0.0.1', port), 0
        for path in share:
            connection.request('GET', path)
            response = connection.getresponse()
            response.read()
            failed += response.status != 200
        return failed
    with ThreadPoolExecutor(8) as pool:
        results.put(sum(pool.map(some, [paths[i::8] for i in range(8)])))


def refresh_under_load(strava: FakeStrava, seconds: float) -> tuple[tuple[int, int], int]:
    """16 clients ask for new tiles while the cookies come due, are renewed and the old ones expire."""
    lifetime = 3 + max(seconds, 3) / 2  # due a second in, expired mid-load
    server, port, _, _, _ = start_server(strava, HEATMAP_REFRESH_BEFORE=2, lifetime=int(lifetime))
    try:
        before = strava.counters['maps_ok']
        paths = [f'/tiles/all/hot/15/{30000 + i}/{20000 + j}.png?px=256' for i in range(100) for j in range(100)]
        measured = load(port, paths, 16, max(seconds, 3) + 3)
        served = int(measured['rate'] * (max(seconds, 3) + 3))
        return (served, measured['failures']), strava.counters['maps_ok'] - before
    finally:
        stop(server)


def actor_login(strava: FakeStrava) -> float:
    from tests.actor_process import run_actor_process
    storage = Path(tempfile.mkdtemp(prefix='heatmap-bench-actor-')) / 'storage'
    run = run_actor_process({'email': 'rider@example.com', 'password': 'correct horse',
                             'loginUrl': strava.url + '/login', 'heatmapUrl': strava.url + '/maps/global-heatmap'},
                            storage, find_chromium())
    if run.returncode != 0:
        raise SystemExit(f'the actor failed: {run.status_message}')
    return run.seconds


def hit_rows(figures: dict) -> list[tuple[str, str, str, str]]:
    """Table rows: per client count, tiles/s and p99 beside the bare handler's (medians of the rounds)."""
    rows = []
    for clients, runs in figures.items():
        ratios = [hit['rate'] / bare['rate'] for hit, bare in zip(runs['hit'], runs['bare'])]
        p99_ratios = [hit['p99'] / bare['p99'] for hit, bare in zip(runs['hit'], runs['bare'])]
        rate = statistics.median(run['rate'] for run in runs['hit'])
        bare = statistics.median(run['rate'] for run in runs['bare'])
        failures = sum(run['failures'] for run in runs['hit'])
        who = f'{clients} client{"s" if clients > 1 else ""}'
        rows.append((f'cache-hit tiles/s, {who}', f'{rate:,.0f}',
                     f'bare {bare:,.0f}; ratio {statistics.median(ratios):.2f} '
                     f'({min(ratios):.2f}-{max(ratios):.2f}); {failures} errors', '>= 0.8, 0 errors'))
        hit_p = [statistics.median(run[q] for run in runs['hit']) for q in ('p50', 'p99')]
        bare_p = [statistics.median(run[q] for run in runs['bare']) for q in ('p50', 'p99')]
        rows.append((f'cache-hit p50 / p99, {who}', f'{hit_p[0]:.2f} / {hit_p[1]:.2f} ms',
                     f'bare {bare_p[0]:.2f} / {bare_p[1]:.2f} ms; p99 ratio {statistics.median(p99_ratios):.2f}',
                     'p99 <= 2x bare'))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=3, help='seconds of load per throughput figure')
    parser.add_argument('--rounds', type=int, default=3, help='interleaved rounds of hit and bare figures')
    parser.add_argument('--latency', type=float, default=0.025, help="the fake Strava's tile latency (s)")
    parser.add_argument('--samples', type=int, default=300, help='cache-miss latency samples')
    parser.add_argument('--tile-kb', type=int, default=20, help='what a tile weighs')
    parser.add_argument('--distinct', type=int, default=10_000, help='distinct tiles before the memory figure')
    parser.add_argument('--servers', default='waitress', help='servers to run the bare handler on, comma-separated '
                                                              '(waitress, cheroot, gunicorn)')
    parser.add_argument('--bare-python', default=sys.executable, help='the interpreter for the other servers')
    parser.add_argument('--members', type=int, default=30, help='member keys the hits go round (0: no key needed)')
    parser.add_argument('--skip-slow', action='store_true', help='leave out the refresh and the actor login')
    args = parser.parse_args()

    fake_strava.tile_png = heavy_tile_png(args.tile_kb)
    strava = FakeStrava(tile_latency=args.latency).start()
    load_average = os.getloadavg()
    server, port, data_dir, first_tile, keys = start_server(strava, members=args.members)
    try:
        idle_rss = rss_mb(server.pid)
        tiles = [f'/tiles/all/hot/13/{4400 + i}/2686.png' for i in range(60)
                 if fake_strava.has_heat(13, 4400 + i, 2686)]
        bodies = {}
        for path in tiles:  # each a miss, then a hit: what the bare handler sends is what the server sends
            latency('127.0.0.1', port, path + keyed(keys, 0))
            connection = http.client.HTTPConnection('127.0.0.1', port)
            connection.request('GET', path + keyed(keys, 0))
            bodies[path] = connection.getresponse().read()
        hot = [path + keyed(keys, member) for member in range(max(1, len(keys))) for path in tiles]
        before = strava.counters['tiles']
        others = {}
        for name in args.servers.split(','):
            bare = start_bare(name, sys.executable if name == 'waitress' else args.bare_python, bodies)
            if bare is None:
                continue
            try:
                if name == 'waitress':
                    figures = hits_against_bare(port, bare.port, hot, args.seconds, args.rounds)
                else:
                    others[name] = {clients: load(bare.port, hot, clients, args.seconds) for clients in CLIENT_COUNTS}
            finally:
                stop(bare)
        hit_upstream = strava.counters['tiles'] - before
        misses, miss_upstream = miss_latency(strava, port, args.samples, keys)
        distinct_rss, distinct_failed = rss_after_distinct_tiles(strava, port, server.pid, args.distinct, keys)
    finally:
        stop(server)
    slow = None
    try:
        if not args.skip_slow:
            slow = refresh_under_load(strava, args.seconds), actor_login(strava)
    finally:
        strava.stop()

    through, direct, floor = misses['through'], misses['direct'], misses['bare proxy']
    rows = [
        *hit_rows(figures),
        *[(f'cache-miss extra latency p{q}', f'{percentile(through, q) - percentile(direct, q):.2f} ms',
           f'through {percentile(through, q):.1f} ms, direct {percentile(direct, q):.1f} ms; the floor, a bare proxy '
           f'{percentile(floor, q):.1f} ms (+{percentile(floor, q) - percentile(direct, q):.2f})',
           f'<= floor + 0.5 = {percentile(floor, q) - percentile(direct, q) + 0.5:.2f} ms' if q == 50 else '')
          for q in (50, 99)],
        ('upstream requests per tile', f'{miss_upstream:.2f} miss / {hit_upstream} on hits', '', '1 / 0'),
        (f'resident memory after {args.distinct:,} distinct tiles', f'{distinct_rss:.0f} MB',
         f'{idle_rss:.0f} MB at start; {distinct_failed} failed', '<= 80 MB'),
        ('start to first tile', f'{first_tile:.2f} s', 'includes one upstream fetch', '<= 0.5 s'),
    ]
    if slow:
        (during_refresh, refreshes), login_seconds = slow
        rows += [
            ('failed tiles while cookies are renewed',
             f'{during_refresh[1]} of {during_refresh[0] + during_refresh[1]:,}',
             f'16 clients, new tiles only; {refreshes} refresh', '0'),
            ('actor login wall time', f'{login_seconds:.1f} s', 'python -m src against the fake, browser start '
                                                                'included', '<= 10 s'),
        ]
    for name, by_clients in others.items():
        rows.append((f'bare handler on {name}, tiles/s at 1/16/64',
                     ' / '.join(f'{by_clients[c]["rate"]:,.0f}' for c in CLIENT_COUNTS),
                     'p99 ' + ' / '.join(f'{by_clients[c]["p99"]:.1f}' for c in CLIENT_COUNTS) + ' ms', ''))
    print(f'\nfake Strava tile latency {args.latency * 1000:.0f} ms, tiles of {args.tile_kb} kB; {os.cpu_count()} '
          f'cores, load average {load_average[0]:.2f} at the start; Python {sys.version.split()[0]}; '
          f'{args.rounds} rounds of {args.seconds:g} s; {args.members} member keys\n')
    print('| figure | value | beside | goal |\n|---|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    print(json.dumps({clients: {which: [{k: round(v, 2) for k, v in run.items()} for run in runs]
                                for which, runs in by.items()} for clients, by in figures.items()}), file=sys.stderr)


if __name__ == '__main__':
    main()
