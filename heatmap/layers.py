"""Heatmap layers and tiles: what a tile request may ask for, and the upstream URL that answers it."""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from urllib.parse import urlsplit

ACTIVITIES = ('all', 'ride', 'run', 'water', 'winter')
SPORT_ACTIVITY = re.compile(r'sport_[A-Z][A-Za-z]{1,39}')
COLORS = ('hot', 'blue', 'purple', 'gray', 'bluered', 'orange', 'mobileblue', 'grayscale')
UPSTREAM_MAX_ZOOM = 15  # Strava's deepest zoom, for every tile size; deeper tiles are cut from there (overzoom)
TEMPLATE_FIELDS = {'activity', 'color', 'z', 'x', 'y', 'suffix', 's', 'athlete_id'}
KINDS = ('global', 'personal')


class BadTile(ValueError):
    """A tile request that names something that does not exist; the message says which part."""


@dataclass(frozen=True)
class Tile:
    activity: str
    color: str
    z: int
    x: int
    y: int
    retina: bool = False
    px: int = 512
    kind: str = 'global'  # or 'personal': the athlete's own heatmap
    athlete: str = ''  # whose personal heatmap (the tile service fills it in): tiles of two athletes never mix

    @property
    def size(self) -> int:
        """Pixels per side: 1024 for ``@2x``, else ``px``."""
        return 1024 if self.retina else self.px

    @property
    def suffix(self) -> str:
        return '@2x' if self.retina else ''

    @property
    def path(self) -> str:
        """A relative path naming this tile, safe to use under a cache directory.

        >>> Tile('ride', 'hot', 13, 4400, 2686, px=256).path
        'ride/hot/13/4400/2686-256.png'
        >>> Tile('ride', 'hot', 3, 4, 2, kind='personal', athlete='7').path
        'personal/7/ride/hot/3/4/2-512.png'
        """
        prefix = '' if self.kind == 'global' else f'{self.kind}/{self.athlete}/' if self.athlete else f'{self.kind}/'
        return f'{prefix}{self.activity}/{self.color}/{self.z}/{self.x}/{self.y}{self.suffix}-{self.size}.png'


def _number(text: str, part: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 8:
        raise BadTile(f'{part} must be a whole number, not {text[:20]!r}')
    return int(text)


def parse_tile(activity: str, color: str, z: str, x: str, y: str, px: str | None = None,
               max_zoom: int = UPSTREAM_MAX_ZOOM, kind: str = 'global') -> Tile:
    """Validate the parts of ``/tiles/{activity}/{color}/{z}/{x}/{y}.png`` (``y`` may end in ``@2x``).

    ``max_zoom`` is the deepest zoom served, overzoom included.

    >>> parse_tile('run', 'blue', '13', '4400', '2686@2x')
    Tile(activity='run', color='blue', z=13, x=4400, y=2686, retina=True, px=512, kind='global', athlete='')
    >>> parse_tile('run', 'blue', '3', '9', '0')
    Traceback (most recent call last):
    heatmap.layers.BadTile: x must be between 0 and 7 at zoom 3, not 9
    """
    if activity not in ACTIVITIES and not SPORT_ACTIVITY.fullmatch(activity):
        raise BadTile(f'unknown activity {activity[:40]!r}: use one of {", ".join(ACTIVITIES)} or sport_<Type>')
    if color not in COLORS:
        raise BadTile(f'unknown color {color[:40]!r}: use one of {", ".join(COLORS)}')
    retina = y.endswith('@2x')
    y = y.removesuffix('@2x')
    if px is None or px == '':
        size = 512
    elif px in ('256', '512'):
        size = int(px)
    else:
        raise BadTile(f'px must be 256 or 512, not {px[:20]!r}')
    if retina and size != 512:
        raise BadTile('px cannot be combined with @2x')
    zoom = _number(z, 'z')
    if zoom > max_zoom:
        raise BadTile(f'z must be between 0 and {max_zoom}, not {zoom}')
    column, row = _number(x, 'x'), _number(y, 'y')
    for name, value in (('x', column), ('y', row)):
        if value >= 2 ** zoom:
            raise BadTile(f'{name} must be between 0 and {2 ** zoom - 1} at zoom {zoom}, not {value}')
    return Tile(activity, color, zoom, column, row, retina, size, kind)


def check_template(template: str, setting: str) -> str:
    """Refuse a tile template that is not an http(s) URL with ``{z}``, ``{x}`` and ``{y}``.

    >>> check_template('https://example.com/{z}/{x}/{y}.png', 'STRAVA_TILE_URL')
    'https://example.com/{z}/{x}/{y}.png'
    >>> check_template('example.com/{z}', 'STRAVA_TILE_URL')
    Traceback (most recent call last):
    ValueError: STRAVA_TILE_URL must be an http(s) URL, not 'example.com/{z}'
    """
    if urlsplit(template).scheme not in ('http', 'https') or not urlsplit(template).hostname:
        raise ValueError(f'{setting} must be an http(s) URL, not {template!r}')
    try:
        fields = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f'{setting} is not a valid template ({error}): {template!r}') from None
    if not {'z', 'x', 'y'} <= fields or fields - TEMPLATE_FIELDS:
        raise ValueError(f'{setting} must contain {{z}}, {{x}} and {{y}} and only the placeholders '
                         f'{", ".join(sorted(TEMPLATE_FIELDS))}: {template!r}')
    return template


def upstream_url(template: str, tile: Tile, athlete_id: str = '') -> str:
    """The upstream URL for ``tile``; ``{s}`` spreads tiles over the a/b/c hosts; 256 px adds ``px=256``.

    >>> upstream_url('https://h/{activity}/{color}/{z}/{x}/{y}{suffix}.png?v=19', Tile('all', 'hot', 1, 1, 0))
    'https://h/all/hot/1/1/0.png?v=19'
    >>> upstream_url('https://{s}.h/{z}/{x}/{y}.png', Tile('all', 'hot', 1, 1, 0, px=256))
    'https://b.h/1/1/0.png?px=256'
    """
    url = template.format(activity=tile.activity, color=tile.color, z=tile.z, x=tile.x, y=tile.y,
                          suffix=tile.suffix, s='abc'[(tile.x + tile.y) % 3], athlete_id=athlete_id)
    if tile.px == 256 and not tile.retina and 'px=' not in url:
        url += ('&' if '?' in url else '?') + 'px=256'
    return url


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header chunk, checked by its CRC; None when ``data`` does not start as a PNG.

    >>> png_size(transparent_png(256)), png_size(PNG_SIGNATURE + b'junk' * 10), png_size(b'<Error>')
    ((256, 256), None, None)
    """
    header = data[8:33]
    if not data.startswith(PNG_SIGNATURE) or len(header) < 25 or header[:8] != b'\x00\x00\x00\rIHDR':
        return None
    if struct.unpack('>I', header[21:25])[0] != zlib.crc32(header[4:21]):
        return None
    return struct.unpack('>II', header[8:16])


@lru_cache(maxsize=4)
def transparent_png(size: int) -> bytes:
    """A fully transparent RGBA PNG, for places where Strava has no heat.

    >>> transparent_png(256)[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    rows = (b'\x00' + bytes(size * 4)) * size
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', size, size, 8, 6, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(rows, 9)) + chunk(b'IEND', b''))
