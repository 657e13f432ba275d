"""The area of a pack: a bounding box, or a track (GPX, GeoJSON) with a corridor, and the tiles that cover it.

Whatever an upload holds, the work it makes is bounded:

- a track file is read without building a tree (GPX with expat, refusing DTDs), or with json, whose
  one call holds every other request meanwhile, from a GeoJSON file of at most ``MAX_GEOJSON_BYTES``;
  at most ``MAX_POINTS`` points are taken;
- the lines are simplified until at most ``MAX_VERTICES`` vertices are left, and the corridor is
  widened by the simplification's tolerance, so that no tile within the corridor is lost;
- the exact outline of a corridor is never built (around a track that crosses itself it can hold
  millions of vertices): a tile belongs to the pack when it comes within the corridor's width of the
  simplified track, found zoom by zoom from the top tile down, looking only at the children of the
  tiles found, and counting stops past the pack's limit.

Distances are measured in Web Mercator, the projection of the tiles themselves, where a tile is an
exact square: a ground distance ``d`` near latitude ``φ`` is ``d / cos φ`` there, and each tile is
tested with the scale of its own latitude (its pole-ward side, so that the test never misses a tile).
"""

from __future__ import annotations

import json
import math
import re
import time
from array import array
from dataclasses import dataclass
from xml.parsers import expat

import numpy
import shapely

from . import MAX_TRACK_BYTES, BadPackInput

MAX_CORRIDOR_KM = 100
MAX_POINTS = 500_000  # points read from a track file: a 2,000 km tour recorded every 10 m has 200,000
MAX_ELEMENTS = 8 * MAX_POINTS  # a point with its time, elevation and sensor data is half a dozen elements
MAX_VERTICES = 10_000  # vertices kept after simplification: what the cover and the job file work with
CORRIDOR_MARGIN = 1.01  # rounding and the projection's small drift over a corridor's width
MIN_TOLERANCE_M = 10
EARTH_RADIUS = 6_378_137.0  # Web Mercator's sphere
MAX_LATITUDE = 85.0511287798  # the latitude of the top and bottom edges of the tile pyramid
METRES_PER_DEGREE_LATITUDE = 110_574  # the shortest degree of latitude (at the equator): bounds never too small
COVER_SECONDS = 8.0  # the longest counting may take; in practice it takes well under a second
MAX_GEOJSON_DEPTH = 8  # GeometryCollections within GeometryCollections
# json reads a file in one go, holding every other request meanwhile (0.2 s for 5 MB here): GPX streams past.
MAX_GEOJSON_BYTES = 5 * 2 ** 20
# expat reads a tag in one go too (a tag of a million attributes holds every request for seconds); a GPX tag is
# a hundred bytes. A tag holds no '<', so that the search for a long one looks at each byte once.
LONGEST_TAG = 2 ** 16
LONG_TAG = re.compile(rb'<[^<>]{%d}' % LONGEST_TAG)


@dataclass(frozen=True)
class Cover:
    """The tiles over an area, per zoom. ``complete`` is False when counting stopped at the limit:
    then the zooms missing from ``tiles`` hold at least as many tiles as the last one counted."""

    tiles: dict[int, list[tuple[int, int]]]
    complete: bool

    @property
    def total(self) -> int:
        return sum(len(found) for found in self.tiles.values())


# --- Web Mercator ----------------------------------------------------------------------------

