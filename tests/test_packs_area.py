"""The area of an offline pack: the tiles over a track's corridor against a brute-force cover, and bad input."""

from __future__ import annotations

import json
import math

import gpxpy.gpx
import mercantile
import numpy
import pytest
from pyproj import Geod

from heatmap.packs import MAX_TRACK_BYTES, BadPackInput
from heatmap.packs.area import MAX_GEOJSON_BYTES, Area, bbox_area, cover, read_track, track_area
from heatmap.packs.request import make_request

GEOD = Geod(ellps='WGS84')
CORRIDOR_KM = 1.5


def wiggly_track(start: tuple[float, float], km: float, step_m: float = 100) -> list[tuple[float, float]]:
    """A ride heading east-north-east and swinging left and right, a point every ``step_m``."""
    lon, lat = start
    points = [(lon, lat)]
    for index in range(int(km * 1000 / step_m)):
        heading = 70 + 50 * math.sin(index / 15)
        lon, lat, _ = GEOD.fwd(lon, lat, heading, step_m)
        points.append((lon, lat))
    return points


def gpx_file(track: list[tuple[float, float]], route: list[tuple[float, float]]) -> bytes:
    gpx = gpxpy.gpx.GPX()
    segment = gpxpy.gpx.GPXTrackSegment([gpxpy.gpx.GPXTrackPoint(lat, lon) for lon, lat in track])
    gpx.tracks.append(gpxpy.gpx.GPXTrack())
    gpx.tracks[0].segments.append(segment)
    gpx.routes.append(gpxpy.gpx.GPXRoute())
    gpx.routes[0].points.extend(gpxpy.gpx.GPXRoutePoint(lat, lon) for lon, lat in route)
    return gpx.to_xml().encode()


def densified(points: list[tuple[float, float]], step_m: float = 20) -> numpy.ndarray:
    """The polyline as points no more than ``step_m`` apart."""
    dense = []
    for (lon1, lat1), (lon2, lat2) in zip(points, points[1:]):
        steps = max(1, math.ceil(GEOD.inv(lon1, lat1, lon2, lat2)[2] / step_m))
        dense += [(lon1 + (lon2 - lon1) * i / steps, lat1 + (lat2 - lat1) * i / steps) for i in range(steps)]
    return numpy.array(dense + [points[-1]])


def brute_force_cover(points: numpy.ndarray, corridor_m: float, zoom: int) -> set[tuple[int, int]]:
    """Every tile at ``zoom`` with a point within ``corridor_m`` of the track, by geodesic distances from each
    track point to the nearest point of each tile near the track."""
    lons, lats = points.T
    reach = 2 * corridor_m / 111_000
    wide = reach / math.cos(math.radians(lats.max()))
    candidates = mercantile.tiles(lons.min() - wide, lats.min() - reach, lons.max() + wide, lats.max() + reach,
                                  zooms=[zoom])
    found = set()
    for tile in candidates:
        west, south, east, north = mercantile.bounds(tile)
        _, _, distances = GEOD.inv(lons, lats, numpy.clip(lons, west, east), numpy.clip(lats, south, north))
        if distances.min() <= corridor_m:
            found.add((tile.x, tile.y))
    return found


def test_a_track_cover_holds_every_tile_within_the_corridor_and_at_most_1_3_times_that():
    track = wiggly_track((7.30, 46.85), km=18)
    route = wiggly_track((7.35, 46.70), km=6, step_m=400)  # a route in the same file, with sparse points
    request = make_request('ride/hot', '10-15', track=gpx_file(track, route), track_name='ride.gpx',
                           corridor_km=str(CORRIDOR_KM))
    found = cover(request.area, request.zooms, limit=100_000)
    points = numpy.concatenate([densified(track), densified(route)])
    for zoom in request.zooms:
        exact = brute_force_cover(points, CORRIDOR_KM * 1000, zoom)
        got = set(found.tiles[zoom])
        assert exact - got == set(), f'z{zoom}: tiles within the corridor are missing'
        assert len(got) <= 1.3 * len(exact), f'z{zoom}: {len(got)} tiles for an exact cover of {len(exact)}'
    assert len(found.tiles[15]) > 150, 'the test track is long enough to mean something at z14'


