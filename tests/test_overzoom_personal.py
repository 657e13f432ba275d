"""Beyond zoom 15 (tiles cut from their zoom-15 ancestor) and beyond the global heatmap (the athlete's own)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from heatmap.layers import Tile, transparent_png
from heatmap.overzoom import UnreadableImage, cut
from tests.conftest import REFRESH_POLL, redirector_env, run_cli
from tests.fake_strava import has_heat
from tests.test_refresh import no_second_refresh
from tests.test_tiles import import_cookies, png_label, png_size

ATHLETE = '12345678'  # the fake's rider, as its strava_remember_id says


def image(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body)).convert('RGBA')


def heat_ancestor(z: int = 15, start: int = 17600, y: int = 10750) -> tuple[int, int]:
    return next(x for x in range(start, start + 50) if has_heat(z, x, y)), y


def differs(a: Image.Image, b: Image.Image) -> float:
    """The mean absolute difference of two images' RGBA channels, 0–255."""
    histogram = ImageChops.difference(a, b).histogram()
    total = sum(value * (index % 256) for index, value in enumerate(histogram))
    return total / (a.width * a.height * 4)


@pytest.fixture
def server(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    return start_redirector()


def test_a_zoom_17_tile_is_the_matching_sixteenth_of_its_zoom_15_ancestor(server, strava):
    ax, ay = heat_ancestor()
    ancestor = server.get(f'/tiles/all/hot/15/{ax}/{ay}@2x.png')
    assert ancestor.status_code == 200 and png_label(ancestor.content) == f'all/hot/15/{ax}/{ay}@1024'
    source = image(ancestor.content)
    strava.counters.clear()
    for ox, oy in ((0, 0), (2, 2), (3, 0), (1, 3)):  # on the fake's diagonal and its top band, and off them
        x, y = ax * 4 + ox, ay * 4 + oy
        tile = server.get(f'/tiles/all/hot/17/{x}/{y}.png?px=256')
        assert tile.status_code == 200 and png_size(tile.content) == (256, 256)
        expected = source.crop((ox * 256, oy * 256, ox * 256 + 256, oy * 256 + 256))
        assert differs(image(tile.content), expected) < 2, (ox, oy)
        swapped = source.crop((oy * 256, ox * 256, oy * 256 + 256, ox * 256 + 256))
        flipped = source.crop((ox * 256, (3 - oy) * 256, ox * 256 + 256, (3 - oy) * 256 + 256))
        for wrong in (swapped, flipped):
            assert wrong.tobytes() == expected.tobytes() or differs(image(tile.content), wrong) > 2, (ox, oy)
    assert strava.counters['tiles'] == 0, 'the ancestor was cached: no upstream request'


def test_a_tile_above_15_costs_one_upstream_request_for_its_ancestor(server, strava):
    ax, ay = heat_ancestor(start=17700)
    first = server.get(f'/tiles/ride/blue/18/{ax * 8 + 5}/{ay * 8 + 5}.png')
    assert first.status_code == 200 and png_size(first.content) == (512, 512)
    assert strava.counters['tiles'] == 1
    sibling = server.get(f'/tiles/ride/blue/18/{ax * 8 + 6}/{ay * 8 + 6}.png')
    retina = server.get(f'/tiles/ride/blue/16/{ax * 2}/{ay * 2}@2x.png')
    assert sibling.status_code == 200 and png_size(retina.content) == (1024, 1024)
    assert strava.counters['tiles'] == 1, 'both come from the cached ancestor'
    again = server.get(f'/tiles/ride/blue/18/{ax * 8 + 5}/{ay * 8 + 5}.png')
    assert again.content == first.content and strava.counters['tiles'] == 1, 'cached like any tile'


def test_a_no_heat_ancestor_gives_a_transparent_tile(server, strava):
    ax = next(x for x in range(17600, 17700) if not has_heat(15, x, 10750))
    tile = server.get(f'/tiles/all/hot/17/{ax * 4 + 1}/{10750 * 4 + 1}.png?px=256')
    assert tile.status_code == 200 and png_size(tile.content) == (256, 256)
    assert image(tile.content).getextrema()[3] == (0, 0), 'fully transparent'
    assert strava.counters['tiles'] == 1


def test_zooms_beyond_the_maximum_are_a_400(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_MAX_ZOOM=16)
    assert server.get('/tiles/all/hot/16/35201/21501.png').status_code == 200
    refused = server.get('/tiles/all/hot/17/70402/43002.png')
    assert refused.status_code == 400 and 'z must be between 0 and 16' in refused.text


def test_the_personal_heatmap_is_served_with_the_athlete_id_from_the_cookies(server, strava):
    x, y = heat_ancestor(13, 4400, 2686)
    tile = server.get(f'/personal/ride/hot/13/{x}/{y}.png')
    assert tile.status_code == 200, tile.text
    assert png_label(tile.content) == f'personal/{ATHLETE}/ride/hot/13/{x}/{y}@512'
    assert strava.counters['personal_tiles'] == 1
    assert server.get(f'/personal/ride/hot/13/{x}/{y}.png').content == tile.content
    assert strava.counters['personal_tiles'] == 1, 'cached'
    deep = server.get(f'/personal/ride/hot/17/{x * 16 + 3}/{y * 16 + 3}.png?px=256')
    assert deep.status_code == 200 and png_size(deep.content) == (256, 256), 'overzoom applies too'
    assert server.get(f'/tiles/ride/hot/13/{x}/{y}.png').content != tile.content, 'apart from the global one'
    bad = server.get('/personal/ride/hot/13/99999/1.png')
    assert bad.status_code == 400 and 'x must be between' in bad.text


def test_a_401_from_the_personal_host_renews_the_cookies_like_a_403(start_redirector, strava, tmp_path, revoked):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_REFRESH_POLL=REFRESH_POLL)
    revoked()
    strava.counters.clear()
    x, y = heat_ancestor(13, 4410, 2686)
    tile = server.get(f'/personal/run/hot/13/{x}/{y}.png')
    assert tile.status_code == 200, tile.text
    assert strava.counters['personal_denied'] == 1
    no_second_refresh(server, strava)


