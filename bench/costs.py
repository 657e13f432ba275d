"""Costs that grow with use: the tile cache at 100k tiles, the rate limiter under 30k clients, /presets/ CPU.

    .venv/bin/python bench/costs.py [--against REV] [--tiles 100000] [--clients 30000]

Prints a table of each figure beside its goal. With ``--against REV`` the same figures are measured on that
revision's heatmap/cache.py, heatmap/access.py and presets/__init__.py as well (read with ``git show``, nothing
is checked out), e.g. ``--against 0298021``, the code before the tile cache's index and the limiter's ordered table.
Each version is measured in a fresh interpreter. The machine is shared: run it a few times.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import presets  # noqa: E402
from heatmap import access, cache  # noqa: E402
from heatmap.layers import Tile  # noqa: E402

TILE_BYTES = 900  # a 256 px heatmap tile
EXTRA_LAYERS = 'sport_GravelRide/blue,run/purple,ride/blue,sport_TrailRun/orange'  # 9 layers with the defaults


def load_at(revision: str, path: str, package: str) -> types.ModuleType:
    """A module as it was at ``revision``, imported beside today's (its relative imports find today's package)."""
    source = subprocess.run(['git', 'show', f'{revision}:{path}'], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    name = f'{package}._at_{revision}_{Path(path).stem}'
    module = types.ModuleType(name)
    module.__file__, module.__package__ = str(ROOT / path), package
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f'{revision}:{path}', 'exec'), module.__dict__)
    return module


def wait_for_scan() -> float:
    """Seconds until the cache's start-up scan thread is done."""
    started = time.perf_counter()
    for thread in threading.enumerate():
        if thread.name == 'tile-cache-scan':
            thread.join()
    return time.perf_counter() - started


def disk_usage(root: Path) -> int:
    """Bytes allocated under ``root``, files and directories, as ``du`` counts them."""
    total = 0
    for directory, subdirectories, files in os.walk(root):
        total += sum(os.lstat(os.path.join(directory, name)).st_blocks * 512 for name in (*subdirectories, *files))
    return total