def test_a_bbox_cover_is_the_tiles_the_box_spans():
    request = make_request('all/hot', '8-13', bbox='7.4321,46.9012,7.5432,46.9876')
    found = cover(request.area, request.zooms, limit=100_000)
    for zoom in request.zooms:
        expected = {(t.x, t.y) for t in mercantile.tiles(7.4321, 46.9012, 7.5432, 46.9876, zooms=[zoom])}
        assert set(found.tiles[zoom]) == expected


def test_a_geojson_polygon_is_the_area_itself_and_a_corridor_widens_it():
    ring = [[7.40, 46.90], [7.50, 46.90], [7.45, 46.98], [7.40, 46.90]]
    document = json.dumps({'type': 'FeatureCollection', 'features': [
        {'type': 'Feature', 'properties': {}, 'geometry': {'type': 'Polygon', 'coordinates': [ring]}}]}).encode()
    alone = make_request('run/blue', '13', track=document, track_name='park.geojson')
    widened = make_request('run/blue', '13', track=document, track_name='park.geojson', corridor_km='1')
    tiles, wider = (set(cover(r.area, r.zooms, limit=10_000).tiles[13]) for r in (alone, widened))
    corners = {(t.x, t.y) for lon, lat in ring for t in [mercantile.tile(lon + 1e-6 * (lon < 7.45), lat + 1e-6, 13)]}
    assert corners <= tiles < wider
    assert alone.area_name == 'park.geojson' and widened.area_name == 'park.geojson, 1 km either side'


def test_counting_stops_once_the_pack_is_far_too_large():
    whole_world = make_request('all/hot', '0-15', bbox='-180,-85,180,85')
    found = cover(whole_world.area, whole_world.zooms, limit=20_000)
    assert not found.complete
    assert 20_000 < found.total < 200_000 and max(found.tiles) < 15


LINE = json.dumps({'type': 'LineString', 'coordinates': [[7.0, 46.0], [7.1, 46.1]]}).encode()


@pytest.mark.parametrize('arguments, message', [
    ({'bbox': '200,0,210,10'}, 'bbox west must be between -180 and 180'),
    ({'bbox': '7,95,8,96'}, 'bbox south must be between -90 and 90'),
    ({'bbox': '7.5,46,7.4,46.1'}, 'bbox is inverted: west'),
    ({'bbox': '7,46.1,7.5,46'}, 'bbox is inverted: south'),
    ({'bbox': '7,46,7.1'}, 'bbox must be four numbers'),
    ({'bbox': '7,46,nan,47'}, 'bbox east must be between'),
    ({'bbox': '7,46,7.1,46.1', 'zooms': '10-16', 'px': '512'}, 'z must be between 0 and 15, not 16'),
    ({'bbox': '7,46,7.1,46.1', 'zooms': '15-10'}, 'the first zoom must not be above the last'),
    ({'bbox': '7,46,7.1,46.1', 'zooms': 'all'}, "zooms 'all': z must be a whole number"),
    ({'bbox': '7,46,7.1,46.1', 'px': '1024'}, 'px must be 256 or 512'),
    ({'bbox': '7,46,7.1,46.1', 'layer': 'bike/hot'}, "unknown activity 'bike'"),
    ({'bbox': '7,46,7.1,46.1', 'layer': 'ride/red'}, "unknown color 'red'"),
    ({'bbox': '7,46,7.1,46.1', 'layer': 'ride'}, 'layer must be activity/color'),
    ({'bbox': '7,46,7.1,46.1', 'format': 'gpx'}, 'format must be mbtiles or osmand'),
    ({}, 'give the area as a bbox'),
    ({'bbox': '7,46,7.1,46.1', 'track': LINE, 'corridor_km': '1'}, 'give the area as a bbox'),
    ({'track': LINE}, 'a track needs a corridor'),
    ({'track': LINE, 'corridor_km': '0'}, 'corridor must be more than 0'),
    ({'track': LINE, 'corridor_km': '-2'}, 'corridor must be more than 0'),
    ({'track': LINE, 'corridor_km': 'wide'}, 'corridor must be a number'),
    ({'track': b'', 'corridor_km': '1'}, 'ride.gpx is empty'),
    ({'track': b'<gpx><trk><trkseg><trkpt lat="46"', 'corridor_km': '1'}, 'ride.gpx is not a readable GPX file'),
    ({'track': b'<gpx version="1.1"></gpx>', 'corridor_km': '1'}, 'ride.gpx holds no track, route'),
    ({'track': b'{"type": "FeatureCollection", "features": []}', 'corridor_km': '1'}, 'holds no track'),
    ({'track': b'{"type": "LineString", "coordinates": [[7, 95], [7, 96]]}', 'corridor_km': '1'},
     'points outside the world'),
    ({'track': b'{"type": "LineString", "coordinates": 7}', 'corridor_km': '1'}, 'is not readable GeoJSON'),
    ({'track': b'\xff\xfe\x00binary', 'corridor_km': '1'}, 'is not a text file'),
    ({'track': b'lat,lon\n46,7\n', 'corridor_km': '1'}, 'is neither GPX nor GeoJSON'),
])
def test_bad_input_gets_one_line_naming_what_is_wrong(arguments, message):
    arguments = {'layer': 'ride/hot', 'zooms': '10-12', 'track_name': 'ride.gpx', **arguments}
    with pytest.raises(BadPackInput) as raised:
        make_request(**arguments)
    assert message in str(raised.value)
    assert '\n' not in str(raised.value)


