"""The area of a pack: a bounding box, or a track (GPX, GeoJSON) with a corridor, and the tiles that cover it.

Areas are shapely geometries in longitude/latitude (WGS 84). A corridor is measured in metres in an
azimuthal equidistant projection centred on the track (pyproj), so its width is right at any latitude.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import gpxpy
import gpxpy.gpx
import mercantile
import numpy
import shapely
from pyproj import CRS, Transformer
from shapely.errors import GEOSException
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from . import MAX_TRACK_BYTES, BadPackInput

MAX_CORRIDOR_KM = 100
# The buffer is a polygon inside the true round corridor, and the projection's scale drifts slightly
# away from its centre: a 1 % wider buffer keeps every tile within the corridor in the cover.
CORRIDOR_MARGIN = 1.01


def parse_bbox(text: str) -> Polygon:
    """``W,S,E,N`` in degrees as a box.

    >>> parse_bbox('13.30, 52.45, 13.55, 52.60').bounds
    (13.3, 52.45, 13.55, 52.6)
    >>> parse_bbox('13.55,52.45,13.30,52.60')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: bbox is inverted: west (13.55) must be less than east (13.3)
    >>> parse_bbox('200,0,210,10')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: bbox west must be between -180 and 180 degrees, not 200.0
    """
    parts = text.split(',')
    try:
        west, south, east, north = (float(part) for part in parts)
    except ValueError:
        raise BadPackInput(f'bbox must be four numbers W,S,E,N in degrees, e.g. 13.30,52.45,13.55,52.60, '
                           f'not {text[:80]!r}') from None
    for name, value, limit in (('west', west, 180), ('south', south, 90), ('east', east, 180), ('north', north, 90)):
        if not -limit <= value <= limit:  # also refuses NaN
            raise BadPackInput(f'bbox {name} must be between -{limit} and {limit} degrees, not {value}')
    if west >= east:
        raise BadPackInput(f'bbox is inverted: west ({west:g}) must be less than east ({east:g})')
    if south >= north:
        raise BadPackInput(f'bbox is inverted: south ({south:g}) must be less than north ({north:g})')
    return box(west, south, east, north)


@dataclass
class Track:
    """What a track file holds: lines (and lone points) that need a corridor, and polygons that are areas already."""

    lines: list[BaseGeometry] = field(default_factory=list)
    polygons: list[BaseGeometry] = field(default_factory=list)


def read_track(data: bytes, name: str = 'the track') -> Track:
    """The tracks and routes of a GPX file, or the lines and polygons of a GeoJSON file.

    >>> read_track(b'{"type": "LineString", "coordinates": [[7.0, 46.0], [7.1, 46.1]]}').lines[0].length > 0
    True
    >>> read_track(b'hello', 'ride.txt')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: ride.txt is neither GPX nor GeoJSON: give a .gpx or .geojson file
    """
    if len(data) > MAX_TRACK_BYTES:
        raise BadPackInput(f'{name} is larger than {MAX_TRACK_BYTES // 2 ** 20} MB: simplify the track')
    try:
        text = data.decode('utf-8-sig').strip()
    except UnicodeDecodeError:
        raise BadPackInput(f'{name} is not a text file: give a .gpx or .geojson file') from None
    if not text:
        raise BadPackInput(f'{name} is empty: give a GPX or GeoJSON file with a track, a route or a polygon')
    if text.startswith('<'):
        track = _gpx_track(text, name)
    elif text.startswith('{'):
        track = _geojson_track(text, name)
    else:
        raise BadPackInput(f'{name} is neither GPX nor GeoJSON: give a .gpx or .geojson file')
    if not track.lines and not track.polygons:
        raise BadPackInput(f'{name} holds no track, route, line or polygon: nothing to make a pack of')
    for geometry in [*track.lines, *track.polygons]:
        west, south, east, north = geometry.bounds
        if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
            raise BadPackInput(f'{name} has points outside the world (longitude {west:g}..{east:g}, latitude '
                               f'{south:g}..{north:g}): coordinates must be longitude, latitude in degrees')
    return track


def _line(points: list[tuple[float, float]]) -> BaseGeometry:
    return LineString(points) if len(points) > 1 else Point(points[0])


def _gpx_track(text: str, name: str) -> Track:
    try:
        gpx = gpxpy.parse(text)
    except (gpxpy.gpx.GPXException, ValueError) as error:
        raise BadPackInput(f'{name} is not a readable GPX file: {str(error).splitlines()[0][:120]}') from None
    runs = [segment.points for track in gpx.tracks for segment in track.segments] + [route.points
                                                                                      for route in gpx.routes]
    return Track(lines=[_line([(point.longitude, point.latitude) for point in run]) for run in runs if run])


def _geometries(document) -> list[BaseGeometry]:
    """The geometries of a GeoJSON object, a Feature or a FeatureCollection, outermost first."""
    if not isinstance(document, dict):
        raise ValueError('expected a GeoJSON object')
    kind = document.get('type')
    if kind == 'FeatureCollection':
        return [geometry for feature in document.get('features') or [] for geometry in _geometries(feature)]
    if kind == 'Feature':
        return _geometries(document['geometry']) if document.get('geometry') else []
    geometry = shape(document)
    return list(geometry.geoms) if hasattr(geometry, 'geoms') else [geometry]


def _geojson_track(text: str, name: str) -> Track:
    try:
        geometries = _geometries(json.loads(text))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, GEOSException) as error:
        raise BadPackInput(f'{name} is not readable GeoJSON: {str(error).splitlines()[0][:120]}') from None
    track = Track()
    for geometry in geometries:
        if geometry.is_empty:
            continue
        if isinstance(geometry, (Polygon, MultiPolygon)):
            track.polygons.append(shapely.make_valid(geometry))
        else:
            track.lines.append(geometry)
    return track


def corridor(geometry: BaseGeometry, km: float) -> BaseGeometry:
    """Everything within ``km`` of ``geometry`` (lon/lat in, lon/lat out).

    >>> round(corridor(Point(7.0, 46.0), 1).bounds[3], 3)  # 1 km north of 46° is about 0.009° further
    46.009
    """
    centre = geometry.centroid
    local = CRS.from_proj4(f'+proj=aeqd +lat_0={centre.y} +lon_0={centre.x} +datum=WGS84 +units=m')
    to_metres = Transformer.from_crs('EPSG:4326', local, always_xy=True).transform
    to_degrees = Transformer.from_crs(local, 'EPSG:4326', always_xy=True).transform
    metres = km * 1000 * CORRIDOR_MARGIN
    buffered = shapely.transform(geometry, to_metres, interleaved=False).buffer(metres, quad_segs=16)
    # Short edges, so that they stay close to the true outline once projected back to degrees.
    area = shapely.transform(shapely.segmentize(buffered, max(metres / 8, 50)), to_degrees, interleaved=False)
    west, _, east, _ = area.bounds
    if east - west > 180:
        raise BadPackInput('the area crosses the 180th meridian, which packs cannot cover yet: split the track')
    return area


def track_area(track: Track, corridor_km: float | None) -> BaseGeometry:
    """The pack's area: a corridor around the lines; the polygons as they are, or widened by the corridor."""
    if corridor_km is not None and not 0 < corridor_km <= MAX_CORRIDOR_KM:
        raise BadPackInput(f'corridor must be more than 0 and at most {MAX_CORRIDOR_KM} km, not {corridor_km:g}')
    if track.lines and corridor_km is None:
        raise BadPackInput('a track needs a corridor: how many km either side of it, e.g. 2')
    parts = []
    if track.lines:
        parts.append(corridor(unary_union(track.lines), corridor_km))
    if track.polygons:
        polygons = unary_union(track.polygons)
        parts.append(corridor(polygons, corridor_km) if corridor_km else polygons)
    return unary_union(parts)


