"""The /packs/ page in a real Chromium, the answers of its routes to bad input, and a job that outlives the server."""

from __future__ import annotations

import json

import requests

from heatmap.packs.area import bbox_area, cover
from heatmap.packs.request import make_request
from tests import test_packs
from tests.conftest import browser_page
from tests.test_packs import BBOX, assert_holds_the_fakes_tiles

data_dir, imported_cookies = test_packs.data_dir, test_packs.imported_cookies  # fixtures: valid cookies, copied
KEY = 'map-key'
TRACK = {'type': 'LineString', 'coordinates': [[7.40, 46.90], [7.45, 46.93], [7.52, 46.95]]}


def zoom_counts(found) -> str:
    return ', '.join(f'z{zoom}: {len(tiles)}' for zoom, tiles in found.tiles.items())


def form(**fields) -> dict:
    """Fields as the page's FormData sends them (multipart); bytes values are files named after their field."""
    return {name: (f'{name}.geojson', value) if isinstance(value, bytes) else (None, value)
            for name, value in fields.items()}


def test_the_page_estimates_a_track_draws_its_cover_and_makes_a_pack_to_download(start_redirector, strava, chromium,
                                                                                 data_dir, tmp_path):
    server = start_redirector(data_dir=data_dir, HEATMAP_ACCESS_KEY=KEY, HEATMAP_PACK_RATE=50)
    track = tmp_path / 'aare.geojson'
    track.write_text(json.dumps(TRACK))
    request = make_request('ride/hot', '11-13', track=track.read_bytes(), corridor_km='1')
    found = cover(request.area, request.zooms, 10_000)
    estimate_done = "!['', 'counting tiles…'].includes(document.getElementById('answer').textContent)"

    with browser_page(chromium) as (page, errors):
        page.goto(f'{server.url}/presets/?key={KEY}')
        page.click('#packs a')  # the presets page links here, with the key
        page.select_option('#layer', 'ride/hot')
        page.check('input[value=track]')
        page.set_input_files('#track', str(track))
        page.fill('#corridor', '1')
        page.fill('#min-zoom', '11')
        page.fill('#max-zoom', '13')
        page.click('#estimate')
        page.wait_for_function(estimate_done)
        answer = page.text_content('#answer')
        drawn = page.locator('#map path.leaflet-interactive').count()
        page.click('#start')
        one_click_one_pack = page.is_disabled('#start')
        link = page.wait_for_selector('#jobs li[data-status=done] a', timeout=30_000)
        with page.expect_download() as download:
            link.click()
        pack = tmp_path / download.value.suggested_filename
        download.value.save_as(pack)

        page.check('input[value=view]')
        page.fill('#min-zoom', '12')
        page.fill('#max-zoom', '12')
        view = page.evaluate('[map.getBounds().getWest(), map.getBounds().getSouth(), map.getBounds().getEast(), '
                             'map.getBounds().getNorth()].map((v) => v.toFixed(5)).join(",")')
        page.click('#estimate')
        page.wait_for_function(estimate_done)
        view_answer = page.text_content('#answer')
        errors_before_refusal = list(errors)  # the refusal's 400 shows in the console as a failed load

        page.fill('#min-zoom', '14')
        page.click('#estimate')
        page.wait_for_function("document.getElementById('answer').className === 'bad'")
        refusal, start_disabled = page.text_content('#answer'), page.is_disabled('#start')

    assert errors_before_refusal == []
    assert answer.startswith(f'{found.total} tiles ({zoom_counts(found)}), ')
    assert drawn == len(found.tiles[13]) + 1, 'each tile of the deepest zoom and the corridor are drawn on the map'
    assert one_click_one_pack, 'a second click does not start the same pack again'
    assert pack.name == 'strava-ride-hot-z11-13-256px.mbtiles'
    assert_holds_the_fakes_tiles(pack, request)
    in_view = cover(bbox_area(view), range(12, 13), 10_000)
    assert view_answer.startswith(f'{in_view.total} tiles (z12: {in_view.total}), '), 'the area is the map view'
    assert refusal == "zooms '14-12': the first zoom must not be above the last, e.g. 10-15" and start_disabled


