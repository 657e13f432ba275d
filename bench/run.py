"""Benchmarks: the redirector against the fake Strava, next to the practical limit.

    .venv/bin/python bench/run.py [--seconds 5] [--latency 0.03]

Prints a table: cache-hit tiles/s at 1 and 16 keep-alive clients beside a bare Bottle handler
serving the same bytes on the same WSGI server, the extra latency of a cache miss over fetching
the fake directly, upstream requests per tile, and the time from start to the first tile.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatmap.cache import relative_path, tile_name  # noqa: E402
from heatmap.layers import Tile  # noqa: E402
from tests.conftest import cookie_export, find_chromium, free_port, redirector_env  # noqa: E402
from tests.fake_strava import FakeStrava  # noqa: E402

BARE_APP = '''
import logging, sys, bottle, waitress
logging.getLogger('waitress').setLevel(logging.ERROR)
app = bottle.Bottle()
@app.get('/tiles/<rest:path>')
def tile(rest):
    return bottle.static_file(sys.argv[2], root=sys.argv[3], mimetype='image/png',
                              headers={'Cache-Control': 'public, max-age=86400'})
waitress.serve(app, host='127.0.0.1', port=int(sys.argv[1]), threads=16, _quiet=True)
'''


def _client(port: int, paths: list[str], seconds: float, counts, failures, index: int) -> None:
    mine = paths[index::len(counts)] or paths
    connection = http.client.HTTPConnection('127.0.0.1', port)
    done, failed, deadline = 0, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.request('GET', mine[(done + failed) % len(mine)])
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            done += 1
        else:
            failed += 1
    counts[index], failures[index] = done, failed


def _load(port: int, paths: list[str], clients: int, seconds: float, result, failed) -> None:
    counts, failures = [0] * clients, [0] * clients
    threads = [threading.Thread(target=_client, args=(port, paths, seconds, counts, failures, i))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.value, failed.value = sum(counts) / seconds, sum(failures)


def best_throughput(port: int, paths: list[str], clients: int, seconds: float, runs: int = 3) -> float:
    """The best of a few runs: on a small shared machine the slower runs measure the neighbours."""
    return max(throughput(port, paths, clients, seconds / runs)[0] for _ in range(runs))


def throughput(port: int, paths: list[str], clients: int, seconds: float) -> tuple[float, int]:
    """Successful requests/s and failed requests from keep-alive clients in a separate process, so that the
    client's GIL is not the server's. Client i asks for paths[i::clients] in turn."""
    result, failed = multiprocessing.Value('d', 0.0), multiprocessing.Value('i', 0)
    process = multiprocessing.Process(target=_load, args=(port, paths, clients, seconds, result, failed))
    process.start()
    process.join()
    return result.value, failed.value


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


def refresh_under_load(strava: FakeStrava, seconds: float) -> tuple[tuple[int, int], int]:
    """16 clients ask for new tiles while the cookies come due, are renewed and the old ones expire."""
    data_dir = Path(tempfile.mkdtemp(prefix='heatmap-bench-refresh-'))
    env = redirector_env(strava, data_dir, HEATMAP_LOG_LEVEL='WARNING', HEATMAP_REFRESH_BEFORE=2,
                         HEATMAP_RATE_LIMIT=0)  # all 16 clients share one address
    lifetime = 3 + max(seconds, 3) / 2  # due a second in, expired mid-load
    subprocess.run([sys.executable, 'redirector.py', 'import-cookies', '-'], cwd=ROOT, env=env, check=True,
                   input=cookie_export(strava, lifetime=int(lifetime)), capture_output=True, text=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, 'redirector.py', '--port', str(port), '--threads', '32'], cwd=ROOT,
                              env=env)
    try:
        wait_up(port)
        before = strava.counters['maps_ok']
        paths = [f'/tiles/all/hot/16/{30000 + i}/{20000 + j}.png?px=256' for i in range(100) for j in range(100)]
        rate, failed = throughput(port, paths, 16, max(seconds, 3) + 3)
        return (int(rate * (max(seconds, 3) + 3)), failed), strava.counters['maps_ok'] - before
    finally:
        server.terminate()
        server.wait()


def actor_login(strava: FakeStrava) -> float:
    from tests.actor_process import run_actor_process
    storage = Path(tempfile.mkdtemp(prefix='heatmap-bench-actor-')) / 'storage'
    run = run_actor_process({'email': 'rider@example.com', 'password': 'correct horse',
                             'loginUrl': strava.url + '/login', 'heatmapUrl': strava.url + '/maps/global-heatmap'},
                            storage, find_chromium())
    if run.returncode != 0:
        raise SystemExit(f'the actor failed: {run.status_message}')
    return run.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=6, help='seconds of load per throughput figure')
    parser.add_argument('--latency', type=float, default=0.03, help="the fake Strava's tile latency (s)")
    parser.add_argument('--samples', type=int, default=400, help='cache-miss latency samples')
    args = parser.parse_args()

    strava = FakeStrava(tile_latency=args.latency).start()
    data_dir = Path(tempfile.mkdtemp(prefix='heatmap-bench-'))
    env = redirector_env(strava, data_dir, HEATMAP_LOG_LEVEL='WARNING', HEATMAP_RATE_LIMIT=0)
    subprocess.run([sys.executable, 'redirector.py', 'import-cookies', '-'], cwd=ROOT, env=env, check=True,
                   input=cookie_export(strava), capture_output=True, text=True)
    port = free_port()
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, 'redirector.py', '--port', str(port)], cwd=ROOT, env=env)
    try:
        first_tile = None
        while first_tile is None:
            try:
                connection = http.client.HTTPConnection('127.0.0.1', port)
                connection.request('GET', '/tiles/all/hot/12/2048/1361.png')
                if connection.getresponse().status == 200:
                    first_tile = time.monotonic() - started
            except OSError:
                time.sleep(0.005)
        idle_rss = rss_mb(server.pid)

        hot = [f'/tiles/all/hot/13/{4400 + i}/2686.png' for i in range(50)]
        for path in hot:
            latency('127.0.0.1', port, path)
        before = strava.counters['tiles']
        hit_1 = best_throughput(port, hot, 1, args.seconds)
        hit_16 = best_throughput(port, hot, 16, args.seconds)
        hit_upstream = strava.counters['tiles'] - before

        bare_port = free_port()
        cached = data_dir / 'tiles' / relative_path(tile_name(Tile('all', 'hot', 13, 4400, 2686)))
        bare = subprocess.Popen([sys.executable, '-c', BARE_APP, str(bare_port), cached.name, str(cached.parent)])
        try:
            wait_up(bare_port)
            bare_1 = best_throughput(bare_port, hot, 1, args.seconds)
            bare_16 = best_throughput(bare_port, hot, 16, args.seconds)
        finally:
            bare.terminate()

        cookie = '; '.join(f'{k}={v}' for k, v in strava.tile_cookies().items() if v)
        before = strava.counters['tiles']
        through, direct = [], []
        for i in range(args.samples):  # interleaved, so that both see the same machine
            through.append(latency('127.0.0.1', port, f'/tiles/all/hot/15/{9000 + i}/5000.png'))
            direct.append(latency(strava.host, strava.port, f'/identified/globalheat/all/hot/15/{20000 + i}/5000.png',
                                  {'Cookie': cookie}))
        miss_upstream = (strava.counters['tiles'] - before - args.samples) / args.samples
        loaded_rss = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    try:
        during_refresh, refreshes = refresh_under_load(strava, args.seconds)
        login_seconds = actor_login(strava)
    finally:
        strava.stop()

    def pct(samples, q):
        return statistics.quantiles(samples, n=100)[q - 1]

    rows = [
        ('cache-hit tiles/s, 1 client', f'{hit_1:,.0f}', f'bare Bottle {bare_1:,.0f} -> ratio {hit_1 / bare_1:.2f}',
         '>= 0.8'),
        ('cache-hit tiles/s, 16 clients', f'{hit_16:,.0f}',
         f'bare Bottle {bare_16:,.0f} -> ratio {hit_16 / bare_16:.2f}', '>= 0.8'),
        ('cache-miss extra latency p50', f'{pct(through, 50) - pct(direct, 50):.2f} ms',
         f'through {pct(through, 50):.1f} ms, direct {pct(direct, 50):.1f} ms', '<= 2 ms'),
        ('cache-miss extra latency p99', f'{pct(through, 99) - pct(direct, 99):.2f} ms',
         f'through {pct(through, 99):.1f} ms, direct {pct(direct, 99):.1f} ms', ''),
        ('upstream requests per tile', f'{miss_upstream:.2f} miss / {hit_upstream} hits', '', '1 / 0'),
        ('failed tiles while cookies are renewed', f'{during_refresh[1]} of {during_refresh[0] + during_refresh[1]:,}',
         f'16 clients, new tiles only; {refreshes} refresh', '0'),
        ('resident memory', f'{idle_rss:.0f} MB idle', f'{loaded_rss:.0f} MB after the load', '<= 50 MB idle'),
        ('start to first tile', f'{first_tile:.2f} s', 'includes one upstream fetch', '<= 1 s'),
        ('actor login wall time', f'{login_seconds:.1f} s', 'python -m src against the fake, browser start included',
         '<= 10 s'),
    ]
    print(f'\nfake Strava tile latency {args.latency * 1000:.0f} ms; {os.cpu_count()} cores; '
          f'Python {sys.version.split()[0]}\n')
    print('| figure | value | beside | target |\n|---|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    print(json.dumps({'hit_1': hit_1, 'hit_16': hit_16, 'bare_1': bare_1, 'bare_16': bare_16}), file=sys.stderr)


if __name__ == '__main__':
    main()
