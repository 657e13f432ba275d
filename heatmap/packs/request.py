"""What a pack is made of: the request (layer, zooms, tile size, format, area), every part checked, and its estimate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..layers import KINDS, UPSTREAM_MAX_ZOOM, BadTile, Tile, parse_tile
from . import BadPackInput
from .area import Area, bbox_area, read_track, track_area
from .formats import WRITERS, PackInfo

FORMATS = tuple(WRITERS)
PERSONAL = 'personal'


def parse_layer(text: str) -> tuple[str, str, str]:
    """``activity/color`` (the global heatmap) or ``personal/activity/color``, checked as tile requests are: the
    kind, the activity and the color.

    >>> parse_layer('sport_GravelRide/blue'), parse_layer('personal/ride/hot')
    (('global', 'sport_GravelRide', 'blue'), ('personal', 'ride', 'hot'))
    >>> parse_layer('bike/hot')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: layer 'bike/hot': unknown activity 'bike': use one of all, ride, run, \
water, winter or sport_<Type>
    """
    parts = text.strip().split('/')
    kind = PERSONAL if len(parts) == 3 and parts[0] == PERSONAL else 'global'
    if len(parts) != (3 if kind == PERSONAL else 2):
        raise BadPackInput(f'layer must be activity/color, e.g. ride/hot, or personal/activity/color, '
                           f'not {text[:60]!r}')
    activity, color = parts[-2:]
    try:
        parse_tile(activity, color, '0', '0', '0', kind=kind)
    except BadTile as error:
        raise BadPackInput(f'layer {text[:60]!r}: {error}') from None
    return kind, activity, color


def parse_zooms(text: str, px: int, max_zoom: int = UPSTREAM_MAX_ZOOM) -> tuple[int, int]:
    """``10-15`` or ``12``, within what the server serves (``max_zoom``, overzoom included).

    >>> parse_zooms('10-15', 512), parse_zooms('12', 256), parse_zooms('14-17', 256, max_zoom=18)
    ((10, 15), (12, 12), (14, 17))
    >>> parse_zooms('10-16', 512)
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: zooms '10-16': z must be between 0 and 15, not 16
    >>> parse_zooms('-1-3', 256)
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: zooms '-1-3': give MIN-MAX with zooms from 0 to 15, e.g. 10-15
    """
    low, _, high = text.strip().partition('-')
    if not low.strip():
        raise BadPackInput(f'zooms {text[:40]!r}: give MIN-MAX with zooms from 0 to {max_zoom}, e.g. 10-15')
    try:
        zooms = [parse_tile('all', 'hot', part.strip(), '0', '0', str(px), max_zoom).z for part in (low, high or low)]
    except BadTile as error:
        raise BadPackInput(f'zooms {text[:40]!r}: {error}') from None
    if zooms[0] > zooms[1]:
        raise BadPackInput(f'zooms {text[:40]!r}: the first zoom must not be above the last, e.g. 10-15')
    return zooms[0], zooms[1]


def parse_px(text: str | int) -> int:
    """
    >>> parse_px('512')
    512
    >>> parse_px('1024')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: px must be 256 or 512, not '1024'
    """
    try:
        return parse_tile('all', 'hot', '0', '0', '0', str(text)).px
    except BadTile as error:
        raise BadPackInput(str(error)) from None


def parse_corridor(text: str | float | None) -> float | None:
    """Kilometres either side of the track; empty means none.

    >>> parse_corridor('2.5'), parse_corridor('')
    (2.5, None)
    >>> parse_corridor('wide')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: corridor must be a number of km either side of the track, e.g. 2, not 'wide'
    """
    if text is None or str(text).strip() == '':
        return None
    try:
        return float(text)
    except ValueError:
        raise BadPackInput(f'corridor must be a number of km either side of the track, e.g. 2, '
                           f'not {str(text)[:40]!r}') from None


@dataclass(frozen=True)
class PackRequest:
    """One layer, one area, a zoom range, a tile size and a file format: everything a pack is made from."""

    activity: str
    color: str
    min_zoom: int
    max_zoom: int
    px: int
    format: str
    area: Area
    kind: str = 'global'  # or 'personal': the athlete's own heatmap
    athlete: str = ''  # whose personal heatmap: a personal pack is one athlete's

    @property
    def layer(self) -> str:
        return f'{PERSONAL}/' * (self.kind == PERSONAL) + f'{self.activity}/{self.color}'

    @property
    def area_name(self) -> str:
        return self.area.name

    @property
    def zooms(self) -> range:
        return range(self.min_zoom, self.max_zoom + 1)

    def tile(self, z: int, x: int, y: int) -> Tile:
        return Tile(self.activity, self.color, z, x, y, px=self.px, kind=self.kind, athlete=self.athlete)

    @property
    def file_name(self) -> str:
        """A name for the finished file.

        >>> make_request('ride/hot', '10-15', bbox='7,46,7.2,46.1', format='osmand').file_name
        'strava-ride-hot-z10-15-256px.sqlitedb'
        >>> make_request('personal/run/blue', '12', bbox='7,46,7.2,46.1').file_name
        'strava-personal-run-blue-z12-12-256px.mbtiles'
        """
        return f'strava-{self.layer.replace("/", "-")}-z{self.min_zoom}-{self.max_zoom}-{self.px}px' \
               f'{WRITERS[self.format].extension}'

    def info(self) -> PackInfo:
        return PackInfo(f'Strava heatmap {self.layer}', f'{self.area_name}, zooms {self.min_zoom}-{self.max_zoom}',
                        self.area.bounds(), self.min_zoom, self.max_zoom, self.px)

    def describe(self) -> str:
        """The request in one line, for the log and the lock file.

        >>> make_request('ride/hot', '10-12', bbox='7,46,7.2,46.1').describe()
        'ride/hot, bbox 7,46,7.2,46.1, zooms 10-12, 256 px, mbtiles'
        """
        return f'{self.layer}, {self.area_name}, zooms {self.min_zoom}-{self.max_zoom}, {self.px} px, {self.format}'

    def to_json(self) -> dict:
        return {'kind': self.kind, 'athlete': self.athlete, 'activity': self.activity, 'color': self.color,
                'min_zoom': self.min_zoom, 'max_zoom': self.max_zoom, 'px': self.px, 'format': self.format,
                'area_name': self.area_name, 'area': self.area.to_json()}

    @classmethod
    def from_json(cls, data: dict, deepest: int = 22) -> PackRequest:
        """A request a job file kept, checked again as if it came from the page; ValueError when it is damaged."""
        kind = data.get('kind', 'global')
        if kind not in KINDS:
            raise ValueError(f'unknown layer kind {str(kind)[:40]!r}')
        try:
            layer = f'{PERSONAL}/' * (kind == PERSONAL) + f'{data["activity"]}/{data["color"]}'
            _, activity, color = parse_layer(layer)
            px = parse_px(data['px'])
            min_zoom, max_zoom = parse_zooms(f'{int(data["min_zoom"])}-{int(data["max_zoom"])}', px, deepest)
        except BadPackInput as error:
            raise ValueError(str(error)) from None
        if data['format'] not in WRITERS:
            raise ValueError(f'unknown format {str(data["format"])[:40]!r}')
        athlete = str(data.get('athlete', ''))
        if not (athlete == '' or athlete.isdigit()):
            raise ValueError('an athlete id that is not a number')
        return cls(activity, color, min_zoom, max_zoom, px, data['format'], Area.from_json(data['area']), kind,
                   athlete)

    def fingerprint(self) -> str:
        """Tells one request from another: a part file is only reused, and a finished pack only handed out again,
        for the same pack."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:24]