def mercator(lon, lat) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Longitude and latitude in degrees as Web Mercator metres (latitudes clamped to the tile pyramid).

    >>> x, y = mercator([0, 180], [0, 85.0511287798]); [round(v) for v in (*x, *y)]
    [0, 20037508, 0, 20037508]
    """
    lon = numpy.asarray(lon, dtype=float)
    lat = numpy.clip(numpy.asarray(lat, dtype=float), -MAX_LATITUDE, MAX_LATITUDE)
    return (EARTH_RADIUS * numpy.radians(lon),
            EARTH_RADIUS * numpy.log(numpy.tan(numpy.pi / 4 + numpy.radians(lat) / 2)))


def latitude(y) -> numpy.ndarray:
    """The latitude of a Web Mercator ``y``, in degrees.

    >>> round(float(latitude(mercator(0, 46.5)[1])), 6)
    46.5
    """
    return numpy.degrees(2 * numpy.arctan(numpy.exp(numpy.asarray(y, dtype=float) / EARTH_RADIUS)) - numpy.pi / 2)


def tile_boxes(zoom: int, xs: numpy.ndarray, ys: numpy.ndarray) -> tuple[numpy.ndarray, ...]:
    """West, south, east and north of tiles in Web Mercator metres.

    >>> [round(float(v[0])) for v in tile_boxes(1, numpy.array([1]), numpy.array([0]))]
    [0, 0, 20037508, 20037508]
    """
    size = 2 * math.pi * EARTH_RADIUS / 2 ** zoom
    west = -math.pi * EARTH_RADIUS + xs * size
    north = math.pi * EARTH_RADIUS - ys * size
    return west, north - size, west + size, north


def scale(lat_poleward: numpy.ndarray, reach_m: float) -> numpy.ndarray:
    """Web Mercator metres per ground metre within ``reach_m`` of a latitude, at its largest (pole-ward).

    >>> [round(float(v), 3) for v in scale(numpy.array([0.0, 60.0]), 0)]
    [1.0, 2.0]
    """
    furthest = numpy.minimum(numpy.abs(lat_poleward) + reach_m / METRES_PER_DEGREE_LATITUDE, MAX_LATITUDE)
    return 1 / numpy.cos(numpy.radians(furthest))


# --- areas -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Area:
    """Where a pack is: a box (``box``: west, south, east, north), or shapes with the ground distance around
    them that belongs to the area: ``lines`` (tracks, routes, lone points) within ``line_reach_m``, and
    ``polygons`` (their rings) within ``polygon_reach_m`` or inside them. Shapes are in lon/lat, simplified."""

    name: str
    box: tuple[float, float, float, float] | None = None
    lines: tuple = ()  # numpy arrays of (lon, lat) rows; one row is a lone point
    polygons: tuple = ()  # each a tuple of rings (numpy arrays of (lon, lat) rows), the outer ring first
    line_reach_m: float = 0.0
    polygon_reach_m: float = 0.0

    @property
    def reach_m(self) -> float:
        return max(self.line_reach_m if self.lines else 0, self.polygon_reach_m if self.polygons else 0)

    def bounds(self) -> tuple[float, float, float, float]:
        """West, south, east and north in degrees, the corridor included.

        >>> bbox_area('7,46,7.2,46.1').bounds()
        (7.0, 46.0, 7.2, 46.1)
        """
        if self.box:
            return self.box
        points = numpy.concatenate([*self.lines, *(ring for polygon in self.polygons for ring in polygon)])
        (west, south), (east, north) = points.min(axis=0), points.max(axis=0)
        reach = self.reach_m / METRES_PER_DEGREE_LATITUDE
        wide = reach / math.cos(math.radians(min(max(abs(south), abs(north)) + reach, MAX_LATITUDE)))
        return (max(-180.0, west - wide), max(-90.0, south - reach), min(180.0, east + wide), min(90.0, north + reach))

    def centre(self) -> str:
        """The middle of the area in words, so that a box given as latitude, longitude is seen at once.

        >>> bbox_area('7.40,46.90,7.50,46.96').centre(), bbox_area('-74.1,40.6,-73.8,40.9').centre()
        ('46.93° N, 7.45° E', '40.75° N, 73.95° W')
        """
        west, south, east, north = self.bounds()
        lat, lon = (south + north) / 2, (west + east) / 2
        return f'{abs(lat):.2f}° {"N" if lat >= 0 else "S"}, {abs(lon):.2f}° {"E" if lon >= 0 else "W"}'

    def vertices(self) -> int:
        return sum(len(line) for line in self.lines) + sum(len(ring) for polygon in self.polygons for ring in polygon)

    def geojson(self) -> dict:
        """The area for the page's map: the box, or the simplified shapes (the corridor is drawn by the tiles)."""
        if self.box:
            west, south, east, north = self.box
            return {'type': 'Polygon', 'coordinates': [[[west, south], [east, south], [east, north], [west, north],
                                                        [west, south]]]}
        geometries = [{'type': 'Point', 'coordinates': _rounded(line)[0]} if len(line) == 1 else
                      {'type': 'LineString', 'coordinates': _rounded(line)} for line in self.lines]
        geometries += [{'type': 'Polygon', 'coordinates': [_rounded(ring) for ring in polygon]}
                       for polygon in self.polygons]
        return {'type': 'GeometryCollection', 'geometries': geometries}

    def to_json(self) -> dict:
        """What a job file keeps of the area: the box, or the simplified shapes and their reach."""
        if self.box:
            return {'name': self.name, 'box': list(self.box)}
        return {'name': self.name, 'lines': [_rounded(line) for line in self.lines],
                'polygons': [[_rounded(ring) for ring in polygon] for polygon in self.polygons],
                'line_reach_m': self.line_reach_m, 'polygon_reach_m': self.polygon_reach_m}

    @classmethod
    def from_json(cls, data: dict) -> Area:
        """The area a job file kept; ValueError (or TypeError, KeyError) when it is damaged."""
        name = str(data['name'])[:200]
        if 'box' in data:
            return bbox_area(','.join(str(float(value)) for value in data['box']), name)
        area = cls(name, None, tuple(_points(line) for line in data['lines']),
                   tuple(tuple(_points(ring) for ring in polygon) for polygon in data['polygons']),
                   float(data['line_reach_m']), float(data['polygon_reach_m']))
        if not (area.lines or area.polygons) or area.vertices() > MAX_VERTICES * 2:
            raise ValueError('an area with no shapes, or far more vertices than an area is made of')
        if not all(0 <= reach <= MAX_CORRIDOR_KM * 2000 for reach in (area.line_reach_m, area.polygon_reach_m)):
            raise ValueError('an area reaching further than a corridor may')
        _check_in_world(area, 'the job')
        return area


