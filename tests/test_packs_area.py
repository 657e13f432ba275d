"""The area of an offline pack: the tiles over a track's corridor against a brute-force cover, and bad input."""

from __future__ import annotations

import json
import math

import gpxpy.gpx
import mercantile
import numpy
import pytest
from pyproj import Geod

from heatmap.packs import BadPackInput
from heatmap.packs.area import Area, bbox_area, cover, read_track, track_area
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
])
def test_a_damaged_job_area_is_refused(damage, message):
    with pytest.raises(ValueError, match=message):
        Area.from_json({**KEPT, **damage})
    assert Area.from_json({**KEPT, 'lines': [[[7.0, 46.0]] * 20_000], 'line_reach_m': 200_000}).vertices() == 20_000