def make_request(layer: str, zooms: str, px: str | int = 256, format: str = 'mbtiles', bbox: str | None = None,
                 track: bytes | None = None, track_name: str = 'the track',
                 corridor_km: str | float | None = None, deepest: int = UPSTREAM_MAX_ZOOM) -> PackRequest:
    """A request from the command line's flags or the page's form, every part checked; BadPackInput names
    the first bad one. The area is a ``bbox`` (``W,S,E,N``) or a ``track`` file (GPX or GeoJSON) with a
    corridor of ``corridor_km`` either side; zooms go down to ``deepest`` (overzoom included).

    >>> make_request('ride/hot', '10-12', bbox='7,46,7.2,46.1').area_name
    'bbox 7,46,7.2,46.1'
    >>> make_request('ride/hot', '10-12', track=b'<gpx></gpx>', track_name='empty.gpx', corridor_km='2')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: empty.gpx holds no track, route, line or polygon: nothing to make a pack of
    """
    size = parse_px(px)
    kind, activity, color = parse_layer(layer)
    min_zoom, max_zoom = parse_zooms(zooms, size, deepest)
    if format not in WRITERS:
        raise BadPackInput(f'format must be {" or ".join(FORMATS)}, not {str(format)[:40]!r}')
    if (bbox is None) == (track is None):
        raise BadPackInput('give the area as a bbox (W,S,E,N) or as a track file with a corridor, one of the two')
    corridor = parse_corridor(corridor_km)
    if bbox is not None and corridor is not None:
        raise BadPackInput('a corridor goes with a track: a bbox is the area as it is, leave the corridor out')
    if bbox is not None:
        area = bbox_area(bbox)
    else:
        area = track_area(read_track(track, track_name), corridor, track_name)
    return PackRequest(activity, color, min_zoom, max_zoom, size, format, area, kind)


