"""Track files that once took the server down, and ordinary long ones: for the tests and for bench/hostile_packs.py.

Each is (file name, the file's bytes, the corridor in km, what it is). They are made, not stored: the
largest is 20 MB.
"""

from __future__ import annotations

import json
import math
import random


def gpx(runs: list[list[tuple[float, float]]]) -> bytes:
    """A GPX 1.1 file with one track segment per run of (lon, lat) points."""
    segments = ''.join('<trkseg>' + ''.join(f'<trkpt lat="{lat:.6f}" lon="{lon:.6f}"></trkpt>' for lon, lat in run)
                       + '</trkseg>' for run in runs)
    return (f'<?xml version="1.0" encoding="UTF-8"?><gpx version="1.1" creator="test" '
            f'xmlns="http://www.topografix.com/GPX/1/1"><trk><name>t</name>{segments}</trk></gpx>').encode()


def random_points(count: int, seed: int) -> list[tuple[float, float]]:
    """Points thrown at random into a 0.5° box near Interlaken: a track that crosses itself everywhere."""
    rng = random.Random(seed)
    return [(7.5 + rng.random() * 0.5, 46.5 + rng.random() * 0.5) for _ in range(count)]


def tour(km: float, step_m: float) -> list[tuple[float, float]]:
    """A long smooth tour east-north-east from Lyon, a point every ``step_m``: what a bikepacking trip records."""
    lon, lat, points = 4.8, 45.7, []
    for index in range(int(km * 1000 / step_m)):
        heading = math.radians(60 + 40 * math.sin(index / 3000) + 10 * math.sin(index / 37))
        lat += step_m * math.cos(heading) / 111_320
        lon += step_m * math.sin(heading) / (111_320 * math.cos(math.radians(lat)))
        points.append((lon, lat))
    return points


def nested(depth: int) -> bytes:
    inner = '{"type": "Point", "coordinates": [7, 46]}'
    return ('{"type": "GeometryCollection", "geometries": [' * depth + inner + ']}' * depth).encode()


def star(corners: int) -> bytes:
    ring = random_points(corners, 4)
    return json.dumps({'type': 'Polygon', 'coordinates': [ring + ring[:1]]}).encode()


def point_features(count: int) -> bytes:
    return json.dumps({'type': 'FeatureCollection', 'features': [
        {'type': 'Feature', 'properties': {}, 'geometry': {'type': 'Point', 'coordinates': [7 + i * 1e-5, 46]}}
        for i in range(count)]}).encode()


# (file name, what it is, corridor km, the file's maker, the answer: 200 or the start of a 400's line)
HOSTILE = [
    ('random-1000.gpx', 'a self-crossing track of 1,000 random points', '2',
     lambda: gpx([random_points(1000, 1)]), 200),
    ('random-2000.gpx', 'a self-crossing track of 2,000 random points', '2',
     lambda: gpx([random_points(2000, 2)]), 200),
    ('random-450k.gpx', '450,000 random points (20 MB)', '2',
     lambda: gpx([random_points(450_000, 3)]), 'random-450k.gpx is too intricate for a pack'),
    ('many-points.gpx', '600,000 points (14 MB)', '2',
     lambda: b'<gpx><trk><trkseg>' + b'<trkpt lat="46" lon="7"/>' * 600_000 + b'</trkseg></trk></gpx>',
     'many-points.gpx holds more than 500,000 points'),
    ('around-the-world.geojson', 'five lines from longitude -89 to 89 with a 1 m corridor (128 bytes)', '0.001',
     lambda: json.dumps({'type': 'MultiLineString', 'coordinates': [[[-89, lat], [89, lat]]
                                                                     for lat in range(5)]}).encode(), 200),
    ('tour.gpx', 'a smooth 2,000 km tour recorded every 10 m (200,000 points, 11 MB)', '2',
     lambda: gpx([tour(2000, 10)]), 200),
    ('star.geojson', 'a polygon of 20,000 random corners', '1', lambda: star(20_000),
     'star.geojson is too intricate for a pack'),
    ('xmlns.gpx', "gpxpy's regular expression attack (384 kB)", '2',
     lambda: b'<gpx' + b' xmlns' * 64000 + b'>', 'xmlns.gpx is not a readable GPX file'),
    ('attributes.gpx', 'one tag of a million namespace declarations (16 MB)', '2',
     lambda: b'<gpx ' + b' '.join(b'xmlns:n%d="u"' % i for i in range(1_000_000)) + b'/>',
     'attributes.gpx is not a readable GPX file: it holds a tag longer than 64 kB'),
    ('elements.gpx', '4.5 million empty elements (18 MB)', '2',
     lambda: b'<gpx>' + b'<a/>' * 4_500_000 + b'</gpx>', 'elements.gpx holds more than 4,000,000 XML elements'),
    ('laughs.gpx', 'entity expansion', '2',
     lambda: b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;'
             b'&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><gpx>&c;&c;&c;</gpx>',
     'laughs.gpx declares a DOCTYPE'),
    ('deep.geojson', 'GeoJSON nested 100,000 deep', '2',
     lambda: b'{"type": "LineString", "coordinates": ' + b'[' * 100_000 + b']' * 100_000 + b'}',
     'deep.geojson is not readable GeoJSON: it is nested too deeply'),
    ('collections.geojson', 'GeometryCollections nested 5,000 deep', '2', lambda: nested(5000),
     'collections.geojson is not readable GeoJSON'),
    ('points.geojson', '45,000 point features (4.5 MB)', '2', lambda: point_features(45_000),
     'points.geojson is too intricate for a pack'),
    ('big.geojson', 'GeoJSON of 6 MB', '2', lambda: point_features(60_000),
     'big.geojson is larger than the 5 MB a GeoJSON file may be'),
]
