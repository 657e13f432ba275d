"""The status page in a real headless Chromium: it renders, previews tiles from this server, shows no secret."""

from __future__ import annotations

import json

import requests

from tests.conftest import PASSWORD, browser_page
from tests.test_tiles import import_cookies


def open_page(chromium, url, on_page=None):
    with browser_page(chromium) as (page, errors):
        tiles = []
        page.on('response', lambda response: '/tiles/' in response.url and tiles.append(response))
        page.goto(url)
        result = on_page(page) if on_page else None
        return page.content(), errors, [(t.url, t.status) for t in tiles], result


def test_status_page_previews_tiles_without_errors_or_secrets(start_redirector, strava, chromium, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token-do-not-show', HEATMAP_ACCESS_KEY='map-key',
                              STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD)

    def loaded_tiles(page):
        page.wait_for_function("document.querySelectorAll('#map img.leaflet-tile-loaded').length >= 6")
        return page.eval_on_selector_all('#map img.leaflet-tile-loaded', 'tiles => tiles.map(t => t.naturalWidth)')

    html, errors, tiles, widths = open_page(chromium, server.url + '/?key=map-key', loaded_tiles)

    assert errors == []
    assert tiles and all(url.startswith(server.url + '/tiles/all/hot/12/') for url, _ in tiles)
    assert all(status == 200 for _, status in tiles)
    assert set(widths) == {256}
    assert 'The map works' in html and 'left' in html
    stored = json.loads((server.data_dir / 'cookies.json').read_text())['state']['1']['cookies']
    for secret in ['admin-token-do-not-show', PASSWORD, *(c['value'] for c in stored if len(c['value']) > 8)]:
        assert secret not in html


def test_status_page_tells_what_to_do_after_a_one_time_code(start_redirector, strava, chromium):
    server = start_redirector(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', STRAVA_PASSWORD=PASSWORD,
                              CHROMIUM_PATH=chromium)
    server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=90)
    html, errors, _, _ = open_page(chromium, server.url + '/')
    assert 'one-time code' in html and 'redirector.py import-cookies export.json' in html
    assert 'paused' in html
    assert PASSWORD not in html


def test_admin_can_refresh_from_the_page(start_redirector, strava, chromium, tmp_path):
    import_cookies(strava, tmp_path / 'data', lifetime=7200)
    server = start_redirector(HEATMAP_ADMIN_TOKEN='let-me-in', HEATMAP_REFRESH_BEFORE=60)

    def press_refresh(page):
        page.fill('#token', 'let-me-in')
        page.click('#refresh')
        page.wait_for_function("document.getElementById('admin-result').textContent.includes('refresh requested')")

    _, errors, _, _ = open_page(chromium, server.url + '/', press_refresh)
    assert errors == []
    server.wait_until(lambda: server.health()['cookies']['source'] == 'session', timeout=15)


def test_admin_pairs_and_revokes_a_browser_from_the_page(start_redirector, strava, chromium, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ADMIN_TOKEN='let-me-in')

    def pair_a_browser(page):
        page.fill('#token', 'let-me-in')
        page.fill('#browser-name', 'phone')
        page.click('#pair')
        page.wait_for_function("document.getElementById('admin-result').textContent.includes('options page')")
        return page.text_content('#admin-result')

    _, errors, _, shown = open_page(chromium, server.url + '/', pair_a_browser)
    assert errors == []
    token = shown.strip().splitlines()[-1]
    pushed = requests.post(server.url + '/browser/cookies', data='[]', timeout=10,
                           headers={'Authorization': f'Bearer {token}'})
    assert pushed.status_code == 200 and pushed.json()['result'].startswith('nothing to judge'), 'the token works'

    def revoke(page):
        assert 'phone: last push' in page.text_content('#browsers')
        page.fill('#token', 'let-me-in')
        page.click('#browsers button.revoke')
        page.wait_for_function("document.getElementById('admin-result').textContent.includes('revoked')")

    _, errors, _, _ = open_page(chromium, server.url + '/', revoke)
    assert errors == []
    assert requests.post(server.url + '/browser/cookies', data='[]', timeout=10,
                         headers={'Authorization': f'Bearer {token}'}).status_code == 403
    assert token not in server.logs() and token not in server.get('/').text
