"""A fake OpenStreetMap for the /packs/ page: standard map tiles and Nominatim's place search.

Tiles at ``/tiles/{z}/{x}/{y}.png`` are light grey PNGs that name themselves in a tEXt chunk; the
search at ``/search?q=…&format=jsonv2`` answers from a few places, in Nominatim's JSON (each with
``display_name`` and ``boundingbox`` as strings: south, north, west, east), with the CORS header
Nominatim sends. Counters tell a test what it was asked.

Run it as a demo server::

    python -m tests.fake_osm --port 8002

and point the server at it with the ``export`` line it prints.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from tests.fake_strava import tile_png
from tests.http_fake import FakeHandler, ServedInThread

PLACES = {  # name -> (display name, south, north, west, east)
    'grindelwald': ('Grindelwald, Interlaken-Oberhasli, Bern, Schweiz', 46.5860, 46.6560, 7.9750, 8.1200),
    'bern': ('Bern, Verwaltungskreis Bern-Mittelland, Bern, Schweiz', 46.9190, 46.9900, 7.2940, 7.4950),
    'yosemite valley': ('Yosemite Valley, Mariposa County, California, United States', 37.7050, 37.7600,
                        -119.6700, -119.5300),
}
TILE_PATH = re.compile(r'/tiles/(\d+)/(\d+)/(\d+)\.png')
CORS = [('Access-Control-Allow-Origin', '*')]  # as Nominatim and OpenStreetMap's tile servers send


@dataclass
class FakeOSM(ServedInThread):
    counters: Counter = field(default_factory=Counter)
    searches: list = field(default_factory=list)
    host: str = '127.0.0.1'
    port: int = 0

    def reset(self) -> None:
        self.counters.clear()
        self.searches.clear()

    def server_settings(self) -> dict[str, str]:
        return {'HEATMAP_BASEMAP_URL': self.url + '/tiles/{z}/{x}/{y}.png',
                'HEATMAP_PLACE_SEARCH_URL': self.url + '/search'}


class _Handler(FakeHandler):
    fake: FakeOSM

    def do_GET(self):
        url = urlsplit(self.path)
        tile = TILE_PATH.fullmatch(url.path)
        if tile:
            self.fake.counters['tiles'] += 1
            return self._send(200, tile_png(256, 'gray', 'osm/' + '/'.join(tile.groups())), 'image/png', CORS)
        if url.path == '/search':
            query = {name: values[0] for name, values in parse_qs(url.query).items()}
            self.fake.counters['searches'] += 1
            self.fake.searches.append(query)
            wanted = query.get('q', '').strip().lower()
            found = [{'display_name': name, 'boundingbox': [str(south), str(north), str(west), str(east)],
                      'lat': str((south + north) / 2), 'lon': str((west + east) / 2)}
                     for key, (name, south, north, west, east) in PLACES.items() if wanted and wanted in key]
            return self._send(200, json.dumps(found).encode(), 'application/json', CORS)
        self._send(404, b'not found', 'text/plain', CORS)


FakeOSM.handler = _Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=8002)
    fake = FakeOSM(port=parser.parse_args().port)
    settings = ' '.join(f"{name}='{value}'" for name, value in fake.server_settings().items())
    fake.serve_until_interrupted(f'fake OpenStreetMap (places: {", ".join(PLACES)}).\nPoint the server at it with:\n'
                                 f'  export {settings}\nrunning')


if __name__ == '__main__':
    main()
