"""Presets, read the way each app reads them: the URL an app would request must be this server's tile URL."""

from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from tests.conftest import redirector_env, run_cli
from tests.test_tiles import import_cookies

KEY = "k&'ey {1}"
ADMIN_TOKEN = 'admin-token-not-for-presets'
NAME = "Mike's & Co"
PUBLIC = 'https://maps.example.org/heat'
PROXY_HEADERS = {'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'maps.example.org', 'X-Forwarded-Prefix': '/heat'}
GLOBAL = {('all', 'hot'), ('ride', 'hot'), ('run', 'hot'), ('water', 'hot'), ('winter', 'hot'),
          ('sport_GravelRide', 'blue')}
# (route, activity, color): the imported cookies name the athlete, so the personal heatmap is offered too
LAYERS = {('tiles', *layer) for layer in GLOBAL} | {('personal', *layer) for layer in GLOBAL}
MAX_ZOOM = 18  # HEATMAP_MAX_ZOOM's default: beyond Strava's 15 by overzoom


def slug(route: str, activity: str, color: str) -> str:
    return f'{activity}-{color}' if route == 'tiles' else f'{route}-{activity}-{color}'


def title(route: str, activity: str, color: str) -> str:
    return f'{NAME}: {"my " if route == "personal" else ""}{activity.removeprefix("sport_")} ({color})'


# --- how the apps turn a template into a URL ----------------------------------------------------

def message_format(pattern: str, *args) -> str:
    """java.text.MessageFormat as OsmAnd uses it: ' quotes, '' is one quote, {n} is argument n."""
    out, i, quoted = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            if pattern[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            quoted = not quoted
        elif quoted:
            out.append(char)
        elif char == '{':
            end = pattern.find('}', i)
            if end < 0:
                raise ValueError('Unmatched braces in the pattern.')
            if not pattern[i + 1:end].isdigit():
                raise ValueError(f"can't parse argument number: {pattern[i + 1:end]}")
            out.append(str(args[int(pattern[i + 1:end])]))
            i = end
        else:
            out.append(char)
        i += 1
    return ''.join(out)


def osmand_url(template: str, z: int, x: int, y: int) -> str:
    """OsmAnd's normalizeUrl, then MessageFormat with zoom, x, y."""
    for index, name in enumerate('zxy'):
        template = template.replace(f'{{${name}}}', f'{{{index}}}').replace(f'{{{name}}}', f'{{{index}}}')
    return message_format(template, z, x, y)


def substitute(template: str, z: int, x: int, y: int, names=('{z}', '{x}', '{y}')) -> str:
    for name, value in zip(names, (z, x, y)):
        template = template.replace(name, str(value))
    assert '{' not in template, f'unresolved placeholder in {template}'
    return template


DOLLAR = ('{$z}', '{$x}', '{$y}')
JOSM = ('{zoom}', '{x}', '{y}')


def sample(z: int) -> tuple[int, int]:
    return int(2 ** z * 0.53), int(2 ** z * 0.36)


# --- checking a concrete URL -----------------------------------------------------------------------

def check_url(server, url: str, layer: tuple[str, str], z: int, x: int, y: int) -> None:
    """The URL is this server's tile URL with the key, and the server answers it with a PNG."""
    parts = urlsplit(url)
    assert f'{parts.scheme}://{parts.netloc}' == 'https://maps.example.org'
    assert parts.path == f'/heat/{layer[0]}/{layer[1]}/{layer[2]}/{z}/{x}/{y}.png'
    assert parse_qs(parts.query) == {'px': ['256'], 'key': [KEY]}
    response = server.get(f"{parts.path.removeprefix('/heat')}?{parts.query}")  # the proxy strips /heat
    assert response.status_code == 200, response.text
    assert response.headers['Content-Type'] == 'image/png' and response.content.startswith(b'\x89PNG')


def check_template(server, layer, to_url, min_zoom: int, max_zoom: int) -> None:
    assert (min_zoom, max_zoom) == (1, MAX_ZOOM)
    for z in (min_zoom, 13, max_zoom):
        x, y = sample(z)
        check_url(server, to_url(z, x, y), layer, z, x, y)


def layer_of(url: str) -> tuple[str, str, str]:
    route, activity, color = re.search(r'/(tiles|personal)/([^/]+)/([^/]+)/', url).groups()
    return route, activity, color


@pytest.fixture
def server(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    return start_redirector(HEATMAP_ACCESS_KEY=KEY, HEATMAP_PRESET_NAME=NAME, HEATMAP_ADMIN_TOKEN=ADMIN_TOKEN,
                            HEATMAP_PRESET_LAYERS='sport_GravelRide/blue', HEATMAP_TRUSTED_PROXIES='127.0.0.1')


def download(server, name: str) -> bytes:
    response = server.get(f'/presets/{name}', params={'key': KEY}, headers=PROXY_HEADERS)
    assert response.status_code == 200, response.text
    return response.content


def presets_page(server) -> str:
    response = server.get('/presets/', params={'key': KEY}, headers=PROXY_HEADERS)
    assert response.status_code == 200
    return response.text


def xml(data: bytes):
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False))


# --- the formats --------------------------------------------------------------------------------------

def test_osmand_sqlitedb_as_osmand_reads_it(server, tmp_path):
    for layer in LAYERS:
        path = tmp_path / f'{slug(*layer)}.sqlitedb'
        path.write_bytes(download(server, f'osmand-{slug(*layer)}.sqlitedb'))
        db = sqlite3.connect(path)
        db.row_factory = sqlite3.Row
        info = db.execute('SELECT * FROM info').fetchone()
        columns = [row[1] for row in db.execute('PRAGMA table_info(tiles)')]
        db.close()
        assert columns == ['x', 'y', 'z', 's', 'image', 'time']
        assert info['tilenumbering'] == 'simple', 'otherwise OsmAnd inverts the zooms (17 - z)'
        assert info['timecolumn'] == 'yes' and int(info['expireminutes']) > 0
        assert info['title'] == title(*layer)
        assert int(info['tilesize']) == 256 and info['inverted_y'] == '0' and info['ellipsoid'] == '0'
        check_template(server, layer, lambda z, x, y: osmand_url(info['url'], z, x, y),
                       int(info['minzoom']), int(info['maxzoom']))


def test_osmand_metainfo_as_osmand_reads_it(server):
    for layer in LAYERS:
        lines = download(server, f'osmand-{slug(*layer)}.metainfo').decode().splitlines()
        meta, key = {}, None
        for line in (line.strip() for line in lines):
            if line.startswith('['):
                key = line[1:-1].lower()
            elif key and line:
                meta[key], key = line, None
        assert meta['ext'] == '.png' and meta['tile_size'] == '256'
        check_template(server, layer, lambda z, x, y: osmand_url(meta['url_template'], z, x, y),
                       int(meta['min_zoom']), int(meta['max_zoom']))


def test_osmand_one_tap_links_as_osmand_reads_them(server):
    links = re.findall(r'href="(https://osmand\.net/add-tile-source\?[^"]+)"', presets_page(server))
    assert len(links) == len(LAYERS)
    for link in links:
        query = parse_qs(urlsplit(link.replace('&amp;', '&')).query)  # Android: percent-decoded, + is a space
        params = {name: values[0] for name, values in query.items()}
        assert params['name'].startswith(NAME + ': ')
        template = params['url_template']
        check_template(server, layer_of(template), lambda z, x, y: osmand_url(template, z, x, y),
                       int(params['min_zoom']), int(params['max_zoom']))


def test_locus_providers_with_its_zoom_offset(server):
    providers = xml(download(server, 'locus-strava-heatmap.xml'))
    ids = [int(p.get('id')) for p in providers.iter('provider')]
    assert len(ids) == len(set(ids)) == len(LAYERS) and min(ids) >= 1000
    for provider in providers.iter('provider'):
        assert provider.findtext('zoomPart') == '{z}-8'
        assert provider.findtext('name') == NAME
        template = provider.findtext('url')
        locus_min, locus_max = int(provider.findtext('zoomMin')), int(provider.findtext('zoomMax'))
        # Locus's own zoom is the standard one + 8; zoomPart turns it back into the {z} of the URL
        check_template(server, layer_of(template), lambda z, x, y: substitute(template, (z + 8) - 8, x, y),
                       locus_min - 8, locus_max - 8)


def test_locus_one_tap_install_downloads_the_providers(server):
    link = re.search(r'href="(locus-actions://[^"]+)"', presets_page(server)).group(1).replace('&amp;', '&')
    scheme, rest = link.removeprefix('locus-actions://').split('/', 1)
    install_url = f'{scheme}://{rest}'
    assert install_url.startswith(PUBLIC + '/presets/locus-install.xml?')
    actions = xml(server.get(urlsplit(install_url).path.removeprefix('/heat') + '?' + urlsplit(install_url).query,
                             headers=PROXY_HEADERS).content)
    download_action = actions.find('download')
    assert download_action.findtext('dest').startswith('/mapsOnline/custom/')
    assert download_action.findtext('after') == 'refreshMap'
    source = urlsplit(download_action.findtext('source'))
    assert parse_qs(source.query) == {'key': [KEY]}
    fetched = server.get(source.path.removeprefix('/heat') + '?' + source.query, headers=PROXY_HEADERS)
    assert fetched.content == download(server, 'locus-strava-heatmap.xml')


def test_guru_maps_overlays(server):
    for layer in LAYERS:
        source = xml(download(server, f'gurumaps-{slug(*layer)}.ms'))
        assert source.tag == 'customMapSource' and source.get('overlay') == 'true'
        assert source.findtext('name') == title(*layer)
        template = source.findtext('url')
        check_template(server, layer, lambda z, x, y: substitute(template, z, x, y, DOLLAR),
                       int(source.findtext('minZoom')), int(source.findtext('maxZoom')))


def test_oruxmaps_sources(server):
    sources = xml(download(server, 'oruxmaps-onlinemapsources.xml'))
    uids = [int(s.get('uid')) for s in sources.iter('onlinemapsource')]
    assert len(uids) == len(set(uids)) == len(LAYERS)
    for source in sources.iter('onlinemapsource'):
        assert source.findtext('projection') == 'MERCATORESFERICA'
        template = source.findtext('url')
        check_template(server, layer_of(template), lambda z, x, y: substitute(template, z, x, y, DOLLAR),
                       int(source.findtext('minzoom')), int(source.findtext('maxzoom')))


def test_josm_entries_validate_against_josms_schema(server, josm_maps_xsd):
    document = xml(download(server, 'josm-imagery.xml'))
    schema = etree.XMLSchema(etree.parse(str(josm_maps_xsd)))
    assert schema.validate(document), schema.error_log
    namespace = '{http://josm.openstreetmap.de/maps-1.0}'
    entries = document.findall(f'{namespace}entry')
    assert len(entries) == len(LAYERS)
    for entry in entries:
        assert entry.findtext(f'{namespace}type') == 'tms'
        template = entry.findtext(f'{namespace}url')
        check_template(server, layer_of(template), lambda z, x, y: substitute(template, z, x, y, JOSM),
                       int(entry.findtext(f'{namespace}min-zoom')), int(entry.findtext(f'{namespace}max-zoom')))


def test_josm_tms_urls_on_the_page(server):
    page = etree.HTML(presets_page(server))
    urls = [code.text for code in page.iter('code') if (code.text or '').startswith('tms[')]
    assert len(urls) == len(LAYERS)
    for url in urls:
        low, high, template = re.fullmatch(r'tms(?:\[(?:(\d+)[,-])?(\d+)\])?:(.*)', url).groups()
        check_template(server, layer_of(template), lambda z, x, y: substitute(template, z, x, y, JOSM),
                       int(low), int(high))


def test_qgis_connections(server):
    data = download(server, 'qgis-xyz-connections.xml')
    assert data.startswith(b'<!DOCTYPE connections>')
    connections = xml(data)
    assert connections.tag == 'qgsXYZTilesConnections'
    names = set()
    for tiles in connections.iter('xyztiles'):
        names.add(tiles.get('name'))
        template = tiles.get('url')
        check_template(server, layer_of(template), lambda z, x, y: substitute(template, z, x, y),
                       int(tiles.get('zmin')), int(tiles.get('zmax')))
    assert len(names) == len(LAYERS) and all(name.startswith(NAME) for name in names)


def test_web_map_templates_on_the_page(server):
    page = etree.HTML(presets_page(server))
    templates = [code.text for code in page.iter('code') if '{z}' in (code.text or '')]
    assert len(templates) == len(LAYERS)
    for template in templates:
        check_template(server, layer_of(template), lambda z, x, y: substitute(template, z, x, y), 1, MAX_ZOOM)


def test_every_one_tap_link_has_a_qr_code(server):
    page = presets_page(server)
    figures = re.findall(r'<figure>(.*?)</figure>', page, re.S)
    assert len(figures) == 2 * len(LAYERS) + 1  # OsmAnd and Guru Maps per layer, one Locus install
    assert all('<svg' in figure and 'class="segno"' in figure for figure in figures)


# --- access and warnings -------------------------------------------------------------------------------

def test_presets_hold_no_secret_but_the_key(server):
    stored = json.loads((server.data_dir / 'cookies.json').read_text())['state']['1']['cookies']
    secrets = [ADMIN_TOKEN, *(c['value'] for c in stored if len(c['value']) > 8)]
    names = re.findall(r'href="[^"]*/presets/([^"?]+)\?', presets_page(server))
    assert len(names) >= 2 * len(LAYERS) + 4
    for content in [presets_page(server).encode(), *(download(server, name) for name in set(names))]:
        assert not [secret for secret in secrets if secret.encode() in content]


def test_presets_need_the_key(server):
    for path in ('/presets/', '/presets/josm-imagery.xml', '/presets/nope'):
        assert server.get(path).status_code == 403
        assert server.get(path, params={'key': 'wrong'}).status_code == 403
    assert server.get('/presets/nope', params={'key': KEY}).status_code == 404


def test_plain_http_on_a_public_host_is_warned_about(start_redirector):
    public = start_redirector(HEATMAP_PUBLIC_URL='http://maps.example.org')
    assert 'id="http-warning"' in public.get('/presets/').text
    secure = start_redirector(HEATMAP_PUBLIC_URL='https://maps.example.org')
    assert 'id="http-warning"' not in secure.get('/presets/').text
    local = start_redirector()
    assert 'id="http-warning"' not in local.get('/presets/').text


def test_untrusted_forwarded_headers_do_not_change_the_presets(start_redirector):
    server = start_redirector()
    page = server.get('/presets/', headers={'X-Forwarded-Host': 'evil.example'}).text
    assert 'evil.example' not in page and server.url in page


def test_presets_command_writes_the_same_files(server, strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_ACCESS_KEY=KEY, HEATMAP_PRESET_NAME=NAME,
                         HEATMAP_PRESET_LAYERS='sport_GravelRide/blue')
    done = run_cli('presets', '--out', str(tmp_path / 'out'), '--public-url', PUBLIC, env=env)
    assert done.returncode == 0, done.stderr
    for name in ('josm-imagery.xml', 'locus-strava-heatmap.xml', 'osmand-all-hot.metainfo', 'gurumaps-run-hot.ms'):
        assert (tmp_path / 'out' / name).read_bytes() == download(server, name)
    assert (tmp_path / 'out' / 'index.html').exists()