# --- what a job file keeps of an area, and what the page's map is shown ---

SHAPES = json.dumps({'type': 'GeometryCollection', 'geometries': [
    {'type': 'LineString', 'coordinates': [[7.0, 46.0], [7.1, 46.05], [7.2, 46.0]]},
    {'type': 'Point', 'coordinates': [7.3, 46.2]},
    {'type': 'Polygon', 'coordinates': [[[8.0, 47.0], [8.2, 47.0], [8.2, 47.2], [8.0, 47.0]],
                                        [[8.1, 47.05], [8.15, 47.05], [8.15, 47.1], [8.1, 47.05]]]}]}).encode()


def test_a_track_area_kept_in_a_job_file_comes_back_with_the_same_cover():
    area = track_area(read_track(SHAPES, 'ride.geojson'), 2, 'ride.geojson')
    kept = json.loads(json.dumps(area.to_json()))
    assert set(kept) == {'name', 'lines', 'polygons', 'line_reach_m', 'polygon_reach_m'}
    assert kept['name'] == 'ride.geojson, 2 km either side' and kept['line_reach_m'] == area.line_reach_m > 2020
    again = Area.from_json(kept)
    assert again.name == kept['name']
    assert again.vertices() == area.vertices() == 3 + 1 + 8
    assert again.bounds() == pytest.approx(area.bounds())
    assert cover(again, range(8, 13), 10_000) == cover(area, range(8, 13), 10_000)


def test_a_box_kept_in_a_job_file_comes_back_with_its_name_at_most_200_characters():
    box = bbox_area('7,46,7.2,46.1', 'Bern')
    assert box.to_json() == {'name': 'Bern', 'box': [7.0, 46.0, 7.2, 46.1]}
    assert Area.from_json(box.to_json()) == box
    assert Area.from_json({'name': 'n' * 300, 'box': [7, 46, 7.2, 46.1]}).name == 'n' * 200


def test_the_map_is_shown_the_box_or_the_simplified_shapes_rounded_to_a_centimetre():
    assert bbox_area('7,46,7.2,46.1').geojson() == {'type': 'Polygon', 'coordinates': [
        [[7.0, 46.0], [7.2, 46.0], [7.2, 46.1], [7.0, 46.1], [7.0, 46.0]]]}
    area = Area('a', None, (numpy.array([[7.123456789, 46.0], [7.2, 46.1]]), numpy.array([[7.3, 46.2]])),
                ((numpy.array([[8.0, 47.0], [8.2, 47.0], [8.2, 47.2], [8.0, 47.0]]),),), 100, 0)
    assert area.geojson() == {'type': 'GeometryCollection', 'geometries': [
        {'type': 'LineString', 'coordinates': [[7.1234568, 46.0], [7.2, 46.1]]},
        {'type': 'Point', 'coordinates': [7.3, 46.2]},
        {'type': 'Polygon', 'coordinates': [[[8.0, 47.0], [8.2, 47.0], [8.2, 47.2], [8.0, 47.0]]]}]}


KEPT = {'name': 'a', 'lines': [[[7.0, 46.0], [7.1, 46.1]]], 'polygons': [], 'line_reach_m': 100, 'polygon_reach_m': 0}