def _rounded(points: numpy.ndarray) -> list[list[float]]:
    return numpy.round(points, 7).tolist()


def _points(rows) -> numpy.ndarray:
    points = numpy.asarray(rows, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points) or not numpy.isfinite(points).all():
        raise ValueError('a shape that is not a list of [longitude, latitude]')
    return points


def bbox_area(text: str, name: str | None = None) -> Area:
    """``W,S,E,N`` in degrees as a box.

    >>> bbox_area('13.30, 52.45, 13.55, 52.60').box
    (13.3, 52.45, 13.55, 52.6)
    >>> bbox_area('13.55,52.45,13.30,52.60')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: bbox is inverted: west (13.55) must be less than east (13.3)
    >>> bbox_area('200,0,210,10')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: bbox west must be between -180 and 180 degrees, not 200.0
    """
    parts = text.split(',')
    try:
        west, south, east, north = (float(part) for part in parts)
    except ValueError:
        raise BadPackInput(f'bbox must be four numbers W,S,E,N in degrees, e.g. 13.30,52.45,13.55,52.60, '
                           f'not {text[:80]!r}') from None
    for side, value, limit in (('west', west, 180), ('south', south, 90), ('east', east, 180), ('north', north, 90)):
        if not -limit <= value <= limit:  # also refuses NaN
            raise BadPackInput(f'bbox {side} must be between -{limit} and {limit} degrees, not {value}')
    if west >= east:
        raise BadPackInput(f'bbox is inverted: west ({west:g}) must be less than east ({east:g})')
    if south >= north:
        raise BadPackInput(f'bbox is inverted: south ({south:g}) must be less than north ({north:g})')
    return Area(name or f'bbox {text.replace(" ", "")[:80]}', box=(west, south, east, north))


# --- track files -----------------------------------------------------------------------------