def test_pack_routes_answer_bad_input_with_one_line_and_fetch_nothing(start_redirector, strava, data_dir):
    (data_dir / 'packs').mkdir()
    (data_dir / 'packs' / '20260101-000000-abcdef.json').write_text('{"id": "20260101-000000-abc')  # damaged
    server = start_redirector(data_dir=data_dir, HEATMAP_ACCESS_KEY=KEY, HEATMAP_PACK_MAX_TILES=10)

    def post(path: str, key: str = KEY, **fields) -> requests.Response:
        return requests.post(f'{server.url}{path}', params={'key': key}, files=form(**fields), timeout=30)

    area = {'layer': 'ride/hot', 'zooms': '11-13'}
    refused = {
        'layer': post('/packs/estimate', **{**area, 'layer': 'bike/hot'}, bbox=BBOX),
        'outside': post('/packs/estimate', **area, bbox='-200,46.90,-190,46.96'),
        'inverted': post('/packs/estimate', **area, bbox='7.50,46.90,7.40,46.96'),
        'zooms': post('/packs/estimate', **{**area, 'zooms': '12-19'}, bbox=BBOX),
        'empty': post('/packs/estimate', **area, track=b'', corridor_km='2'),
        'unreadable': post('/packs/', **area, track=b'<gpx><trk>', corridor_km='2'),
        'corridor': post('/packs/estimate', **area, track=json.dumps(TRACK).encode(), corridor_km='0'),
        'no area': post('/packs/estimate', **area),
        'too large': post('/packs/', **area, bbox=BBOX),
    }
    for what, answer in refused.items():
        assert answer.status_code == 400 and answer.text.count('\n') == 1, (what, answer.text)
    assert refused['layer'].text.startswith("layer 'bike/hot': unknown activity 'bike'")
    assert refused['outside'].text.startswith('bbox west must be between -180 and 180 degrees, not -200')
    assert refused['zooms'].text.startswith("zooms '12-19': z must be between 0 and 18")
    assert refused['empty'].text.startswith('track.geojson is empty: give a GPX or GeoJSON file')
    assert refused['unreadable'].text.startswith('track.geojson is not a readable GPX file')
    assert refused['corridor'].text.startswith('corridor must be more than 0')
    assert refused['too large'].text.startswith('the pack would hold 15 tiles, more than the 10 allowed')
    estimate = post('/packs/estimate', **area, bbox=BBOX).json()
    assert estimate['allowed'] is False and estimate['estimate']['summary'].startswith('15 tiles')
    assert post('/packs/estimate', key='wrong', **area, bbox=BBOX).status_code == 403
    garbled = requests.post(f'{server.url}/packs/estimate', params={'key': KEY}, data=b'--x\r\n',
                            headers={'Content-Type': 'multipart/form-data; boundary=y'}, timeout=30)
    assert garbled.status_code == 400 and garbled.text.count('\n') == 1 and 'multipart/form-data' in garbled.text
    assert strava.counters['tiles'] == 0
    page = server.get(f'/packs/?key={KEY}')
    assert page.status_code == 200 and page.text.count('<li data-job=') == 1, 'no job was started'
    damaged = server.get(f'/packs/20260101-000000-abcdef.json?key={KEY}').json()
    assert damaged['status'] == 'failed' and damaged['error'].startswith('the job file cannot be read (JSONDecodeError')

    annotated = {'type': 'Feature', 'properties': {'notes': 'x' * 2 ** 21}, 'geometry': TRACK}  # 2 MB
    uploaded = post('/packs/estimate', **{**area, 'zooms': '11'}, track=json.dumps(annotated).encode(), corridor_km='1')
    assert uploaded.status_code == 200, uploaded.text
    assert requests.post(f'{server.url}/admin/cookies', data=b'x' * 2 ** 21, timeout=30).status_code == 413

    strava.tile_latency = 0.2
    assert post('/packs/', **{**area, 'zooms': '11-12'}, bbox=BBOX).status_code == 202
    busy = post('/packs/', **{**area, 'zooms': '11'}, bbox=BBOX)
    assert busy.status_code == 409 and busy.text.startswith('another pack is being made (ride/hot, bbox 7.40,')