@pytest.mark.parametrize('damage, message', [
    ({'lines': []}, '^an area with no shapes, or far more vertices than an area is made of$'),
    ({'lines': [[[7.0, 46.0]] * 20_001]}, '^an area with no shapes, or far more vertices'),
    ({'line_reach_m': 200_001}, '^an area reaching further than a corridor may$'),
    ({'polygon_reach_m': -1}, '^an area reaching further than a corridor may$'),
    ({'lines': [[[7.0, 46.0, 1.0]]]}, r'^a shape that is not a list of \[longitude, latitude\]$'),
    ({'lines': [[]]}, '^a shape that is not a list'),
    ({'lines': [[[float('nan'), 46.0]]]}, '^a shape that is not a list'),
    ({'lines': [[7.0, 46.0]]}, '^a shape that is not a list'),
    ({'lines': [[[-170.0, 0.0], [170.0, 0.0]]]}, '^the area of the job spans half the globe'),
    ({'lines': [[[-90.0, 0.0], [90.0, 0.0]]], 'line_reach_m': 0}, '^the area of the job spans half the globe or '
                                                                 'crosses the 180th meridian, which packs cannot '
                                                                 'cover: split the track$'),
])
def test_a_damaged_job_area_is_refused(damage, message):
    with pytest.raises(ValueError, match=message):
        Area.from_json({**KEPT, **damage})
    assert Area.from_json({**KEPT, 'lines': [[[7.0, 46.0]] * 20_000], 'line_reach_m': 200_000}).vertices() == 20_000


# --- reading track files: what is taken, and the one line that refuses the rest ---

def geojson(document) -> bytes:
    return json.dumps(document).encode()


def nested(depth: int) -> dict:
    geometry = {'type': 'Point', 'coordinates': [7.0, 46.0]}
    for _ in range(depth):
        geometry = {'type': 'GeometryCollection', 'geometries': [geometry]}
    return geometry


def test_every_kind_of_geojson_geometry_is_read_its_altitude_dropped():
    track = read_track(geojson({'type': 'FeatureCollection', 'features': [
        {'type': 'Feature', 'geometry': {'type': 'MultiPoint', 'coordinates': [[7.0, 46.0], [7.1, 46.1, 500]]}},
        {'type': 'Feature', 'geometry': None},
        {'type': 'Feature', 'geometry': {'type': 'MultiLineString', 'coordinates': [
            [[7.0, 46.0, 500], [7.1, 46.1, 510]], [[7.2, 46.2], [7.3, 46.3, 5]]]}},
        {'type': 'Feature', 'geometry': {'type': 'MultiPolygon', 'coordinates': [
            [[[8.0, 47.0], [8.1, 47.0], [8.0, 47.1], [8.0, 47.0]]]]}},
        {'type': 'Feature', 'geometry': nested(8)}]}), 'r.geojson')
    assert [line.tolist() for line in track.lines] == [
        [[7.0, 46.0]], [[7.1, 46.1]], [[7.0, 46.0], [7.1, 46.1]], [[7.2, 46.2], [7.3, 46.3]], [[7.0, 46.0]]]
    assert [[ring.tolist() for ring in polygon] for polygon in track.polygons] == [
        [[[8.0, 47.0], [8.1, 47.0], [8.0, 47.1], [8.0, 47.0]]]]
    feature = read_track(geojson({'type': 'Feature', 'geometry': {'type': 'Point', 'coordinates': [7.0, 46.0]}}))
    assert [line.tolist() for line in feature.lines] == [[[7.0, 46.0]]]


@pytest.mark.parametrize('document, message', [
    ({'type': 'FeatureCollection', 'features': 'abc'}, 'r.geojson is not readable GeoJSON: "features" must be a '
                                                        'list of Features'),
    ({'type': 'FeatureCollection', 'features': [1]}, 'r.geojson is not readable GeoJSON: "features" must be a '
                                                      'list of Features'),
    ({'type': 'Feature', 'geometry': None}, 'r.geojson holds no track, route, line or polygon: nothing to make a '
                                            'pack of'),
    ({'type': 'C' * 50}, f"r.geojson is not readable GeoJSON: unknown geometry type {'C' * 40!r}"),
    (nested(9), 'r.geojson is not readable GeoJSON: GeometryCollections nested more than 8 deep'),
    ({'type': 'MultiLineString', 'coordinates': [[]]}, 'r.geojson is not readable GeoJSON: coordinates must be a '
                                                       'non-empty list of positions'),
    ({'type': 'Point', 'coordinates': []}, 'r.geojson is not readable GeoJSON: a position must be [longitude, '
                                           'latitude] in numbers'),
    ({'type': 'LineString', 'coordinates': 'abc'}, 'r.geojson is not readable GeoJSON: coordinates must be a '
                                                   'non-empty list of positions'),
    ({'type': 'LineString', 'coordinates': [[7.0], [7.1]]}, 'r.geojson is not readable GeoJSON: a position must be '
                                                            '[longitude, latitude] in numbers'),
    ({'type': 'Point', 'coordinates': [7.0, float('inf')]}, 'r.geojson is not readable GeoJSON: a position must be '
                                                            '[longitude, latitude] in numbers'),
])
def test_a_geojson_file_that_holds_no_usable_shape_is_refused_in_one_line(document, message):
    with pytest.raises(BadPackInput) as refused:
        read_track(geojson(document), 'r.geojson')
    assert str(refused.value) == message