@dataclass
class Track:
    """What a track file holds: runs of points that need a corridor (tracks, routes, lines, lone points), and
    polygons (tuples of rings, the outer one first) that are areas already. Points are (lon, lat) rows."""

    lines: list
    polygons: list


class _Counter:
    """Counts the points read from one file and refuses the file past ``MAX_POINTS``."""

    def __init__(self, name: str):
        self.name, self.count = name, 0

    def add(self, count: int) -> None:
        self.count += count
        if self.count > MAX_POINTS:
            raise BadPackInput(f'{self.name} holds more than {MAX_POINTS:,} points: simplify the track first (most '
                               'route planners can export fewer points)')


def read_track(data: bytes, name: str = 'the track') -> Track:
    """The tracks and routes of a GPX file, or the lines and polygons of a GeoJSON file.

    >>> len(read_track(b'{"type": "LineString", "coordinates": [[7.0, 46.0], [7.1, 46.1]]}').lines[0])
    2
    >>> read_track(b'hello', 'ride.txt')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: ride.txt is neither GPX nor GeoJSON: give a .gpx or .geojson file
    """
    if len(data) > MAX_TRACK_BYTES:
        raise BadPackInput(f'{name} is larger than {MAX_TRACK_BYTES // 2 ** 20} MB: simplify the track')
    first = re.compile(rb'(?:\xef\xbb\xbf)?\s*(.?)').match(data).group(1)  # a copy of the file costs 20 MB
    if not first:
        raise BadPackInput(f'{name} is empty: give a GPX or GeoJSON file with a track, a route or a polygon')
    if first == b'<':
        track = _gpx_track(data, name)
    elif first == b'{':
        track = _geojson_track(data, name)
    elif not data.isascii() and not _is_utf8(data):
        raise BadPackInput(f'{name} is not a text file: give a .gpx or .geojson file')
    else:
        raise BadPackInput(f'{name} is neither GPX nor GeoJSON: give a .gpx or .geojson file')
    if not track.lines and not track.polygons:
        raise BadPackInput(f'{name} holds no track, route, line or polygon: nothing to make a pack of')
    points = numpy.concatenate([*track.lines, *(ring for polygon in track.polygons for ring in polygon)])
    (west, south), (east, north) = points.min(axis=0), points.max(axis=0)
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise BadPackInput(f'{name} has points outside the world (longitude {west:g}..{east:g}, latitude '
                           f'{south:g}..{north:g}): coordinates must be longitude, latitude in degrees')
    return track


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True


def _gpx_track(data: bytes, name: str) -> Track:
    """Track segments and routes, read by expat as the file streams past: no tree, no DTD, no entities.

    A ``trkpt`` belongs to the last ``trkseg`` begun, an ``rtept`` to the last ``rte``: GPX nests them so, and
    it spares a call at the end of every element.
    """
    if LONG_TAG.search(data):
        raise BadPackInput(f'{name} is not a readable GPX file: it holds a tag longer than {LONGEST_TAG // 1024} kB')
    runs: list[array] = []
    current = {'trkpt': None, 'rtept': None}  # the run each kind of point goes to
    counter = _Counter(name)
    elements = [0]

    def start(tag: str, attributes: dict) -> None:
        local = tag.rpartition(' ')[2]
        elements[0] += 1
        if local in ('trkseg', 'rte'):
            runs.append(array('d'))
            current['trkpt' if local == 'trkseg' else 'rtept'] = runs[-1]
        elif local in current and current[local] is not None:
            try:
                current[local].extend((float(attributes['lon']), float(attributes['lat'])))
            except (KeyError, ValueError):
                raise BadPackInput(f'{name} has a {local} without a numeric lat and lon: not a readable GPX '
                                   'file') from None
            counter.add(1)
        elif elements[0] > MAX_ELEMENTS:
            raise BadPackInput(f'{name} holds more than {MAX_ELEMENTS:,} XML elements: simplify the track first')

    def refuse_doctype(*_) -> None:
        raise BadPackInput(f'{name} declares a DOCTYPE, which GPX files never do: not a readable GPX file')

    parser = expat.ParserCreate(namespace_separator=' ')
    parser.StartElementHandler = start
    parser.StartDoctypeDeclHandler = refuse_doctype
    try:
        parser.Parse(data, True)  # in one piece: expat before 2.6 re-reads a token split across pieces
    except expat.ExpatError as error:
        raise BadPackInput(f'{name} is not a readable GPX file: {expat.ErrorString(error.code)} at line '
                           f'{error.lineno}, column {error.offset}') from None
    lines = [numpy.frombuffer(run, dtype=float).reshape(-1, 2) for run in runs if run]
    return Track([line for line in lines if numpy.isfinite(line).all()], [])