# --- the estimate ----------------------------------------------------------------------------

def duration(seconds: float) -> str:
    """
    >>> duration(7), duration(185), duration(4000)
    ('7 s', '3 min', '1 h 7 min')
    """
    if seconds < 60:
        return f'{seconds:.0f} s'
    if seconds < 3600:
        return f'{seconds / 60:.0f} min'
    return f'{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min'


def size_text(size: float) -> str:
    """
    >>> size_text(12_345), size_text(1_720_000), size_text(250_400_000)
    ('12 kB', '1.7 MB', '250 MB')
    """
    if size < 1e6:
        return f'{size / 1e3:.0f} kB'
    return f'{size / 1e6:.1f} MB' if size < 1e7 else f'{size / 1e6:.0f} MB'


@dataclass(frozen=True)
class Estimate:
    """Tiles per zoom (only the zooms counted when ``complete`` is False), how many are cached, how many requests
    to Strava the rest takes (tiles above zoom 15 are cut from a zoom-15 tile, one request for all its
    descendants), the size, and the time at ``rate`` requests a second."""

    tiles: dict[int, int]
    complete: bool
    max_zoom: int
    cached: int
    requests: int
    size_bytes: int
    rate: float
    centre: str = ''

    @property
    def total(self) -> int:
        return sum(self.tiles.values())

    @property
    def seconds(self) -> float:
        """Time for the requests to Strava, at the pack rate: cached tiles and tiles cut here are free."""
        return self.requests / self.rate

    def zoom_text(self) -> str:
        """
        >>> Estimate({10: 4, 11: 1200}, False, 13, 0, 0, 0, 4).zoom_text()
        'z10: 4, z11: 1,200, z12-13: not counted'
        """
        counted = ', '.join(f'z{zoom}: {count:,}' for zoom, count in self.tiles.items())
        if self.complete:
            return counted
        first = max(self.tiles, default=-1) + 1
        rest = f'z{first}' + (f'-{self.max_zoom}' if self.max_zoom > first else '')
        return f'{counted}, {rest}: not counted' if counted else f'{rest}: not counted'

    def count_text(self) -> str:
        return f'{self.total:,} tiles' if self.complete else f'more than {self.total:,} tiles'

    def summary(self) -> str:
        """One line: tiles per zoom, in all, cached, requests to Strava, size, time and where.

        >>> Estimate({10: 4, 11: 12}, True, 11, 6, 10, 200_000, 4, '46.93° N, 7.45° E').summary()
        '16 tiles (z10: 4, z11: 12), 6 already cached, 10 to fetch from Strava; about 200 kB; about 2 s at 4 \
tiles/s; centred on 46.93° N, 7.45° E'
        """
        where = f'; centred on {self.centre}' if self.centre else ''
        if not self.complete:
            return f'{self.count_text()} ({self.zoom_text()}){where}'
        return (f'{self.count_text()} ({self.zoom_text()}), {self.cached:,} already cached, {self.requests:,} to '
                f'fetch from Strava; about {size_text(self.size_bytes)}; about {duration(self.seconds)} at '
                f'{self.rate:g} tiles/s{where}')

    def to_json(self) -> dict:
        return {'tiles': {str(zoom): count for zoom, count in self.tiles.items()}, 'complete': self.complete,
                'max_zoom': self.max_zoom, 'total': self.total, 'cached': self.cached, 'requests': self.requests,
                'size_bytes': self.size_bytes, 'rate': self.rate, 'seconds': round(self.seconds, 1),
                'centre': self.centre, 'summary': self.summary()}

    @classmethod
    def from_json(cls, data: dict) -> Estimate:
        return cls({int(zoom): int(count) for zoom, count in data['tiles'].items()}, bool(data['complete']),
                   int(data['max_zoom']), int(data['cached']), int(data['requests']), int(data['size_bytes']),
                   float(data['rate']), str(data.get('centre', '')))