@pytest.mark.parametrize('data, message', [
    (b'{"type": ', 'r.geojson is not readable GeoJSON: Expecting value: line 1 column 10 (char 9)'),
    (b'{"a": ' + b'[' * 100_000, 'r.geojson is not readable GeoJSON: it is nested too deeply'),
    (b'{"type": "\xff"}', 'r.geojson is not a text file: give a .gpx or .geojson file'),
    ('h\u00e9llo'.encode(), 'r.geojson is neither GPX nor GeoJSON: give a .gpx or .geojson file'),
    (b'\xff\xfe', 'r.geojson is not a text file: give a .gpx or .geojson file'),
    (b'{"type": "Point", "coordinates": [-180.5, 0]}', 'r.geojson has points outside the world (longitude '
                                                       '-180.5..-180.5, latitude 0..0): coordinates must be longitude, '
                                                       'latitude in degrees'),
    (b'{"type": "Point", "coordinates": [180.5, 0]}', 'r.geojson has points outside the world'),
    (b'{"type": "Point", "coordinates": [0, -90.5]}', 'r.geojson has points outside the world'),
    (b'{"type": "Point", "coordinates": [0, 90.5]}', 'r.geojson has points outside the world'),
])
def test_a_file_that_is_not_geojson_or_outside_the_world_is_refused_in_one_line(data, message):
    with pytest.raises(BadPackInput) as refused:
        read_track(data, 'r.geojson')
    assert str(refused.value).startswith(message)


def test_points_on_the_edges_of_the_world_are_taken():
    for corner in ([-180, -90], [180, 90]):
        assert read_track(geojson({'type': 'Point', 'coordinates': corner})).lines[0].tolist() == [corner]


def test_a_geojson_file_is_at_most_5_mb_and_500000_points_counted_before_it_is_parsed():
    def padded(size: int = 0, commas: int = 0) -> bytes:
        head, tail = b'{"type": "Point", "coordinates": [7, 46], "pad": "', b'"}'
        commas = max(0, commas - (head + tail).count(b','))
        return head + b',' * commas + b' ' * max(0, size - len(head) - len(tail) - commas) + tail
    assert len(read_track(padded(size=MAX_GEOJSON_BYTES), 'r.geojson').lines) == 1
    with pytest.raises(BadPackInput) as refused:
        read_track(padded(size=MAX_GEOJSON_BYTES + 1), 'r.geojson')
    assert str(refused.value) == ('r.geojson is larger than the 5 MB a GeoJSON file may be: simplify its shapes, or '
                                  'give the track as GPX (up to 20 MB)')
    assert len(read_track(padded(commas=1_002_001), 'r.geojson').lines) == 1
    with pytest.raises(BadPackInput) as refused:
        read_track(padded(commas=1_002_002), 'r.geojson')
    assert str(refused.value) == ('r.geojson holds more than 500,000 points: simplify the track first (most route '
                                  'planners can export fewer points)')


def test_a_track_file_is_at_most_20_mb():
    gpx = b'<gpx>%s</gpx>'
    assert 'holds no track' in refusal(gpx % (b' ' * (MAX_TRACK_BYTES - len(gpx) + 2)))
    assert refusal(gpx % (b' ' * (MAX_TRACK_BYTES - len(gpx) + 3))) == 'r.gpx is larger than 20 MB: simplify the track'


def refusal(data: bytes) -> str:
    with pytest.raises(BadPackInput) as refused:
        read_track(data, 'r.gpx')
    return str(refused.value)


