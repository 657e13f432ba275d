"""Presets for the navigator apps, made for this server's address and access key.

Each app gets its own placeholder syntax and rules, from the apps' own sources and manuals:

- OsmAnd: ``{0}/{1}/{2}`` (zoom, x, y) through Java's MessageFormat, where ``'`` starts a quote:
  everything but the placeholders is percent-encoded so no ``'``, ``{`` or ``}`` reaches it.
  ``.sqlitedb`` with ``tilenumbering='simple'`` (otherwise zooms are stored as 17 - z).
- Locus: zooms are ``z + 8`` with ``<zoomPart>{z}-8</zoomPart>``; provider ids >= 1000.
- Guru Maps: ``{$z}/{$x}/{$y}``, ``overlay="true"``. OruxMaps: ``{$z}/{$x}/{$y}``, unique ``uid``.
- JOSM: ``{zoom}/{x}/{y}``, entries in the ``maps-1.0`` namespace, and ``tms[min,max]:URL``.
- QGIS: ``{z}/{x}/{y}`` in a ``qgsXYZTilesConnections`` file.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import segno
from bottle import SimpleTemplate

from heatmap.layers import BadTile, parse_tile
from heatmap.packs.formats import create_osmand_tables, osmand_info

TEMPLATES = Path(__file__).resolve().parent / 'templates'
DEFAULT_LAYERS = ('all/hot', 'ride/hot', 'run/hot', 'water/hot', 'winter/hot')
TILE_SIZE = 256
MIN_ZOOM = 1
MAX_ZOOM = 18  # HEATMAP_MAX_ZOOM's default: zooms above Strava's 15 are overzoomed
PLACEHOLDERS = {  # app style -> (zoom, x, y)
    'xyz': ('{z}', '{x}', '{y}'),
    'osmand': ('{0}', '{1}', '{2}'),
    'dollar': ('{$z}', '{$x}', '{$y}'),
    'josm': ('{zoom}', '{x}', '{y}'),
}
LOCUS_ZOOM_OFFSET = 8
FIRST_ID = 7_842_000  # Locus wants ids >= 1000 and OruxMaps unique uids; high to avoid other custom maps
CACHE_MINUTES = 7 * 24 * 60
CACHED_CONTEXTS = 8  # rendered pages kept: one per address, key and layers asked for (one or two in practice)


@dataclass(frozen=True)
class Layer:
    activity: str
    color: str
    kind: str = 'global'  # or 'personal': the athlete's own heatmap, at /personal/

    @property
    def route(self) -> str:
        return 'tiles' if self.kind == 'global' else self.kind

    @property
    def slug(self) -> str:
        """
        >>> Layer('sport_GravelRide', 'blue').slug, Layer('ride', 'hot', 'personal').slug
        ('sport_GravelRide-blue', 'personal-ride-hot')
        """
        return f'{self.activity}-{self.color}' if self.kind == 'global' else f'{self.kind}-{self.activity}-{self.color}'

    def title(self, name: str) -> str:
        """
        >>> Layer('ride', 'hot').title('Strava heatmap'), Layer('ride', 'hot', 'personal').title('Strava heatmap')
        ('Strava heatmap: ride (hot)', 'Strava heatmap: my ride (hot)')
        """
        mine = 'my ' if self.kind == 'personal' else ''
        return f'{name}: {mine}{self.activity.removeprefix("sport_")} ({self.color})'


def parse_layers(extra: str, personal: bool = False) -> tuple[Layer, ...]:
    """The default layers plus ``activity/color`` pairs from a comma-separated setting, and with ``personal``
    the same layers of the athlete's own heatmap.

    >>> [l.slug for l in parse_layers('sport_GravelRide/blue, ride/hot')][-1]
    'sport_GravelRide-blue'
    >>> parse_layers('bike/hot')
    Traceback (most recent call last):
    ValueError: HEATMAP_PRESET_LAYERS: unknown activity 'bike': use one of all, ride, run, water, winter or sport_<Type>
    """
    layers: list[Layer] = []
    for item in [*DEFAULT_LAYERS, *(part.strip() for part in extra.split(',') if part.strip())]:
        activity, _, color = item.partition('/')
        try:
            parse_tile(activity, color or 'hot', '0', '0', '0')
        except BadTile as error:
            raise ValueError(f'HEATMAP_PRESET_LAYERS: {error}') from None
        layer = Layer(activity, color or 'hot')
        if layer not in layers:
            layers.append(layer)
    if personal:
        layers += [Layer(layer.activity, layer.color, 'personal') for layer in layers]
    return tuple(layers)


def safe_base(base_url: str) -> str:
    """The base URL with everything an app could misread percent-encoded (``'``, braces, spaces).

    >>> safe_base("https://maps.example.org/o'neil {x}/")
    'https://maps.example.org/o%27neil%20%7Bx%7D'
    """
    return quote(base_url.rstrip('/'), safe=":/?#[]@!$&()*+,;=%")


def is_local(base_url: str) -> bool:
    """
    >>> is_local('http://127.0.0.1:8080'), is_local('http://localhost'), is_local('http://maps.example.org')
    (True, True, False)
    """
    host = urlsplit(base_url).hostname or ''
    if host == 'localhost' or host.endswith('.local'):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


@dataclass(frozen=True)
class PresetContext:
    """What every preset is made from: where this server is, its key, the layers and the zoom range."""

    base_url: str
    key: str = ''
    layers: tuple[Layer, ...] = field(default_factory=lambda: parse_layers(''))
    name: str = 'Strava heatmap'
    min_zoom: int = MIN_ZOOM
    max_zoom: int = MAX_ZOOM

    @property
    def base(self) -> str:
        return safe_base(self.base_url)

    def key_query(self, first: bool = True) -> str:
        """``?key=…`` (or ``&key=…``) when a key is set, percent-encoded so no app sees a ``'`` or ``&``."""
        return f"{'?' if first else '&'}key={quote(self.key, safe='')}" if self.key else ''

    def tile_url(self, layer: Layer, style: str = 'xyz') -> str:
        """The tile URL template in an app's placeholder style.

        >>> PresetContext('https://h', key="a&b'").tile_url(Layer('all', 'hot'), 'osmand')
        'https://h/tiles/all/hot/{0}/{1}/{2}.png?px=256&key=a%26b%27'
        """
        z, x, y = PLACEHOLDERS[style]
        return (f'{self.base}/{layer.route}/{layer.activity}/{layer.color}/{z}/{x}/{y}.png?px={TILE_SIZE}'
                f'{self.key_query(False)}')

    def file_url(self, file_name: str) -> str:
        return f'{self.base}/presets/{quote(file_name)}{self.key_query()}'

    def osmand_link(self, layer: Layer) -> str:
        """OsmAnd's one-tap link: opens its "Add online source" dialog filled in."""
        return 'https://osmand.net/add-tile-source?' + urlencode({
            'name': layer.title(self.name), 'url_template': self.tile_url(layer, 'osmand'),
            'min_zoom': self.min_zoom, 'max_zoom': self.max_zoom, 'tile_size': TILE_SIZE, 'ext': '.png',
            'expiration_time_minutes': CACHE_MINUTES}, quote_via=quote)

    def locus_link(self) -> str:
        """Locus's one-tap link: the ``locus-actions`` scheme in front of the install file's URL."""
        scheme, rest = self.file_url('locus-install.xml').split('://', 1)
        return f'locus-actions://{scheme}/{rest}'

    def josm_url(self, layer: Layer) -> str:
        return f'tms[{self.min_zoom},{self.max_zoom}]:{self.tile_url(layer, "josm")}'

    @property
    def plain_http(self) -> bool:
        """True when the presets would use http:// on a public host (OsmAnd does not follow http→https)."""
        return urlsplit(self.base_url).scheme == 'http' and not is_local(self.base_url)


@lru_cache(maxsize=16)
def _template(name: str) -> SimpleTemplate:
    """A template, read and compiled once."""
    return SimpleTemplate((TEMPLATES / name).read_text(encoding='utf-8'))


def _render(template: str, context: PresetContext, **extra) -> bytes:
    return _template(template).render(ctx=context, LOCUS_ZOOM_OFFSET=LOCUS_ZOOM_OFFSET, FIRST_ID=FIRST_ID,
                                      CACHE_MINUTES=CACHE_MINUTES, TILE_SIZE=TILE_SIZE, **extra).encode('utf-8')


@lru_cache(maxsize=CACHED_CONTEXTS * 8)
def osmand_sqlitedb(context: PresetContext, layer: Layer) -> bytes:
    """An empty OsmAnd online tile source: the ``info`` row OsmAnd reads and its ``tiles`` table (made once per
    context and layer: a database file takes ~15 ms)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / 'source.sqlitedb'
        with sqlite3.connect(path) as db:
            create_osmand_tables(db, osmand_info(layer.title(context.name), context.min_zoom, context.max_zoom,
                                                 TILE_SIZE, context.tile_url(layer, 'osmand'), str(CACHE_MINUTES)))
        db.close()
        return path.read_bytes()


@dataclass(frozen=True)
class PresetFile:
    name: str
    app: str
    content_type: str
    make: Callable[[PresetContext], bytes]


def preset_files(context: PresetContext) -> list[PresetFile]:
    """Every downloadable preset, in the order the presets page lists them."""
    files = []
    for layer in context.layers:
        files.append(PresetFile(f'osmand-{layer.slug}.sqlitedb', 'osmand', 'application/octet-stream',
                                lambda ctx, layer=layer: osmand_sqlitedb(ctx, layer)))
        files.append(PresetFile(f'osmand-{layer.slug}.metainfo', 'osmand', 'text/plain; charset=utf-8',
                                lambda ctx, layer=layer: _render('osmand.metainfo.tpl', ctx, layer=layer)))
    files += [
        PresetFile('locus-strava-heatmap.xml', 'locus', 'application/xml', lambda ctx: _render('locus.xml.tpl', ctx)),
        PresetFile('locus-install.xml', 'locus', 'application/xml',
                   lambda ctx: _render('locus-install.xml.tpl', ctx)),
    ]
    for layer in context.layers:
        files.append(PresetFile(f'gurumaps-{layer.slug}.ms', 'gurumaps', 'application/xml',
                                lambda ctx, layer=layer: _render('gurumaps.ms.tpl', ctx, layer=layer)))
    files += [
        PresetFile('oruxmaps-onlinemapsources.xml', 'oruxmaps', 'application/xml',
                   lambda ctx: _render('oruxmaps.xml.tpl', ctx)),
        PresetFile('josm-imagery.xml', 'josm', 'application/xml', lambda ctx: _render('josm.xml.tpl', ctx)),
        PresetFile('qgis-xyz-connections.xml', 'qgis', 'application/xml', lambda ctx: _render('qgis.xml.tpl', ctx)),
    ]
    return files


def find(context: PresetContext, name: str) -> PresetFile | None:
    return next((f for f in preset_files(context) if f.name == name), None)


def qr_svg(link: str) -> str:
    """An inline SVG QR code of ``link``, for a phone to pick up from a desktop screen."""
    return segno.make(link, error='m').svg_inline(scale=3, dark='#111', light='#fff')


@lru_cache(maxsize=CACHED_CONTEXTS)
def page(context: PresetContext) -> str:
    """The /presets/ page: what to download for each app, where to put it, one-tap links with QR codes.

    Rendered once per context: its QR codes take ~50 ms each (segno tries eight masks on each).
    """
    return _render('index.html.tpl', context, files=preset_files(context), qr_svg=qr_svg).decode('utf-8')


def write_all(context: PresetContext, out: Path) -> list[Path]:
    """Write every preset and the page (as index.html) to ``out``: for `redirector.py presets`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for preset in preset_files(context):
        path = out / preset.name
        path.write_bytes(preset.make(context))
        written.append(path)
    (out / 'index.html').write_text(page(context), encoding='utf-8')
    return [*written, out / 'index.html']