def _geojson_track(data: bytes, name: str) -> Track:
    if len(data) > MAX_GEOJSON_BYTES:
        raise BadPackInput(f'{name} is larger than the {MAX_GEOJSON_BYTES // 2 ** 20} MB a GeoJSON file may be: '
                           f'simplify its shapes, or give the track as GPX (up to {MAX_TRACK_BYTES // 2 ** 20} MB)')
    counter = _Counter(name)
    counter.add(data.count(b',') // 2 - 1000)  # each point has a comma inside and one after: refuse before parsing
    try:
        document = json.loads(data)
    except RecursionError:
        raise BadPackInput(f'{name} is not readable GeoJSON: it is nested too deeply') from None
    except UnicodeDecodeError:
        raise BadPackInput(f'{name} is not a text file: give a .gpx or .geojson file') from None
    except ValueError as error:
        raise BadPackInput(f'{name} is not readable GeoJSON: {str(error).splitlines()[0][:120]}') from None
    track = Track([], [])
    try:
        for geometry in _geometries(document):
            _add_geometry(track, geometry, 0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise BadPackInput(f'{name} is not readable GeoJSON: {str(error).splitlines()[0][:120]}') from None
    return track


def _geometries(document) -> list:
    """The geometries of a GeoJSON object, a Feature or a FeatureCollection."""
    if not isinstance(document, dict):
        raise ValueError('expected a GeoJSON object')
    kind = document.get('type')
    if kind == 'FeatureCollection':
        features = document.get('features') or []
        if not isinstance(features, list) or not all(isinstance(feature, dict) for feature in features):
            raise ValueError('"features" must be a list of Features')
        return [feature['geometry'] for feature in features if feature.get('geometry')]
    if kind == 'Feature':
        return [document['geometry']] if document.get('geometry') else []
    return [document]


def _add_geometry(track: Track, geometry: dict, depth: int) -> None:
    kind, coordinates = geometry['type'], geometry.get('coordinates')
    if kind == 'GeometryCollection':
        if depth >= MAX_GEOJSON_DEPTH:
            raise ValueError(f'GeometryCollections nested more than {MAX_GEOJSON_DEPTH} deep')
        for part in geometry['geometries']:
            _add_geometry(track, part, depth + 1)
    elif kind == 'Point':
        track.lines.append(_positions([coordinates]))
    elif kind == 'MultiPoint':
        track.lines.extend(_positions([position]) for position in coordinates)
    elif kind == 'LineString':
        track.lines.append(_positions(coordinates))
    elif kind == 'MultiLineString':
        track.lines.extend(_positions(line) for line in coordinates)
    elif kind == 'Polygon':
        track.polygons.append(tuple(_positions(ring) for ring in coordinates))
    elif kind == 'MultiPolygon':
        track.polygons.extend(tuple(_positions(ring) for ring in polygon) for polygon in coordinates)
    else:
        raise ValueError(f'unknown geometry type {str(kind)[:40]!r}')
    if len(track.lines) + len(track.polygons) > MAX_POINTS:
        raise ValueError(f'more than {MAX_POINTS:,} shapes')


def _positions(coordinates) -> numpy.ndarray:
    """GeoJSON positions as (lon, lat) rows; an altitude is dropped."""
    if not isinstance(coordinates, list) or not coordinates:
        raise ValueError('coordinates must be a non-empty list of positions')
    try:
        points = numpy.array(coordinates, dtype=float)[:, :2]  # no copy of the lists, as long as they are alike
    except (ValueError, IndexError):
        points = numpy.array([position[:2] for position in coordinates], dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or not numpy.isfinite(points).all():
        raise ValueError('a position must be [longitude, latitude] in numbers')
    return points


# --- a track's area --------------------------------------------------------------------------

def _simplified(shapes: list[numpy.ndarray], tolerance_m: float, max_scale: float) -> list[numpy.ndarray]:
    """Each run of points simplified (Douglas-Peucker) in Web Mercator to within ``tolerance_m`` on the ground."""
    parts = [shapely.linestrings(numpy.column_stack(mercator(*shape.T))) if len(shape) > 1 else None
             for shape in shapes]
    simple = shapely.simplify(numpy.array([part for part in parts if part is not None], dtype=object),
                              tolerance_m * max_scale, preserve_topology=False)
    results, index = [], 0
    for shape, part in zip(shapes, parts):
        if part is None:
            results.append(shape)
            continue
        x, y = shapely.get_coordinates(simple[index]).T
        index += 1
        results.append(numpy.column_stack([numpy.degrees(x / EARTH_RADIUS), latitude(y)]) if len(x) else shape[:1])
    return results


def track_area(track: Track, corridor_km: float | None, name: str) -> Area:
    """The pack's area: a corridor around the lines; the polygons as they are, or widened by the corridor.

    The shapes are simplified, tolerance doubling from a twentieth of the corridor, until at most
    ``MAX_VERTICES`` are left; the reach grows by the tolerance. A track so intricate that this takes
    a tolerance wider than the corridor (and 100 m) is refused.
    """
    if corridor_km is not None and not 0 < corridor_km <= MAX_CORRIDOR_KM:
        raise BadPackInput(f'corridor must be more than 0 and at most {MAX_CORRIDOR_KM} km, not {corridor_km:g}')
    if track.lines and corridor_km is None:
        raise BadPackInput('a track needs a corridor: how many km either side of it, e.g. 2')
    corridor_m = (corridor_km or 0) * 1000 * CORRIDOR_MARGIN
    rings = [ring for polygon in track.polygons for ring in polygon]
    shapes = [*track.lines, *rings]
    points = numpy.concatenate(shapes)
    max_scale = float(scale(numpy.abs(points[:, 1]).max(), 0))
    tolerance, total = max(corridor_m / 20, MIN_TOLERANCE_M), 0.0
    while True:
        shapes = _simplified(shapes, tolerance, max_scale)
        total += tolerance  # simplifying a simplified line adds the tolerances: the bound stays true
        vertices = sum(len(shape) for shape in shapes)
        if vertices <= MAX_VERTICES:
            break
        if total > max(corridor_m, 100):
            raise BadPackInput(f'{name} is too intricate for a pack: {vertices:,} points are left after simplifying '
                               f'it by up to {total:,.0f} m; split it, or give a wider corridor')
        tolerance *= 2
    lines, simple_rings = shapes[:len(track.lines)], iter(shapes[len(track.lines):])
    polygons = tuple(tuple(_closed(next(simple_rings)) for _ in polygon) for polygon in track.polygons)
    label = name[:80] + (f', {corridor_km:g} km either side' if corridor_km else '')
    area = Area(label, None, tuple(lines), polygons, corridor_m + total, corridor_m + total)
    _check_in_world(area, name)
    return area


def _closed(ring: numpy.ndarray) -> numpy.ndarray:
    """A ring with at least four points, first and last the same, as polygons need."""
    if len(ring) and not (ring[0] == ring[-1]).all():
        ring = numpy.vstack([ring, ring[:1]])
    while len(ring) < 4:
        ring = numpy.vstack([ring, ring[-1:]])
    return ring


def _check_in_world(area: Area, name: str) -> None:
    west, _, east, _ = area.bounds()
    if east - west >= 180:
        raise BadPackInput(f'the area of {name} spans half the globe or crosses the 180th meridian, which packs '
                           'cannot cover: split the track')


# --- the tiles over an area ------------------------------------------------------------------

class _Tester:
    """Tells which tiles of a zoom meet an area, in Web Mercator."""

    def __init__(self, area: Area):
        self.area = area
        if area.box:
            west, south, east, north = area.box
            (self.west, self.east), (self.south, self.north) = mercator([west, east], [south, north])
            return
        lines = [numpy.column_stack(mercator(*line.T)) for line in area.lines]
        self.lines = shapely.multilinestrings([shapely.linestrings(line) for line in lines if len(line) > 1]) \
            if any(len(line) > 1 for line in lines) else None
        self.points = shapely.multipoints(numpy.concatenate([line for line in lines if len(line) == 1])) \
            if any(len(line) == 1 for line in lines) else None
        polygons = [shapely.polygons(shapely.linearrings(numpy.column_stack(mercator(*polygon[0].T))),
                                     [shapely.linearrings(numpy.column_stack(mercator(*ring.T)))
                                      for ring in polygon[1:]] or None) for polygon in area.polygons]
        self.polygons = shapely.multipolygons(polygons) if polygons else None
        for geometry in (self.lines, self.points, self.polygons):
            if geometry is not None:
                shapely.prepare(geometry)

    def hits(self, zoom: int, xs: numpy.ndarray, ys: numpy.ndarray) -> numpy.ndarray:
        west, south, east, north = tile_boxes(zoom, xs, ys)
        if self.area.box:  # the tiles whose inside meets the box's (one that only touches its edge is left out)
            return (west < self.east) & (east > self.west) & (south < self.north) & (north > self.south)
        poleward = numpy.maximum(numpy.abs(latitude(south)), numpy.abs(latitude(north)))
        boxes = shapely.box(west, south, east, north)
        hit = numpy.zeros(len(xs), dtype=bool)
        for geometry, reach in ((self.lines, self.area.line_reach_m), (self.points, self.area.line_reach_m),
                                (self.polygons, self.area.polygon_reach_m)):
            if geometry is not None:
                hit |= shapely.dwithin(geometry, boxes, reach * scale(poleward, reach))
        return hit


def cover(area: Area, zooms: range, limit: int, seconds: float = COVER_SECONDS) -> Cover:
    """Every tile at each zoom in ``zooms`` that meets ``area``, found from the top tile down (only the children
    of tiles found are looked at); it stops once more than ``limit`` tiles are found, and refuses an area that
    takes longer than ``seconds`` to count.

    >>> found = cover(bbox_area('13.30,52.45,13.55,52.60'), range(10, 12), limit=1000)
    >>> found.tiles[10], len(found.tiles[11]), found.complete
    ([(549, 335), (549, 336), (550, 335), (550, 336)], 9, True)
    """
    deadline = time.monotonic() + seconds
    tester = _Tester(area)
    xs = ys = numpy.zeros(1, dtype=numpy.int64)
    found: dict[int, list[tuple[int, int]]] = {}
    for zoom in range(zooms.stop):
        if zoom:
            xs = numpy.repeat(xs * 2, 4) + numpy.tile([0, 1, 0, 1], len(xs))
            ys = numpy.repeat(ys * 2, 4) + numpy.tile([0, 0, 1, 1], len(ys))
        keep = tester.hits(zoom, xs, ys)
        xs, ys = xs[keep], ys[keep]
        if zoom in zooms:
            order = numpy.lexsort((ys, xs))
            found[zoom] = list(zip(xs[order].tolist(), ys[order].tolist()))
        if zoom < zooms[-1] and (len(xs) > limit or sum(map(len, found.values())) > limit):
            return Cover(found, complete=False)
        if time.monotonic() > deadline:
            raise BadPackInput(f'the area of {area.name} takes too long to count: choose a smaller area or fewer '
                               'zooms')
    return Cover(found, complete=True)