def test_gpx_with_or_without_a_namespace_or_prefix_gives_its_tracks_and_routes():
    points = '<trkpt lat="46.0" lon="7.0"/><trkpt lat="46.1" lon="7.1"/>'
    plain = f'<gpx><trk><trkseg>{points}</trkseg></trk><rte><rtept lat="47" lon="8"/></rte></gpx>'.encode()
    assert [line.tolist() for line in read_track(plain).lines] == [[[7.0, 46.0], [7.1, 46.1]], [[8.0, 47.0]]]
    prefixed = ('<g:gpx xmlns:g="http://www.topografix.com/GPX/1/1"><g:trk><g:trkseg>'
                + points.replace('<trkpt', '<g:trkpt') + '</g:trkseg></g:trk></g:gpx>').encode()
    assert [line.tolist() for line in read_track(prefixed).lines] == [[[7.0, 46.0], [7.1, 46.1]]]


@pytest.mark.parametrize('data, message', [
    (b'<gpx><trk><trkseg><trkpt lat="46"/></trkseg></trk></gpx>', 'r.gpx has a trkpt without a numeric lat and lon: '
                                                                   'not a readable GPX file'),
    (b'<!DOCTYPE gpx><gpx/>', 'r.gpx declares a DOCTYPE, which GPX files never do: not a readable GPX file'),
    (b'<gpx ' + b'a' * 70_000 + b'/>', 'r.gpx is not a readable GPX file: it holds a tag longer than 64 kB'),
])
def test_a_gpx_file_that_cannot_be_read_is_refused_in_one_line(data, message):
    assert refusal(data) == message


@pytest.mark.parametrize('text, message', [
    ('7.' + '0' * 100, f"bbox must be four numbers W,S,E,N in degrees, e.g. 13.30,52.45,13.55,52.60, not "
                       f"{('7.' + '0' * 100)[:80]!r}"),
    ('7,46,180.5,47', 'bbox east must be between -180 and 180 degrees, not 180.5'),
    ('7,46,8,90.5', 'bbox north must be between -90 and 90 degrees, not 90.5'),
    ('7,46,7,47', 'bbox is inverted: west (7) must be less than east (7)'),
    ('7,46,8,46', 'bbox is inverted: south (46) must be less than north (46)'),
])
def test_a_bbox_that_is_no_area_is_refused_naming_the_side(text, message):
    with pytest.raises(BadPackInput) as refused:
        bbox_area(text)
    assert str(refused.value) == message


def test_a_bbox_is_named_by_its_text_and_its_centre_by_hemisphere():
    assert bbox_area('-180, -90, 180, 90').name == 'bbox -180,-90,180,90'
    assert bbox_area('7.' + '0' * 100 + ',46,8,47').name == 'bbox ' + ('7.' + '0' * 100)[:80]
    assert bbox_area('-1,-2,1,2').centre() == '0.00° N, 0.00° E'
    assert bbox_area('-10,-20,-8,-18').centre() == '19.00° S, 9.00° W'


def test_counting_stops_only_past_the_limit_and_only_before_the_last_zoom():
    berlin = bbox_area('13.30,52.45,13.55,52.60')
    assert cover(berlin, range(10, 12), limit=4).complete is True, 'four tiles at zoom 10 are not past a limit of 4'
    assert cover(berlin, range(9, 12), limit=4).complete is False, 'zoom 9 and 10 together are'
    assert cover(berlin, range(10, 12), limit=1).complete is False


def test_a_corridor_is_widened_by_the_margin_and_the_simplification_it_took():
    track = read_track(geojson({'type': 'LineString', 'coordinates': [[7.0, 46.0], [7.1, 46.1]]}))
    area = track_area(track, 2, 'n' * 100)
    assert area.name == 'n' * 80 + ', 2 km either side'
    assert (area.line_reach_m, area.polygon_reach_m) == pytest.approx((2020 + 101, 2020 + 101))
    assert track_area(track, 100, 'r').line_reach_m == pytest.approx(101_000 + 5050)
    for corridor in (0, 100.5):
        with pytest.raises(BadPackInput, match=f'^corridor must be more than 0 and at most 100 km, not {corridor:g}$'):
            track_area(track, corridor, 'r')
    with pytest.raises(BadPackInput, match='^a track needs a corridor: how many km either side of it, e.g. 2$'):
        track_area(track, None, 'r')
    wide = read_track(geojson({'type': 'LineString', 'coordinates': [[-100.0, 0.0], [100.0, 0.0]]}))
    with pytest.raises(BadPackInput, match='^the area of r.geojson spans half the globe or crosses the 180th meridian, '
                                           'which packs cannot cover: split the track$'):
        track_area(wide, 1, 'r.geojson')


