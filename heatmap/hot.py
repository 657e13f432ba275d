"""Hot tiles at the speed of the web server: a WSGI layer that answers a repeated tile request from memory.

A request whose path and query string are those of an earlier request that was answered 200 with a tile gets the
same answer again from the tile's memory copy (``heatmap.cache.MemoryCache``), before any routing: the same bytes
and headers, or 304 when its ``If-None-Match`` names the tile's ETag. The key in the query is left out of the
match (every key gets the same tile) and checked on each answer (``heatmap.keys.Keys.admit``), so that a key
revoked a moment ago is refused by the application, and each member's tiles are counted as theirs. Everything
else, and every answer the memory cannot give exactly as the application would (``Range``,
``If-Modified-Since``, ``HEAD``), goes to the application unchanged.

The application says which tile a 200 was answered with by setting ``environ[HOT_TILE]`` to the tile's answer
(``heatmap.upstream.TileAnswer``: its file, stat and, when just fetched, body); this layer keeps the memory copy
then, so that only tiles asked for over HTTP take memory, not those an offline pack fetches.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from .access import Networks, client_address
from .cache import HotTile, TileCache
from .keys import Keys, split_key

log = logging.getLogger(__name__)
HOT_TILE = 'heatmap.tile_answer'  # environ key: the answer a tile response was made from
ANSWERED_BY_THE_APP = ('HTTP_RANGE', 'HTTP_IF_MODIFIED_SINCE')  # unless If-None-Match settles it first
NOT_KEPT = ('date',)  # headers that belong to one answer only (waitress adds its own Date)


def request_url(environ: dict) -> tuple[str, str]:
    """What a request is looked up by, its path and query string without the key; and the key.

    >>> request_url({'PATH_INFO': '/tiles/all/hot/13/4400/2686.png', 'QUERY_STRING': 'px=256&key=K'})
    ('/tiles/all/hot/13/4400/2686.png?px=256', 'K')
    """
    given, rest = split_key(environ.get('QUERY_STRING', ''))
    return f"{environ.get('PATH_INFO', '')}?{rest}", given


def kept_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a 200 that fit every later answer with the same tile.

    >>> kept_headers([('Content-Type', 'image/png'), ('Date', 'Sun, 29 Nov 2026 10:00:00 GMT')])
    [('Content-Type', 'image/png')]
    """
    return [(name, value) for name, value in headers if name.lower() not in NOT_KEPT]


class ThenRemember:
    """An application's answer, with the memory copy kept once the server has sent it (at ``close()``)."""

    def __init__(self, result: Iterable[bytes], remember: Callable[[], None]):
        self.result, self.remember = result, remember

    def __iter__(self):
        return iter(self.result)

    def close(self) -> None:
        try:
            if hasattr(self.result, 'close'):
                self.result.close()  # the tile's disk copy, when it is written after its answer
        finally:
            self.remember()


class HotTiles:
    """The WSGI application ``app`` with the tiles in ``cache``'s memory answered before it, to the callers ``keys``
    admits; hits count in ``counters`` and in ``keys``."""

    def __init__(self, app: Callable, cache: TileCache, counters: Counter, keys: Keys, trusted_proxies: Networks = ()):
        self.app, self.cache, self.memory, self.counters, self.keys = app, cache, cache.memory, counters, keys
        self.trusted_proxies = trusted_proxies  # for the DEBUG line's client
        self.debug = log.isEnabledFor(logging.DEBUG)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        url, given = request_url(environ)
        hot = self.memory.hit(url, time.time()) if environ['REQUEST_METHOD'] == 'GET' else None
        caller = None if hot is None else self.keys.admit(given, 'personal' if url.startswith('/personal/')
                                                           else 'global')
        if caller is not None:  # else the application answers, and says why a key is refused
            if environ.get('HTTP_IF_NONE_MATCH') == hot.etag:
                return self._answer(environ, hot, caller, '304 Not Modified', b'', start_response)
            if not any(name in environ for name in ANSWERED_BY_THE_APP):
                return self._answer(environ, hot, caller, '200 OK', hot.body, start_response)
        sent = []

        def remember_status(status: str, headers: list[tuple[str, str]], exc_info=None):
            sent.append((status, headers))
            return start_response(status, headers, exc_info)

        result = self.app(environ, remember_status)
        answer = environ.get(HOT_TILE)
        if answer is not None and environ['REQUEST_METHOD'] == 'GET' and sent and sent[-1][0] == '200 OK':
            headers = kept_headers(sent[-1][1])
            return ThenRemember(result, lambda: self._remember(url, answer, headers))
        return result

    def _remember(self, url: str, answer, headers: list[tuple[str, str]]) -> None:
        """Keep the memory copy of the tile just sent, and answer ``url`` with it from now on. A tile whose disk copy
        is still being written gets its copy too: the once-a-second check of the disk drops it if that write failed."""
        hot = self.cache.in_memory(answer.file, answer.validators, time.time(), answer.body)
        if hot is not None and (hot.etag,) == tuple(value for name, value in headers if name.lower() == 'etag'):
            self.memory.route(url, hot, headers)  # the copy of the very file sent

    def _answer(self, environ: dict, hot: HotTile, caller, status: str, body: bytes,
                start_response: Callable) -> list[bytes]:
        self.counters['cache_hits'] += 1
        self.counters['tiles_served'] += 1
        self.counters['answered', 'memory'] += 1
        self.keys.count(caller)
        if self.debug:  # as the application's line for a tile: the URL's path, the client, how it was answered
            log.debug('tile %s for %s (%s): %s memory', environ.get('PATH_INFO', ''),
                      client_address(environ, self.trusted_proxies), caller, status[:3])
        start_response(status, hot.headers)
        return [body]