def test_without_an_athlete_id_the_personal_route_says_what_to_set(start_redirector, strava, tmp_path):
    import json
    export = [c for c in json.loads(strava.cookie_export()) if c['name'] != 'strava_remember_id']
    run_cli('import-cookies', '-', env=redirector_env(strava, tmp_path / 'data'), stdin=json.dumps(export))
    server = start_redirector()
    answer = server.get('/personal/ride/hot/13/4401/2686.png')
    assert answer.status_code == 503 and 'STRAVA_ATHLETE_ID' in answer.text
    assert strava.counters['personal_tiles'] == 0
    with_id = start_redirector(data_dir=tmp_path / 'data', STRAVA_ATHLETE_ID=ATHLETE)
    assert with_id.get('/personal/ride/hot/13/4401/2686.png').status_code == 200


def test_personal_tiles_follow_their_athlete_when_the_cookies_change(server, strava, tmp_path):
    import json
    x, y = heat_ancestor(13, 4400, 2686)
    path = f'/personal/ride/hot/13/{x}/{y}.png'
    for _ in range(3):  # fetched, then from the disk and from memory if anything kept it there
        assert png_label(server.get(path).content) == f'personal/{ATHLETE}/ride/hot/13/{x}/{y}@512'
    other = [{**c, 'value': '23456789'} if c['name'] == 'strava_remember_id' else c
             for c in json.loads(strava.cookie_export())]  # another account logged in in the same browser
    done = run_cli('import-cookies', '--force', '-', env=redirector_env(strava, tmp_path / 'data'),
                   stdin=json.dumps(other))
    assert done.returncode == 0, done.stderr
    server.wait_until(lambda: png_label(server.get(path).content).startswith('personal/23456789/'), timeout=15)
    assert png_label(server.get(path).content) == f'personal/23456789/ride/hot/13/{x}/{y}@512'
    names = [p.name for p in (tmp_path / 'data' / 'tiles').rglob('personal-*.png')]
    assert sorted(names) == sorted(f'personal-{athlete}-ride-hot-13-{x}-{y}-512.png'
                                   for athlete in (ATHLETE, '23456789'))


def png_of(size: tuple[int, int], mode: str = 'RGBA') -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format='PNG')
    return out.getvalue()