def test_polygon_rings_are_closed_and_at_least_four_points():
    track = read_track(geojson({'type': 'MultiPolygon', 'coordinates': [
        [[[8.0, 47.0], [8.1, 47.0], [8.0, 47.1]]], [[[8.0, 47.0], [8.1, 47.0]]]]}))
    area = track_area(track, None, 'r')
    assert [numpy.round(polygon[0], 6).tolist() for polygon in area.polygons] == [
        [[8.0, 47.0], [8.1, 47.0], [8.0, 47.1], [8.0, 47.0]],
        [[8.0, 47.0], [8.1, 47.0], [8.0, 47.0], [8.0, 47.0]]]


def test_an_areas_bounds_hold_its_corridor_and_stay_within_the_world():
    degree = 110_574  # metres in the shortest degree of latitude
    north = Area('a', None, (numpy.array([[10.0, 60.0], [11.0, 61.0]]),), (), degree, 0)
    wide = 1 / math.cos(math.radians(62))  # a degree of latitude is this many of longitude at 62°
    assert north.bounds() == pytest.approx((10 - wide, 59, 11 + wide, 62))
    assert Area('a', None, (numpy.array([[179.5, 89.5]]),), (), degree, 0).bounds()[2:] == (180.0, 90.0)
    assert Area('a', None, (numpy.array([[-179.5, -89.5]]),), (), degree, 0).bounds()[:2] == (-180.0, -90.0)


def test_a_box_covers_the_tiles_inside_it_not_those_that_only_touch_its_edges():
    assert cover(bbox_area('0,10,10,20'), range(2, 3), 100).tiles[2] == [(2, 1)]  # the meridian is a tile edge
    assert cover(bbox_area('-10,10,0,20'), range(2, 3), 100).tiles[2] == [(1, 1)]


def test_a_track_covers_its_lone_points_and_not_the_holes_of_its_polygons():
    area = track_area(read_track(SHAPES), 2, 'r')
    found = set(cover(area, range(15, 16), 100_000).tiles[15])
    point = mercantile.tile(7.3, 46.2, 15)
    assert (point.x, point.y) in found
    hole = mercantile.tile(8.133, 47.067, 15)
    assert (hole.x, hole.y) in found, 'a corridor of 2 km fills the hole'
    polygon_only = track_area(read_track(geojson(json.loads(SHAPES)['geometries'][2])), None, 'r')
    found = set(cover(polygon_only, range(15, 16), 100_000).tiles[15])
    inside = mercantile.tile(8.05, 47.05, 15)
    assert (inside.x, inside.y) in found and (hole.x, hole.y) not in found


def test_an_area_that_takes_too_long_to_count_is_refused():
    with pytest.raises(BadPackInput, match='^the area of bbox 0,0,90,60 takes too long to count: choose a smaller area '
                                           'or fewer zooms$'):
        cover(bbox_area('0,0,90,60'), range(0, 12), 10 ** 9, seconds=0)


def test_a_two_point_line_or_lone_points_alone_are_covered_up_to_the_top_and_bottom_of_the_map():
    line = track_area(read_track(geojson({'type': 'LineString', 'coordinates': [[7.0, 46.0], [7.2, 46.0]]})), 1, 'r')
    middle = mercantile.tile(7.1, 46.0, 12)
    assert (middle.x, middle.y) in cover(line, range(12, 13), 1000).tiles[12]
    points = track_area(read_track(geojson({'type': 'MultiPoint', 'coordinates': [[7.0, 89.0], [8.0, -89.0]]})), 1,
                        'r')
    assert cover(points, range(2, 3), 1000).tiles[2] == [(2, 0), (2, 3)], 'beyond 85° the edge tiles hold them'


def test_an_unnamed_empty_track_is_called_the_track():
    with pytest.raises(BadPackInput, match='^the track is empty: give a GPX or GeoJSON file with a track, a route or '
                                           'a polygon$'):
        read_track(b'  ')
