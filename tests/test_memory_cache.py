"""Hot tiles from memory: a repeated request is answered without the disk, and never outlives the disk copy."""

from __future__ import annotations

import os
import re
import time

from heatmap.cache import (
    ENTRY_BYTES,
    RECHECK_SECONDS,
    ROUTES_PER_TILE,
    HotTile,
    MemoryCache,
)
from tests.conftest import redirector_env, run_cli
from tests.fake_strava import has_heat
from tests.test_tiles import heat_tile, import_cookies, png_label, png_size


def cached_file(server, path: str) -> str:
    """The disk copy of the one tile cached so far (written just after the tile's answer went out)."""
    def files():
        return [os.path.join(d, f) for d, _, names in os.walk(server.data_dir / 'tiles') for f in names
                if f.endswith('.png')]
    server.wait_until(lambda: files(), timeout=10, interval=0.01)
    assert len(files()) == 1, (path, files())
    return files()[0]


def test_a_repeated_tile_is_answered_from_memory_even_when_its_file_cannot_be_read(start_redirector, strava,
                                                                                  tmp_path, unprivileged):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(prefix=unprivileged)  # root could read the file anyway
    z, x, y = heat_tile()
    path = f'/tiles/all/hot/{z}/{x}/{y}.png'
    first = server.get(path)
    assert first.status_code == 200
    os.chmod(cached_file(server, path), 0)

    again = server.get(path)
    assert again.status_code == 200, again.text
    assert again.content == first.content and png_label(again.content) == f'all/hot/{z}/{x}/{y}@512'
    assert {name: again.headers[name] for name in ('ETag', 'Last-Modified', 'Cache-Control', 'Content-Type',
                                                   'Access-Control-Allow-Origin')} == \
        {name: first.headers[name] for name in ('ETag', 'Last-Modified', 'Cache-Control', 'Content-Type',
                                                'Access-Control-Allow-Origin')}
    revalidated = server.get(path, headers={'If-None-Match': first.headers['ETag']})
    assert revalidated.status_code == 304 and revalidated.content == b''
    assert revalidated.headers['ETag'] == first.headers['ETag']
    assert strava.counters['tiles'] == 1
    served = re.search(r'(\d+) served, (\d+) from the cache', server.get('/').text)
    assert served.groups() == ('3', '2'), 'memory answers count as cache hits on the status page'


