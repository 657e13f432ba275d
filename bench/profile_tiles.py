"""Where a tile's time goes: py-spy samples the running server on the hit and miss paths, beside the bare limits.

    .venv/bin/pip install py-spy && .venv/bin/python bench/profile_tiles.py [--seconds 4] [--misses 400]

Each server process runs as in ``bench/run.py`` (fake Strava with 25 ms of latency, 20 kB tiles, 16 threads) while
py-spy samples it from outside (``--gil``: only the thread that holds the interpreter, so waiting costs nothing
and the figures are CPU time on the one core Python can use). The samples are split by what they were doing, per
request:

- hits with the memory cache (today), hits without it (``HEATMAP_MEMORY_CACHE_MB=0``: the disk and
  ``static_file`` path every hit took before), and the bare handler returning the same bytes from memory;
- misses through the server, and through the bare proxy (a Bottle handler fetching with urllib3 on the same
  waitress).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tests.fake_strava as fake_strava  # noqa: E402
from bench import run  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.fake_strava import FakeStrava  # noqa: E402

RATE = 1000  # samples per second
FRAME = re.compile(r'^(?P<function>.*) \((?P<file>.*):\d+\)$')
COMPONENTS = ('waitress: connections, parsing, writing', 'Bottle: routing, request and response objects',
              'memory cache (hot tiles)', 'disk cache: stat, read, write', 'our tile logic',
              'upstream fetch (urllib3, http.client)')


def component(frames: list[tuple[str, str]]) -> str:
    """What a sampled stack, as (function, file) pairs from the outermost, was doing.

    >>> component([('handler_thread', 'waitress/task.py'), ('Bottle.__call__', 'bottle.py'),
    ...            ('send_tile', 'redirector.py'), ('TileService._get', 'heatmap/upstream.py'),
    ...            ('PoolManager.urlopen', 'urllib3/poolmanager.py')])
    'upstream fetch (urllib3, http.client)'
    >>> component([('handler_thread', 'waitress/task.py'), ('Bottle.__call__', 'bottle.py'),
    ...            ('HTTPResponse.__init__', 'bottle.py')])
    'Bottle: routing, request and response objects'
    """
    functions = [function for function, _ in frames]
    files = [file for _, file in frames]
    if any('urllib3/' in file for file in files):
        return COMPONENTS[5]
    if any(f.startswith(('TileCache.', 'static_file', 'MemoryCache._unchanged_on_disk')) for f in functions):
        return COMPONENTS[3]
    if 'Bottle.__call__' not in functions and any(f.startswith(('HotTiles.', 'MemoryCache.')) for f in functions):
        return COMPONENTS[2]
    if 'Bottle.__call__' in functions:
        inner = files[functions.index('Bottle.__call__'):]
        ours = [file for file in inner if '/heatmap/' in file or file.endswith(('redirector.py', '<string>'))]
        return COMPONENTS[4] if ours and not files[-1].endswith('bottle.py') else COMPONENTS[1]
    return COMPONENTS[0]


def profiled(pid: int, work) -> tuple[collections.Counter, int]:
    """Run ``work()`` (which returns how many requests it made) while py-spy samples process ``pid``; the samples
    per component, and the request count."""
    out = Path(tempfile.mkdtemp(prefix='heatmap-profile-')) / 'samples.txt'
    spy = subprocess.Popen([py_spy(), 'record', '--pid', str(pid), '--rate', str(RATE), '--gil', '--nonblocking',
                            '--format', 'raw', '--output', str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # py-spy attaches
    requests = work()
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=30)
    samples = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(' ')
        frames = [(m['function'], m['file']) for m in map(FRAME.match, stack.split(';')) if m]
        samples[component(frames)] += int(count)
    return samples, requests


def py_spy() -> str:
    found = shutil.which('py-spy') or shutil.which('py-spy', path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit('py-spy is not installed: .venv/bin/pip install py-spy')
    return found


def hits(port: int, paths: list[str], seconds: float) -> int:
    figures = run.load(port, paths, 16, seconds)
    return round(figures['rate'] * (seconds + min(0.5, seconds / 4)))  # the load's warm-up is sampled too


def misses(port: int, first_x: int, count: int) -> int:
    for i in range(count):
        run.latency('127.0.0.1', port, f'/tiles/all/hot/15/{first_x + i}/5000.png')
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=4, help='seconds of hits (16 clients) per profile')
    parser.add_argument('--misses', type=int, default=400, help='cache misses per profile, one at a time')
    args = parser.parse_args()
    py_spy()

    fake_strava.tile_png = run.heavy_tile_png(20)
    strava = FakeStrava(tile_latency=0.025).start()
    columns: dict[str, tuple[collections.Counter, int]] = {}
    hot = [f'/tiles/all/hot/13/{4400 + i}/2686.png' for i in range(60) if fake_strava.has_heat(13, 4400 + i, 2686)]
    try:
        for memory_mb, name in ((24, 'hit'), (0, 'hit, no memory cache (before)')):
            server, port, _, _, _ = run.start_server(strava, HEATMAP_MEMORY_CACHE_MB=memory_mb)
            try:
                bodies = {}
                for path in hot:
                    run.latency('127.0.0.1', port, path)
                    connection = http.client.HTTPConnection('127.0.0.1', port)
                    connection.request('GET', path)
                    bodies[path] = connection.getresponse().read()
                columns[name] = profiled(server.pid, lambda: hits(port, hot, args.seconds))
                if memory_mb:
                    columns['miss'] = profiled(server.pid, lambda: misses(port, 9000, args.misses))
            finally:
                run.stop(server)
        bare = run.start_bare('waitress', sys.executable, bodies)
        try:
            columns['bare handler'] = profiled(bare.pid, lambda: hits(bare.port, hot, args.seconds))
        finally:
            run.stop(bare)
        cookie = '; '.join(f'{k}={v}' for k, v in strava.tile_cookies().items() if v)
        proxy_port = free_port()
        proxy = subprocess.Popen([sys.executable, '-c', run.BARE_PROXY, str(proxy_port), str(run.THREADS), strava.url,
                                  cookie])
        try:
            run.wait_up(proxy_port)
            columns['bare proxy miss'] = profiled(proxy.pid, lambda: misses(proxy_port, 20000, args.misses))
        finally:
            run.stop(proxy)
    finally:
        strava.stop()

    order = ['hit', 'hit, no memory cache (before)', 'bare handler', 'miss', 'bare proxy miss']
    print(f'\nCPU time per request (ms), sampled by py-spy --gil at {RATE} Hz; hits at 16 keep-alive clients, '
          f'misses one at a time on new connections; {os.cpu_count()} cores, load average '
          f'{os.getloadavg()[0]:.2f}\n')
    print('| part | ' + ' | '.join(order) + ' |\n|---|' + '---|' * len(order))
    for part in COMPONENTS:
        print(f'| {part} | ' + ' | '.join(f'{columns[c][0][part] / RATE / columns[c][1] * 1000:.3f}'
                                          for c in order) + ' |')
    print('| **all** | ' + ' | '.join(f'**{sum(columns[c][0].values()) / RATE / columns[c][1] * 1000:.3f}**'
                                     for c in order) + ' |')
    print('| requests | ' + ' | '.join(f'{columns[c][1]:,}' for c in order) + ' |')


if __name__ == '__main__':
    main()