def tile(number: int) -> Tile:
    """Tiles of a ride across a map: a thousand rows per column."""
    return Tile('all', 'hot', 16, 30_000 + number // 1000, 20_000 + number % 1000, px=256)


def cache_costs(module: types.ModuleType, tiles: int, at_cap: int) -> dict[str, float]:
    """Fill a cache with ``tiles`` tiles, then store ``at_cap`` more with the cache at its cap (each one evicts)."""
    root = Path(tempfile.mkdtemp(prefix='heatmap-bench-cache-'))
    data, now = b'\x89PNG' + bytes(TILE_BYTES - 4), time.time()
    try:
        tile_cache = module.TileCache(root, 7 * 86400, 2 ** 40)
        wait_for_scan()
        started = time.perf_counter()
        for number in range(tiles):
            tile_cache.store(tile(number), data, None, now)
        store_us = (time.perf_counter() - started) / tiles * 1e6
        counted = tile_cache._bytes
        tile_cache.max_bytes = counted
        times = []
        for number in range(tiles, tiles + at_cap):
            started = time.perf_counter()
            tile_cache.store(tile(number), data, None, now)
            times.append((time.perf_counter() - started) * 1000)
        on_disk = disk_usage(root)
        module.TileCache(root, 7 * 86400, 2 ** 40)
        scan_s = wait_for_scan()
        return {'store_us': store_us, 'worst_ms': max(times), 'p99_ms': statistics.quantiles(times, n=100)[98],
                'counted_mb': counted / 2 ** 20, 'disk_mb': on_disk / 2 ** 20, 'scan_s': scan_s}
    finally:
        shutil.rmtree(root)


def limiter_costs(module: types.ModuleType, clients: int) -> dict[str, float]:
    """One request each from ``clients`` distinct addresses within a second (a crawl, or a flood), at 60 a minute."""
    limiter = module.RateLimiter(60)
    addresses = [str(ipaddress.IPv4Address(0x0A00_0000 + number)) for number in range(clients)]
    started = time.process_time()
    for number, address in enumerate(addresses):
        limiter.wait_needed(address, now=number / clients)
    cpu = time.process_time() - started
    return {'cpu_s': cpu, 'us_per_request': cpu / clients * 1e6, 'kept': len(limiter._buckets)}


def presets_costs(module: types.ModuleType, repeats: int) -> dict[str, float]:
    """CPU of the page and of every file for one context of 9 layers: the first request, then the mean of repeats."""
    context = module.PresetContext('https://maps.example.org/heat', 'key', module.parse_layers(EXTRA_LAYERS))

    def page_and_files() -> tuple[float, float]:
        started = time.process_time()
        module.page(context)
        page = time.process_time() - started
        started = time.process_time()
        for preset in module.preset_files(context):
            module.find(context, preset.name).make(context)
        return page * 1000, (time.process_time() - started) * 1000

    first_page, first_files = page_and_files()
    later = [page_and_files() for _ in range(repeats)]
    return {'first_page_ms': first_page, 'page_ms': statistics.mean(p for p, _ in later),
            'first_files_ms': first_files, 'files_ms': statistics.mean(f for _, f in later),
            'files': len(module.preset_files(context))}


def measure(revision: str | None, args) -> dict[str, dict[str, float]]:
    """The figures of today's code, or of ``revision``'s, in a fresh interpreter each, so that neither inherits
    the other's warm caches and imports."""
    command = [sys.executable, __file__, '--tiles', str(args.tiles), '--at-cap', str(args.at_cap),
               '--clients', str(args.clients), '--repeats', str(args.repeats), '--measure', revision or 'now']
    return json.loads(subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout)


def measure_here(revision: str, args) -> dict[str, dict[str, float]]:
    if revision == 'now':
        modules = {'cache': cache, 'access': access, 'presets': presets}
    else:
        modules = {name: load_at(revision, path, package) for name, path, package in (
            ('cache', 'heatmap/cache.py', 'heatmap'), ('access', 'heatmap/access.py', 'heatmap'),
            ('presets', 'presets/__init__.py', 'presets'))}
    return {'cache': cache_costs(modules['cache'], args.tiles, args.at_cap),
            'limiter': limiter_costs(modules['access'], args.clients),
            'presets': presets_costs(modules['presets'], args.repeats)}


def rows(figures: dict[str, dict[str, float]], args) -> list[tuple[str, str, str]]:
    c, r, p = figures['cache'], figures['limiter'], figures['presets']
    return [
        (f'cache at its cap ({args.tiles:,} tiles): store() p99', f"{c['p99_ms']:.2f} ms", '<= 2 ms'),
        (f'cache at its cap: worst of {args.at_cap:,} store()', f"{c['worst_ms']:.1f} ms", '<= 20 ms'),
        ('cache below its cap: store()', f"{c['store_us']:.0f} µs", ''),
        (f'{args.tiles:,} tiles: counted / on disk', f"{c['counted_mb']:.0f} / {c['disk_mb']:.0f} MB", 'equal'),
        (f'start-up scan of {args.tiles:,} tiles (background)', f"{c['scan_s']:.2f} s", '<= 5 s'),
        (f'rate limiter: {args.clients:,} clients, CPU', f"{r['cpu_s']:.2f} s", '<= 1 s'),
        ('rate limiter: CPU per request', f"{r['us_per_request']:.1f} µs", '<= 30 µs'),
        ('rate limiter: clients remembered', f"{r['kept']:,}", '<= 10,000'),
        ('/presets/ page, 9 layers: first request CPU', f"{p['first_page_ms']:.0f} ms", ''),
        ('/presets/ page, 9 layers: later requests CPU', f"{p['page_ms']:.2f} ms", '<= 5 ms'),
        (f"all {p['files']:.0f} preset files: first / later CPU",
         f"{p['first_files_ms']:.0f} / {p['files_ms']:.1f} ms", '<= 20 ms later'),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--against', metavar='REV', help='also measure the code of this git revision')
    parser.add_argument('--tiles', type=int, default=100_000, help='tiles in the cache')
    parser.add_argument('--at-cap', type=int, default=1000, help='stores measured with the cache at its cap')
    parser.add_argument('--clients', type=int, default=30_000, help='distinct clients of the rate limiter')
    parser.add_argument('--repeats', type=int, default=20, help='later /presets/ requests measured')
    parser.add_argument('--measure', help=argparse.SUPPRESS)  # in the child process: 'now' or a revision
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(args.measure, args)))
        return

    now = rows(measure(None, args), args)
    before = rows(measure(args.against, args), args) if args.against else None
    print(f'\n{os.cpu_count()} cores; Python {sys.version.split()[0]}\n')
    print('| figure | now |' + (f' at {args.against} |' if before else '') + ' goal |')
    print('|---|---|' + ('---|' if before else '') + '---|')
    for index, (figure, value, goal) in enumerate(now):
        print(f'| {figure} | {value} |' + (f' {before[index][1]} |' if before else '') + f' {goal} |')


if __name__ == '__main__':
    main()