@pytest.mark.parametrize('body, reason', [
    (png_of((9400, 9400), '1'), 'Strava sent a 9400 × 9400 px image for a 1024 px tile'),
    (png_of((13000, 13000), 'L'), 'Strava sent a 13000 × 13000 px image for a 1024 px tile'),
    (b'\x89PNG\r\n\x1a\n' + b'junk' * 1000, 'Strava sent a damaged PNG for a 1024 px tile'),
], ids=['huge', 'huge_greyscale', 'junk'])
def test_an_image_of_the_wrong_size_or_no_image_is_a_502_and_never_kept(server, strava, body, reason):
    x, y = heat_ancestor()
    strava.tile_body = body
    for child in range(2):
        answer = server.get(f'/tiles/all/hot/17/{x * 4 + child}/{y * 4}.png?px=256')
        assert answer.status_code == 502 and answer.text == reason + '\n'
    assert strava.counters['tiles'] == 2, 'nothing was kept: each child asked Strava again'
    assert list((server.data_dir / 'tiles').rglob('*.png')) == []
    strava.tile_body = None
    assert server.get(f'/tiles/all/hot/17/{x * 4}/{y * 4}.png?px=256').status_code == 200


def test_an_ancestor_that_cannot_be_decoded_is_a_502_and_asked_for_again(server, strava):
    x, y = heat_ancestor()
    good = png_of((1024, 1024))
    strava.tile_body = good[:60] + b'\x00' * 200 + good[-12:]  # the header says 1024 px; the pixels are junk
    answer = server.get(f'/tiles/all/hot/17/{x * 4}/{y * 4}.png?px=256')
    assert answer.status_code == 502 and answer.text.startswith("Strava's zoom-15 tile cannot be read (")
    assert answer.text.endswith('): not kept\n')
    strava.tile_body = None
    child = server.get(f'/tiles/all/hot/17/{x * 4 + 1}/{y * 4}.png?px=256')
    assert child.status_code == 200 and png_size(child.content) == (256, 256)
    assert strava.counters['tiles'] == 2, 'the damaged ancestor was asked for again, once'


# --- cutting a tile out of its ancestor (heatmap.overzoom, no server) ---

def quadrants(size: int) -> bytes:
    """An ancestor whose four quarters are red, green, blue and half-transparent white."""
    image = Image.new('RGBA', (size, size))
    half = size // 2
    for (left, top), colour in zip([(0, 0), (half, 0), (0, half), (half, half)],
                                   [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (255, 255, 255, 128)]):
        image.paste(colour, (left, top, left + half, top + half))
    out = io.BytesIO()
    image.convert('RGBA').save(out, format='PNG')
    return out.getvalue()


@pytest.mark.parametrize('ancestor_size', [256, 512, 1024])
def test_a_zoom_16_tile_is_the_matching_quarter_of_its_ancestor_scaled_to_its_size(ancestor_size):
    for (dx, dy), colour in zip([(0, 0), (1, 0), (0, 1), (1, 1)],
                                [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (255, 255, 255, 128)]):
        tile = Tile('all', 'hot', 16, 2 * 17600 + dx, 2 * 10750 + dy, px=512)
        with Image.open(io.BytesIO(cut(quadrants(ancestor_size), tile))) as image:
            assert image.format == 'PNG' and image.size == (512, 512) and image.mode == 'RGBA'
            assert image.getextrema() == tuple((c, c) for c in colour), (dx, dy)


def test_an_rgb_ancestor_gives_an_rgba_tile():
    out = io.BytesIO()
    Image.new('RGB', (512, 512), (9, 8, 7)).save(out, format='PNG')
    with Image.open(io.BytesIO(cut(out.getvalue(), Tile('all', 'hot', 16, 0, 0)))) as image:
        assert image.mode == 'RGBA' and image.getpixel((5, 5)) == (9, 8, 7, 255)


@pytest.mark.parametrize('ancestor_size', [256, 512, 1024])
def test_a_transparent_ancestor_gives_the_transparent_tile_of_the_tiles_size(ancestor_size):
    for tile in (Tile('all', 'hot', 16, 0, 0, px=256), Tile('all', 'hot', 17, 0, 0, retina=True)):
        assert cut(transparent_png(ancestor_size), tile) == transparent_png(tile.size)


@pytest.mark.parametrize('size, reason', [((300, 200), '300 × 200 px'), ((300, 300), '300 × 300 px'),
                                          ((256, 512), '256 × 512 px')])
def test_an_ancestor_of_a_size_strava_does_not_serve_is_unreadable_saying_its_size(size, reason):
    out = io.BytesIO()
    Image.new('RGBA', size).save(out, format='PNG')
    with pytest.raises(UnreadableImage, match=f'^{reason}$'):
        cut(out.getvalue(), Tile('all', 'hot', 16, 0, 0))


def test_an_ancestor_that_is_no_image_is_unreadable_saying_what_failed():
    with pytest.raises(UnreadableImage, match='^UnidentifiedImageError$'):
        cut(b'<Error>AccessDenied</Error>', Tile('all', 'hot', 16, 0, 0))
