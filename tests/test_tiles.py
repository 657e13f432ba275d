"""Serving tiles: proxy mode with the disk cache, bad requests, redirect mode."""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from heatmap import layers
from heatmap.layers import BadTile, Tile, check_template, parse_tile, transparent_png, upstream_url
from tests.conftest import cookie_export, redirector_env, run_cli
from tests.fake_strava import has_heat


def png_size(body: bytes) -> tuple[int, int]:
    assert body.startswith(b'\x89PNG\r\n\x1a\n'), body[:40]
    return struct.unpack('>II', body[16:24])


def png_label(body: bytes) -> str:
    start = body.index(b'tEXtTile\x00') + len(b'tEXtTile\x00')
    return body[start:body.index(b'IDAT') - 8].decode()


def import_cookies(strava, data_dir, lifetime=None, session=True, force=False):
    done = run_cli('import-cookies', '-', *(['--force'] if force else []), env=redirector_env(strava, data_dir),
                   stdin=cookie_export(strava, lifetime, session))
    assert done.returncode == 0, done.stderr
    return done


def heat_tile(z=13, start=4400):
    x = next(x for x in range(start, start + 50) if has_heat(z, x, 2686))
    return z, x, 2686


@pytest.fixture
def server(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    return start_redirector()


def test_imported_cookies_serve_the_fakes_tile_and_cache_it(server, strava):
    z, x, y = heat_tile()
    first = server.get(f'/tiles/ride/hot/{z}/{x}/{y}.png')
    assert first.status_code == 200
    assert first.headers['Content-Type'] == 'image/png'
    assert png_label(first.content) == f'ride/hot/{z}/{x}/{y}@512'
    assert png_size(first.content) == (512, 512)
    assert strava.counters['tiles'] == 1

    second = server.get(f'/tiles/ride/hot/{z}/{x}/{y}.png')
    assert second.content == first.content
    assert strava.counters['tiles'] == 1, 'a cached tile must not hit upstream'

    revalidated = server.get(f'/tiles/ride/hot/{z}/{x}/{y}.png', headers={'If-None-Match': first.headers['ETag']})
    assert revalidated.status_code == 304
    since = server.get(f'/tiles/ride/hot/{z}/{x}/{y}.png',
                       headers={'If-Modified-Since': first.headers['Last-Modified']})
    assert since.status_code == 304
    assert 'max-age' in first.headers['Cache-Control']


@pytest.mark.parametrize('suffix, query, size', [('', '?px=256', 256), ('@2x', '', 1024), ('', '?px=512', 512)])
def test_tile_sizes_follow_px_and_retina(server, suffix, query, size):
    z, x, y = heat_tile()
    response = server.get(f'/tiles/all/blue/{z}/{x}/{y}{suffix}.png{query}')
    assert response.status_code == 200
    assert png_size(response.content) == (size, size)


def test_no_heat_gives_a_cached_transparent_tile_of_the_right_size(server, strava):
    x = next(x for x in range(4400, 4500) if not has_heat(13, x, 2686))
    response = server.get(f'/tiles/run/hot/13/{x}/2686.png?px=256')
    assert response.status_code == 200
    assert png_size(response.content) == (256, 256)
    server.get(f'/tiles/run/hot/13/{x}/2686.png?px=256')
    assert strava.counters['tiles'] == 1


def test_concurrent_requests_for_one_missing_tile_fetch_it_once(server, strava):
    strava.tile_latency = 0.3
    z, x, y = heat_tile()
    with ThreadPoolExecutor(5) as pool:  # a leader and the 4 followers a tile may have (see test_hardening)
        statuses = list(pool.map(lambda _: server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code, range(5)))
    assert statuses == [200] * 5
    assert strava.counters['tiles'] == 1


@pytest.mark.parametrize('path, part', [
    ('/tiles/bike/hot/13/1/1.png', 'activity'),
    ('/tiles/all/red/13/1/1.png', 'color'),
    ('/tiles/all/hot/19/1/1.png', 'z'),  # HEATMAP_MAX_ZOOM is 18
    ('/tiles/all/hot/20/1/1.png?px=256', 'z'),
    ('/tiles/all/hot/-1/1/1.png', 'z'),
    ('/tiles/all/hot/3/8/1.png', 'x'),
    ('/tiles/all/hot/3/1/8.png', 'y'),
    ('/tiles/all/hot/3/1/1.5.png', 'y'),
    ('/tiles/all/hot/3/x/1.png', 'x'),
    ('/tiles/all/hot/99999999999/1/1.png', 'z'),
    ('/tiles/all/hot/3/1/1.png?px=1024', 'px'),
    ('/tiles/all/hot/3/1/1@2x.png?px=256', 'px'),
    ('/tiles/sport_../hot/3/1/1.png', 'activity'),
    ('/tiles/all/hot/3/1.png', 'tile URLs look like'),
])
def test_bad_tile_requests_get_400_naming_the_bad_part(server, path, part):
    response = server.get(path)
    assert response.status_code == 400
    assert part in response.text
    assert response.headers['Content-Type'].startswith('text/plain')


def test_sport_layers_are_served(server):
    z, x, y = heat_tile()
    response = server.get(f'/tiles/sport_GravelRide/orange/{z}/{x}/{y}.png')
    assert response.status_code == 200
    assert png_label(response.content).startswith('sport_GravelRide/orange/')


def test_without_any_cookies_the_server_explains_itself(start_redirector, strava):
    server = start_redirector()
    assert 'import-cookies' in server.get('/').text
    response = server.get('/tiles/all/hot/13/4400/2686.png')
    assert response.status_code == 503
    assert response.headers['Retry-After'] == '60'
    assert 'no Strava cookies yet' in response.text
    assert server.health()['ok'] is False


def test_upstream_failure_serves_the_stale_copy_else_502(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_CACHE_TTL=0)
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200
    strava.tile_status = 500
    stale = server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    assert stale.status_code == 200 and png_label(stale.content).startswith('all/hot')
    assert server.get(f'/tiles/all/hot/{z}/{x + 1}/{y}.png').status_code == 502


def test_upstream_that_hangs_gets_504_within_the_timeout(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_UPSTREAM_TIMEOUT=1)
    strava.tile_hang = True
    response = server.get('/tiles/all/hot/13/4400/2686.png', timeout=10)
    assert response.status_code == 504
    assert response.elapsed.total_seconds() < 3
    healthz = server.get('/healthz', timeout=2)  # answers at once, and tells why new tiles fail
    assert healthz.status_code == 503 and 'Strava did not answer within 1 s' in healthz.json()['reason']


def test_cache_never_outlives_what_upstream_allows(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector()
    strava.tile_max_age = 0
    z, x, y = heat_tile()
    server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    assert strava.counters['tiles'] == 2


def test_public_template_serves_low_zooms_without_cookies(start_redirector, strava):
    server = start_redirector(STRAVA_PUBLIC_TILE_URL=strava.url + '/tiles/{activity}/{color}/{z}/{x}/{y}.png?px=256',
                              HEATMAP_PUBLIC_MAX_ZOOM=11)
    response = server.get('/tiles/all/hot/11/1000/700.png?px=256')
    assert response.status_code == 200
    assert strava.counters['public_tiles'] == 1
    assert server.get('/tiles/all/hot/12/2000/1400.png').status_code == 503


def test_redirect_mode_sends_signed_urls_an_upstream_that_accepts_them_serves(start_redirector, strava, tmp_path):
    strava.policy_scope = 'legacy'  # cookies from the era when the policy covered the query-signed tiles
    import_cookies(strava, tmp_path / 'data')
    legacy = strava.url + '/tiles-auth/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'
    public = strava.url + '/tiles/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'
    server = start_redirector(HEATMAP_MODE='redirect', STRAVA_TILE_URL=legacy, STRAVA_PUBLIC_TILE_URL=public)
    z, x, y = heat_tile()

    detailed = server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    assert detailed.status_code == 302
    location = detailed.headers['Location']
    assert location.startswith(strava.url + '/tiles-auth/all/hot/') and 'Signature=' in location
    assert requests.get(location, timeout=5).status_code == 200

    low = server.get('/tiles/all/hot/11/1000/700.png').headers['Location']
    assert low.startswith(strava.url + '/tiles/all/hot/11/1000/700.png')
    assert requests.get(low, timeout=5).status_code == 200
    assert requests.get(location.split('&Key-Pair-Id')[0], timeout=5).status_code == 401


def test_access_key_is_required_when_set(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ACCESS_KEY='s3cret & key')
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 403
    wrong = server.get(f'/tiles/all/hot/{z}/{x}/{y}.png?key=s3cret')
    assert wrong.status_code == 403 and 's3cret' not in wrong.text
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png', params={'key': 's3cret & key'}).status_code == 200


def test_tile_cache_stays_under_its_size_cap(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_CACHE_MAX_BYTES=60_000)
    for x in range(4400, 4460):
        assert server.get(f'/tiles/all/hot/13/{x}/2686.png?px=256').status_code == 200
    on_disk = sum(p.stat().st_size for p in (server.data_dir / 'tiles').rglob('*.png'))
    assert 0 < on_disk <= 60_000
    before = strava.counters['tiles']
    assert server.get('/tiles/all/hot/13/4459/2686.png?px=256').status_code == 200
    assert strava.counters['tiles'] == before, 'eviction removes the oldest tiles first'


def test_admin_import_needs_the_token_and_takes_an_export(start_redirector, strava):
    server = start_redirector(HEATMAP_ADMIN_TOKEN='let-me-in')
    export = cookie_export(strava)
    url = server.url + '/admin/cookies'
    assert requests.post(url, data=export, timeout=5).status_code == 403
    assert requests.post(url, data=export, headers={'Authorization': 'Bearer nope'}, timeout=5).status_code == 403
    junk = requests.post(url, data='hello', headers={'Authorization': 'Bearer let-me-in'}, timeout=5)
    assert junk.status_code == 400 and 'expected' in junk.text
    done = requests.post(url, data=export, headers={'Authorization': 'Bearer let-me-in'}, timeout=5)
    assert done.status_code == 200 and 'CloudFront cookies: all 3' in done.text
    assert server.health()['cookies']['valid'] is True


def test_admin_routes_are_off_without_a_token(server):
    response = requests.post(server.url + '/admin/refresh', timeout=5)
    assert response.status_code == 404 and 'HEATMAP_ADMIN_TOKEN' in response.text


# --- what a tile request may ask for (heatmap.layers, no server) ---

@pytest.mark.parametrize('parts, message', [
    (('run', 'blue', '3', '8', '1'), 'x must be between 0 and 7 at zoom 3, not 8'),
    (('run', 'blue', '3', '1', '8'), 'y must be between 0 and 7 at zoom 3, not 8'),
    (('run', 'blue', '3', 'one', '1'), "x must be a whole number, not 'one'"),
    (('run', 'blue', '3', '1', '1.5'), "y must be a whole number, not '1.5'"),
    (('run', 'blue', '3', '1', 'y' * 30), f"y must be a whole number, not {'y' * 20!r}"),
    (('run', 'blue', '000000003', '1', '1'), "z must be a whole number, not '000000003'"),
    (('run', 'blue', '16', '1', '1'), 'z must be between 0 and 15, not 16'),
    (('a' * 50, 'blue', '3', '1', '1'), f"unknown activity {'a' * 40!r}: use one of all, ride, run, water, winter "
                                        'or sport_<Type>'),
    (('run', 'c' * 50, '3', '1', '1'), f"unknown color {'c' * 40!r}: use one of hot, blue, purple, gray, bluered, "
                                       'orange, mobileblue, grayscale'),
    (('run', 'blue', '3', '1', '1', 'p' * 30), f"px must be 256 or 512, not {'p' * 20!r}"),
    (('run', 'blue', '3', '1', '1@2x', '256'), 'px cannot be combined with @2x'),
])
def test_a_bad_tile_is_refused_naming_the_bad_part_and_quoting_it_short(parts, message):
    with pytest.raises(BadTile) as refused:
        parse_tile(*parts)
    assert str(refused.value) == message


def test_the_last_tile_of_a_zoom_and_eight_digit_numbers_are_accepted():
    assert parse_tile('run', 'blue', '00000003', '7', '7', '') == Tile('run', 'blue', 3, 7, 7, False, 512)
    assert parse_tile('all', 'hot', '2', '3', '1', kind='personal').kind == 'personal'


@pytest.mark.parametrize('template, refusal', [
    ('ftp://h/{z}/{x}/{y}.png', 'must be an http(s) URL'),
    ('https:///{z}/{x}/{y}.png', 'must be an http(s) URL'),
    ('https://h/{z}/{x}/{y.png', 'is not a valid template (expected '),
    ('https://h/{z}/{x}.png', 'must contain {z}, {x} and {y} and only the placeholders activity, athlete_id, color, '
                              's, suffix, x, y, z'),
    ('https://h/{z}/{x}/{y}/{secret}.png', 'must contain {z}, {x} and {y} and only the placeholders'),
])
def test_a_tile_template_that_cannot_make_tile_urls_is_refused_saying_why(template, refusal):
    with pytest.raises(ValueError) as refused:
        check_template(template, 'STRAVA_TILE_URL')
    assert str(refused.value).startswith('STRAVA_TILE_URL ') and refusal in str(refused.value)
    assert check_template('http://h/{z}/{x}/{y}.png', 'X') == 'http://h/{z}/{x}/{y}.png'


def test_upstream_urls_spread_over_three_hosts_and_ask_for_256_px_tiles_once():
    hosts = [upstream_url('https://{s}.h/{z}/{x}/{y}', Tile('all', 'hot', 2, x, 2))[8] for x in range(3)]
    assert hosts == ['c', 'a', 'b']
    small = Tile('all', 'hot', 1, 1, 0, px=256)
    assert upstream_url('https://h/{z}/{x}/{y}.png?v=19', small) == 'https://h/1/1/0.png?v=19&px=256'
    assert upstream_url('https://h/{z}/{x}/{y}.png?px=256', small) == 'https://h/1/1/0.png?px=256'
    assert upstream_url('https://h/{athlete_id}/{z}/{x}/{y}', small) == 'https://h//1/1/0?px=256'
    assert upstream_url('https://h/{athlete_id}/{z}/{x}/{y}', Tile('all', 'hot', 1, 1, 0), '7') == 'https://h/7/1/1/0'


def test_png_size_reads_any_real_png_and_refuses_a_damaged_header():
    sizes = (256, 512, 1024)
    assert [layers.png_size(transparent_png(size)) for size in sizes] == [(size, size) for size in sizes]
    damaged = bytearray(transparent_png(256))
    damaged[20] ^= 1  # the width, no longer matching the header's CRC
    assert layers.png_size(bytes(damaged)) is None
    assert layers.png_size(b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDX' + transparent_png(256)[16:]) is None
    assert layers.png_size(transparent_png(256)[:30]) is None
    header = struct.pack('>IIBBBBB', 2 ** 31 + 5, 2 ** 31 + 5, 8, 6, 0, 0, 0)
    huge = (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + header
            + struct.pack('>I', zlib.crc32(b'IHDR' + header)))
    assert layers.png_size(huge) == (2 ** 31 + 5, 2 ** 31 + 5), 'a size past 2 GPx is read as it is, and refused'