def test_a_pack_job_goes_on_after_the_server_restarts(start_redirector, strava, data_dir, tmp_path):
    first = start_redirector(data_dir=data_dir, HEATMAP_PACK_RATE=10)
    started = requests.post(f'{first.url}/packs/', files=form(layer='ride/hot', zooms='11-14', bbox=BBOX,
                                                              format='osmand'), timeout=30)
    assert started.status_code == 202, started.text
    job = started.json()
    first.wait_until(lambda: first.get(f'/packs/{job["id"]}.json').json()['progress']['done'] >= 5)
    first.stop()
    assert json.loads((data_dir / 'packs' / f'{job["id"]}.json').read_text())['status'] == 'running'
    fetched_before = strava.counters['tiles']

    second = start_redirector(data_dir=data_dir, HEATMAP_PACK_RATE=50)
    finished = second.wait_until(lambda: (shown := second.get(f'/packs/{job["id"]}.json').json())['status'] != 'running'
                                 and shown, timeout=30)
    assert finished['status'] == 'done', finished['error']
    assert finished['created_at'] == job['created_at'] and finished['progress']['percent'] == 100
    estimate = finished['estimate']
    assert estimate['cached'] >= 5 and estimate['total'] == 45
    assert strava.counters['tiles'] - fetched_before == finished['progress']['fetched'] == \
        estimate['total'] - estimate['cached'], 'tiles cached before the restart were not fetched again'
    download = second.get(f'/packs/{job["id"]}/{finished["download_name"]}')
    assert download.status_code == 200
    assert download.headers['Content-Disposition'] == 'attachment; filename="strava-ride-hot-z11-14-256px.sqlitedb"'
    (tmp_path / 'bern.sqlitedb').write_bytes(download.content)
    assert_holds_the_fakes_tiles(tmp_path / 'bern.sqlitedb', make_request('ride/hot', '11-14', bbox=BBOX,
                                                                          format='osmand'))


def test_the_page_finds_a_place_draws_a_box_shows_the_time_left_and_cancels_and_deletes(start_redirector, strava, osm,
                                                                                        chromium, data_dir):
    strava.tile_latency = 0.2
    server = start_redirector(data_dir=data_dir, HEATMAP_ACCESS_KEY=KEY, HEATMAP_PACK_RATE=2,
                              **osm.server_settings())
    with browser_page(chromium) as (page, errors):
        page.goto(f'{server.url}/packs/?key={KEY}')
        layers = page.eval_on_selector_all('#layer option', 'options => options.map((o) => o.value)')
        attribution = page.text_content('.leaflet-control-attribution')
        page.fill('#place', 'Grindelwald')
        page.click('#search button[type=submit]')
        page.wait_for_selector('#places button')
        place = page.text_content('#places button')
        page.wait_for_function('(c => c.lat > 46.58 && c.lat < 46.66 && c.lng > 7.97 && c.lng < 8.12)(map.getCenter())')

        page.click('#draw')
        box = page.locator('#map').bounding_box()
        page.mouse.click(box['x'] + box['width'] * 0.3, box['y'] + box['height'] * 0.3)
        page.mouse.click(box['x'] + box['width'] * 0.7, box['y'] + box['height'] * 0.7)
        drawn_box = page.input_value('#bbox')
        page.fill('#bbox', BBOX)  # typed: the box a hiker knows
        page.fill('#min-zoom', '11')
        page.fill('#max-zoom', '13')
        page.click('#estimate')
        page.wait_for_function("document.getElementById('answer').textContent.includes('centred on')")
        answer = page.text_content('#answer')
        page.wait_for_function('(b => b.getWest() < 7.40 && b.getEast() > 7.50 && b.getSouth() < 46.90 && '
                               'b.getNorth() > 46.96)(map.getBounds())')  # the map moves to the area shown
        page.click('#start')
        running = page.wait_for_selector('#jobs li[data-status=running]:has-text("left")')
        progress = running.text_content()
        running.query_selector('button').click()  # Cancel
        page.wait_for_selector('#jobs li[data-status=cancelled]')
        cancelled = page.text_content('#jobs li[data-status=cancelled]')
        page.click('#jobs li[data-status=cancelled] button')  # Delete
        page.wait_for_function("!document.querySelector('#jobs li')")
    assert errors == []
    assert layers[:2] == ['all/hot', 'ride/hot'] and 'personal/all/hot' in layers, 'the athlete is known: my heatmap'
    assert 'OpenStreetMap' in attribution and osm.counters['tiles'] > 0, 'the base map is under the heat'
    assert place.startswith('Grindelwald') and osm.searches[-1]['q'] == 'Grindelwald'
    west, south, east, north = (float(value) for value in drawn_box.split(','))
    assert 7.97 < west < east < 8.12 and 46.58 < south < north < 46.66, 'the box drawn lies in the map shown'
    assert answer.startswith('15 tiles (z11: 2, z12: 4, z13: 9), 0 already cached, 15 to fetch from Strava; about ')
    assert answer.endswith('; centred on 46.93° N, 7.45° E')
    assert 'requests to Strava, about ' in progress and ' left' in progress
    assert cancelled == 'all/hot, bbox 7.40,46.90,7.50,46.96, zooms 11-13, mbtiles: cancelledDelete'
    assert [name for name in (data_dir / 'packs').iterdir() if name.name != '.lock'] == []