def test_a_tile_removed_from_disk_is_fetched_again_once_memory_has_checked(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    z, x, y = heat_tile()
    path = f'/tiles/all/hot/{z}/{x}/{y}.png'
    assert server.get(path).status_code == 200
    os.unlink(cached_file(server, path))
    time.sleep(RECHECK_SECONDS + 0.1)
    assert server.get(path).status_code == 200
    assert strava.counters['tiles'] == 2, 'the disk stays the store: what it lost is fetched again'


def test_the_memory_copy_expires_with_the_disk_copy_and_a_stale_copy_is_never_kept(start_redirector, strava,
                                                                                   tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    strava.tile_max_age = 2  # Strava lets this tile live 2 s
    z, x, y = heat_tile()
    path = f'/tiles/all/hot/{z}/{x}/{y}.png'
    assert server.get(path).status_code == 200
    assert server.get(path).status_code == 200
    assert strava.counters['tiles'] == 1
    time.sleep(2.1)
    strava.tile_status = 500
    stale = server.get(path)
    assert stale.status_code == 200 and png_label(stale.content) == f'all/hot/{z}/{x}/{y}@512'
    assert strava.counters['tiles'] == 2
    strava.tile_status = None
    assert server.get(path).status_code == 200
    assert strava.counters['tiles'] == 3, 'the stale copy served during the error was not kept in memory'


def test_a_tile_evicted_from_disk_is_not_answered_from_memory(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_CACHE_MAX_BYTES=60_000)
    first = '/tiles/all/hot/13/4400/2686.png?px=256'
    assert server.get(first).status_code == 200 and server.get(first).status_code == 200
    for x in range(4401, 4431):  # the oldest, the first, goes
        assert server.get(f'/tiles/all/hot/13/{x}/2686.png?px=256').status_code == 200
    before = strava.counters['tiles']
    assert server.get(first).status_code == 200
    assert strava.counters['tiles'] == before + 1


def test_each_url_gets_its_own_tile_and_the_key_is_checked_as_before(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='map-key')
    z, x, y = heat_tile()
    other = next(o for o in range(x + 1, x + 50) if has_heat(z, o, y))
    urls = {f'/tiles/all/hot/{z}/{x}/{y}.png?key=map-key': (f'all/hot/{z}/{x}/{y}@512', 512),
            f'/tiles/all/hot/{z}/{x}/{y}.png?key=map-key&px=256': (f'all/hot/{z}/{x}/{y}@256', 256),
            f'/tiles/all/hot/{z}/{x}/{y}@2x.png?key=map-key': (f'all/hot/{z}/{x}/{y}@1024', 1024),
            f'/tiles/all/blue/{z}/{x}/{y}.png?key=map-key': (f'all/blue/{z}/{x}/{y}@512', 512),
            f'/tiles/all/hot/{z}/{other}/{y}.png?key=map-key': (f'all/hot/{z}/{other}/{y}@512', 512)}
    for _ in range(3):
        for url, (label, size) in urls.items():
            answer = server.get(url)
            assert answer.status_code == 200 and png_label(answer.content) == label
            assert png_size(answer.content) == (size, size)
    assert strava.counters['tiles'] == len(urls)
    for wrong in (f'/tiles/all/hot/{z}/{x}/{y}.png', f'/tiles/all/hot/{z}/{x}/{y}.png?key=map-kez',
                  f'/tiles/all/hot/{z}/{x}/{y}.png?key=map-key%00'):
        assert server.get(wrong).status_code == 403, wrong


def hot_tile(name: str, kilobytes: int, now: float) -> HotTile:
    return HotTile(f'00/{name}', bytes(kilobytes * 1024), 1_700_000_000 * 10**9, now + 60, now)


def test_the_memory_cache_keeps_to_its_byte_bound_and_drops_the_least_recently_used(tmp_path):
    now = time.time()
    memory = MemoryCache(str(tmp_path), max_bytes=10 * (20 * 1024 + ENTRY_BYTES + 200))
    for number in range(10):
        tile = hot_tile(f'{number}.png', 20, now)
        memory.put(tile)
        memory.route(f'/tiles/{number}', tile, [('Content-Type', 'image/png')])
    assert memory.hit('/tiles/0', now) is not None  # now the most recently used
    for number in range(10, 15):
        memory.put(hot_tile(f'{number}.png', 20, now))
    assert memory.bytes <= memory.max_bytes
    assert memory.hit('/tiles/0', now) is not None
    assert [memory.hit(f'/tiles/{number}', now) for number in range(1, 6)] == [None] * 5
    memory.put(hot_tile('huge.png', 1024, now))
    assert memory.bytes <= memory.max_bytes and memory.hit('/tiles/0', now) is not None, 'too large: not kept'
    kept = memory.hit('/tiles/0', now)
    for variant in range(ROUTES_PER_TILE + 2):  # ?key=…&junk=1, ?key=…&junk=2, … all lead to one tile
        memory.route(f'/tiles/0?junk={variant}', kept, [('Content-Type', 'image/png')])
    assert memory.bytes <= memory.max_bytes
    assert memory.hit('/tiles/0', now) is None, 'the oldest URL made room: a few URLs a tile, not a flood'
    assert memory.hit(f'/tiles/0?junk={ROUTES_PER_TILE + 1}', now) is kept


def test_memory_cache_off_leaves_every_answer_to_the_disk(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_MEMORY_CACHE_MB=0)
    z, x, y = heat_tile()
    path = f'/tiles/all/hot/{z}/{x}/{y}.png'
    assert server.get(path).status_code == 200
    os.unlink(cached_file(server, path))
    assert server.get(path).status_code == 200
    assert strava.counters['tiles'] == 2, 'without a memory copy the missing file is fetched again at once'


def test_a_memory_cache_size_that_is_no_number_is_one_clear_line(strava, tmp_path):
    done = run_cli('serve', env=redirector_env(strava, tmp_path / 'data', HEATMAP_MEMORY_CACHE_MB='lots'))
    assert done.returncode == 2
    assert done.stderr == "configuration: HEATMAP_MEMORY_CACHE_MB must be a number, not 'lots'\n"


def test_a_new_tile_carries_the_validators_its_disk_copy_gets_after_the_answer(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    z, x, y = heat_tile()
    path = f'/tiles/all/hot/{z}/{x}/{y}.png'
    first = server.get(path)  # from Strava: answered before its disk copy is written
    cached_file(server, path)
    server.stop()
    again = start_redirector()  # nothing in memory: the answer comes from the disk copy
    from_disk = again.get(path)
    assert from_disk.content == first.content and strava.counters['tiles'] == 1
    assert (from_disk.headers['ETag'], from_disk.headers['Last-Modified']) == \
        (first.headers['ETag'], first.headers['Last-Modified'])
    assert again.get(path, headers={'If-None-Match': first.headers['ETag']}).status_code == 304


def test_the_key_anywhere_in_the_query_finds_the_same_hot_tile_and_is_checked_on_each(start_redirector, strava,
                                                                                     tmp_path, unprivileged):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(prefix=unprivileged, HEATMAP_ACCESS_KEY='map-key')
    z, x, y = heat_tile()
    path = f'/tiles/all/hot/{z}/{x}/{y}.png'
    first = server.get(f'{path}?px=256&key=map-key')
    assert first.status_code == 200
    os.chmod(cached_file(server, path), 0)  # from here on only memory can answer

    for query in ('key=map-key&px=256', 'px=256&key=map-key&', 'k%65y=map-key&px=256', 'key=other&px=256&key=map-key'):
        again = server.get(f'{path}?{query}')
        assert again.status_code == 200 and again.content == first.content, query
    for query in ('px=256', 'px=256&key=map-kez', 'key=map-key&px=256&key=other', 'px=256&k%65y=map-ke'):
        assert server.get(f'{path}?{query}').status_code == 403, query
    assert strava.counters['tiles'] == 1


def test_a_tile_strava_says_not_to_keep_is_asked_again_each_time_and_a_kept_one_is_not(start_redirector, strava,
                                                                                      tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    z, x, y = heat_tile()
    other = next(o for o in range(x + 1, x + 50) if has_heat(z, o, y))
    strava.tile_max_age = 0
    for _ in range(3):
        assert png_label(server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').content) == f'all/hot/{z}/{x}/{y}@512'
    assert strava.counters['tiles'] == 3
    strava.tile_max_age = 3600
    for _ in range(3):
        assert png_label(server.get(f'/tiles/all/hot/{z}/{other}/{y}.png').content) == f'all/hot/{z}/{other}/{y}@512'
    assert strava.counters['tiles'] == 4, 'the same requests of a tile Strava lets live are answered from the cache'
