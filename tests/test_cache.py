"""The tile cache on disk: what it really takes, what eviction keeps, and what a start finds there."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import redirector_env, run_cli
from tests.fake_strava import has_heat, tile_png
from tests.test_tiles import import_cookies, png_label


def disk_usage(root) -> tuple[int, int]:
    """What everything under ``root`` takes on disk, as ``du`` counts it, and how many directories there are."""
    allocated, directories = 0, 0
    for directory, subdirectories, files in os.walk(root):
        directories += len(subdirectories)
        for name in (*subdirectories, *files):
            allocated += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return allocated, directories


def test_the_size_cap_counts_what_the_disk_really_holds_directories_too(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_CACHE_MAX_BYTES=100_000)
    tiles = [(30_000 + 7 * n, 20_000 + 3 * n) for n in range(60)]  # a tile a column, as a ride across a map
    for x, y in tiles:
        assert server.get(f'/tiles/all/hot/16/{x}/{y}.png?px=256').status_code == 200
    # the last tile's disk copy, and the room made for it, come just after its answer
    server.wait_until(lambda: disk_usage(server.data_dir / 'tiles')[0] <= 100_000, timeout=10)
    x, y = tiles[-1]
    before = strava.counters['tiles']
    assert server.get(f'/tiles/all/hot/16/{x}/{y}.png?px=256').status_code == 200
    assert strava.counters['tiles'] == before, 'the newest tile stays cached'


def test_a_tile_strava_lets_expire_early_is_kept_when_the_cache_is_full(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_CACHE_MAX_BYTES=20_000, HEATMAP_UPSTREAM_TIMEOUT=2)
    heat = [x for x in range(4400, 4440) if has_heat(13, x, 2686)]
    for x in heat[:12]:  # fill the cache with tiles fresh for a week
        assert server.get(f'/tiles/all/hot/13/{x}/2686.png').status_code == 200
    strava.tile_max_age, strava.tile_latency = 600, 0.3  # this one expires first: the oldest in the cache
    x = heat[12]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: server.get(f'/tiles/all/hot/13/{x}/2686.png'), range(4)))
    assert [answer.status_code for answer in answers] == [200] * 4, answers[0].text
    assert all(png_label(answer.content) == f'all/hot/13/{x}/2686@512' for answer in answers)
    before = strava.counters['tiles']
    assert server.get(f'/tiles/all/hot/13/{x}/2686.png').status_code == 200
    assert strava.counters['tiles'] == before, 'the tile just stored is the one the cache keeps'


def test_a_cache_of_the_old_layout_is_moved_in_and_nothing_outside_it_is_touched(start_redirector, strava,
                                                                                 tmp_path):
    root = tmp_path / 'data' / 'tiles'
    old_tile = root / 'ride' / 'hot' / '13' / '4401' / '2686-256.png'
    old_tile.parent.mkdir(parents=True)
    old_tile.write_bytes(tile_png(256, 'hot', 'ride/hot/13/4401/2686@256'))
    (root / 'ride' / 'hot' / '13' / '4401' / '.2686-256.png.140.tmp').write_bytes(b'half a tile')
    (root / 'notes.txt').write_text('not a tile')
    outside = tmp_path / 'precious'
    outside.mkdir()
    (outside / 'keep.png').write_text('outside the cache')
    (root / 'elsewhere').symlink_to(outside)
    (root / 'ride' / 'hot' / '13' / '4401' / '2687-256.png').symlink_to(outside / 'keep.png')

    server = start_redirector()  # no cookies: only the cache can answer
    server.wait_until(lambda: not os.path.lexists(root / 'ride') and not os.path.lexists(root / 'elsewhere'),
                      timeout=10)
    moved = server.get('/tiles/ride/hot/13/4401/2686.png?px=256')
    assert moved.status_code == 200 and png_label(moved.content) == 'ride/hot/13/4401/2686@256'
    assert sorted(outside.iterdir()) == [outside / 'keep.png']
    assert (outside / 'keep.png').read_text() == 'outside the cache'
    assert not (root / 'notes.txt').exists()
    assert server.get('/tiles/ride/hot/13/4401/2687.png?px=256').status_code == 503, 'a link is not a tile'


def test_a_command_beside_the_server_leaves_the_tiles_being_written_and_tidies_abandoned_ones(strava, tmp_path):
    root = tmp_path / 'data' / 'tiles' / '1f'
    root.mkdir(parents=True)
    writing = root / f'.{os.getppid()}-140.tmp'  # a live process (the test runner's parent) writing a tile now
    writing.write_bytes(b'half a tile')
    abandoned = root / '.999999999-140.tmp'  # a writer that is gone
    abandoned.write_bytes(b'half a tile')
    import_cookies(strava, tmp_path / 'data')

    done = run_cli('doctor', env=redirector_env(strava, tmp_path / 'data'))  # scans the cache as the server does

    assert done.returncode == 0, done.stdout
    assert 'ok    tile cache writable' in done.stdout
    assert writing.exists(), "another process's tile in the making is left alone"
    assert not abandoned.exists()