@dataclass(frozen=True)
class Cover:
    """The tiles over an area, per zoom. ``complete`` is False when counting stopped at the limit:
    then the zooms missing from ``tiles`` hold at least as many tiles as the last one counted."""

    tiles: dict[int, list[tuple[int, int]]]
    complete: bool

    @property
    def total(self) -> int:
        return sum(len(found) for found in self.tiles.values())


def _overlapping(area: BaseGeometry, tiles: list[mercantile.Tile]) -> list[mercantile.Tile]:
    """The tiles whose inside meets the area's (a tile that only touches its edge is left out)."""
    if not tiles:
        return []
    west, south, east, north = numpy.array([mercantile.bounds(tile) for tile in tiles]).T
    boxes = shapely.box(west, south, east, north)
    hit = shapely.intersects(area, boxes)
    hit[hit] &= ~shapely.touches(area, boxes[hit])
    return [tile for tile, overlaps in zip(tiles, hit) if overlaps]


def cover(area: BaseGeometry, zooms: range, limit: int) -> Cover:
    """Every tile at each zoom in ``zooms`` that overlaps ``area``, found from the top tile down (only the
    children of overlapping tiles are looked at); it stops once more than ``limit`` tiles are found.

    >>> found = cover(parse_bbox('13.30,52.45,13.55,52.60'), range(10, 12), limit=1000)
    >>> found.tiles[10], len(found.tiles[11]), found.complete
    ([(549, 335), (549, 336), (550, 335), (550, 336)], 9, True)
    """
    shapely.prepare(area)
    level = [mercantile.Tile(0, 0, 0)]
    found: dict[int, list[tuple[int, int]]] = {}
    for zoom in range(zooms.stop):
        if zoom:
            level = [child for parent in level for child in mercantile.children(parent)]
        level = _overlapping(area, level)
        if zoom in zooms:
            found[zoom] = sorted((tile.x, tile.y) for tile in level)
        if zoom < zooms[-1] and (len(level) > limit or sum(map(len, found.values())) > limit):
            return Cover(found, complete=False)
    return Cover(found, complete=True)

