"""Hot tiles at the speed of the web server: a WSGI layer that answers a repeated tile request from memory.

A request whose path and query string are exactly those of an earlier request that was answered 200 with a tile
gets the same answer again from the tile's memory copy (``heatmap.cache.MemoryCache``), before any routing: the
same bytes and headers, or 304 when its ``If-None-Match`` names the tile's ETag. The query holds the access key,
so the same query string means the same key. Everything else, and every answer the memory cannot give exactly as
the application would (``Range``, ``If-Modified-Since``, ``HEAD``), goes to the application unchanged.

The application says which tile a 200 was answered with by setting ``environ[HOT_TILE]`` to the tile's answer
(``heatmap.upstream.TileAnswer``: its file, stat and, when just fetched, body); this layer keeps the memory copy
then, so that only tiles asked for over HTTP take memory, not those an offline pack fetches.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from .cache import HotTile, TileCache

log = logging.getLogger(__name__)
HOT_TILE = 'heatmap.tile_answer'  # environ key: the answer a tile response was made from
ANSWERED_BY_THE_APP = ('HTTP_RANGE', 'HTTP_IF_MODIFIED_SINCE')  # unless If-None-Match settles it first
NOT_KEPT = ('date',)  # headers that belong to one answer only (waitress adds its own Date)


def request_url(environ: dict) -> str:
    """The key of a request: its path and query string as they came.

    >>> request_url({'PATH_INFO': '/tiles/all/hot/13/4400/2686.png', 'QUERY_STRING': 'px=256'})
    '/tiles/all/hot/13/4400/2686.png?px=256'
    """
    return f"{environ.get('PATH_INFO', '')}?{environ.get('QUERY_STRING', '')}"


def kept_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a 200 that fit every later answer with the same tile.

    >>> kept_headers([('Content-Type', 'image/png'), ('Date', 'Sun, 29 Nov 2026 10:00:00 GMT')])
    [('Content-Type', 'image/png')]
    """
    return [(name, value) for name, value in headers if name.lower() not in NOT_KEPT]


class HotTiles:
    """The WSGI application ``app`` with the tiles in ``cache``'s memory answered before it; hits count in
    ``counters``."""

    def __init__(self, app: Callable, cache: TileCache, counters: Counter):
        self.app, self.cache, self.memory, self.counters = app, cache, cache.memory, counters
        self.debug = log.isEnabledFor(logging.DEBUG)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        url = request_url(environ)
        hot = self.memory.hit(url, time.time()) if environ['REQUEST_METHOD'] == 'GET' else None
        if hot is not None:
            if environ.get('HTTP_IF_NONE_MATCH') == hot.etag:
                return self._answer(hot, '304 Not Modified', b'', start_response)
            if not any(name in environ for name in ANSWERED_BY_THE_APP):
                return self._answer(hot, '200 OK', hot.body, start_response)
        sent = []

        def remember_status(status: str, headers: list[tuple[str, str]], exc_info=None):
            sent.append((status, headers))
            return start_response(status, headers, exc_info)

        result = self.app(environ, remember_status)
        answer = environ.get(HOT_TILE)
        if answer is not None and environ['REQUEST_METHOD'] == 'GET' and sent and sent[-1][0] == '200 OK':
            self._remember(url, answer, kept_headers(sent[-1][1]))
        return result

    def _remember(self, url: str, answer, headers: list[tuple[str, str]]) -> None:
        """Keep the memory copy of the tile just sent, and answer ``url`` with it from now on."""
        hot = self.cache.in_memory(answer.file, answer.stat, time.time(), answer.body)
        if hot is not None and (hot.etag,) == tuple(value for name, value in headers if name.lower() == 'etag'):
            self.memory.route(url, hot, headers)  # the copy of the very file sent

    def _answer(self, hot: HotTile, status: str, body: bytes, start_response: Callable) -> list[bytes]:
        self.counters['cache_hits'] += 1
        self.counters['tiles_served'] += 1
        if self.debug:
            log.debug('tile %s: %s from memory', hot.relative, status[:3])
        start_response(status, hot.headers)
        return [body]
