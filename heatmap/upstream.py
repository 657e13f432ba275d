"""Getting tiles: from the cache, else the pooled upstream fetch with the cookie header, and what to answer."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.exceptions import TimeoutError as UpstreamTimeout

from .access import RateLimiter
from .cache import TileCache
from .cookies import tile_cookie_header
from .layers import Tile, transparent_png, upstream_url
from .sources import RefreshError

log = logging.getLogger(__name__)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
MAX_AGE = re.compile(r'max-age=(\d+)')
CHECK_TILE = (12, 2048, 1361)  # z, x, y of the tile that new cookies are checked on


@dataclass
class TileAnswer:
    """What to send for a tile: a cached file, a redirect, or an error with a one-line reason."""

    status: int
    file: str | None = None  # a cached tile, relative to the cache root
    stat: os.stat_result | None = None  # of that file: its validators (ETag, Last-Modified)
    body: bytes | None = None  # the tile, when it was just fetched: no need to read the file back
    location: str | None = None
    reason: str = ''
    retry_after: int | None = None

    @property
    def etag(self) -> str:
        """The same for a tile whether it is sent from memory or from the cache, until it changes."""
        return f'"{self.stat.st_mtime_ns:x}-{self.stat.st_size:x}"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.stat.st_mtime, usegmt=True)


def max_age(cache_control: str | None) -> int | None:
    """The ``max-age`` of a Cache-Control header.

    >>> max_age('public, max-age=3600')
    3600
    >>> max_age(None) is None
    True
    """
    match = MAX_AGE.search(cache_control or '')
    return int(match.group(1)) if match else None


def upstream_pool(template: str, size: int) -> urllib3.PoolManager:
    """Keep-alive connections to the tile host. urllib3 directly: requests' session layer costs ~0.5 ms a tile.

    It honours ``https_proxy``/``http_proxy`` as requests would, read once.
    """
    proxy = getproxies().get(urlsplit(template).scheme)
    if proxy and not proxy_bypass(urlsplit(template).hostname or ''):
        return urllib3.ProxyManager(proxy, num_pools=4, maxsize=size)
    return urllib3.PoolManager(num_pools=4, maxsize=size)


def signed(url: str, cookies) -> str:
    """The legacy scheme: the CloudFront cookies as ``Key-Pair-Id``, ``Policy`` and ``Signature`` query parameters.

    >>> signed('https://h/t.png?px=256', [{'name': 'CloudFront-Policy', 'value': 'p'},
    ...        {'name': 'CloudFront-Signature', 'value': 's~'}, {'name': 'CloudFront-Key-Pair-Id', 'value': 'k'}])
    'https://h/t.png?px=256&Key-Pair-Id=k&Policy=p&Signature=s~'
    """
    values = {c['name']: c['value'] for c in cookies}
    query = urlencode({'Key-Pair-Id': values['CloudFront-Key-Pair-Id'], 'Policy': values['CloudFront-Policy'],
                       'Signature': values['CloudFront-Signature']})
    return f"{url}{'&' if '?' in url else '?'}{query}"


class _Flight:
    def __init__(self):
        self.done = threading.Event()
        self.answer: TileAnswer | None = None


class TileService:
    """Answers tile requests from the cache, the upstream with the stored cookies, or with a clear error."""

    def __init__(self, store, refresher, cache: TileCache, tile_template: str, public_template: str | None,
                 public_max_zoom: int, timeout: float, limiter: RateLimiter | None = None, pool_size: int = 32,
                 wait_for_cookies: float = 10):
        self.store, self.refresher, self.cache = store, refresher, cache
        self.limiter = limiter or RateLimiter(0)
        self.tile_template, self.public_template, self.public_max_zoom = tile_template, public_template, public_max_zoom
        self.timeout, self.wait_for_cookies = timeout, wait_for_cookies
        self.http = upstream_pool(tile_template, pool_size)
        self.counters: Counter = Counter()
        self._flights: dict[Tile, _Flight] = {}
        self._lock = threading.Lock()

    def is_public(self, tile: Tile) -> bool:
        return self.public_template is not None and tile.z <= self.public_max_zoom

    def tile(self, tile: Tile, client: str = '') -> TileAnswer:
        now = time.time()
        stale = self.cache.lookup(tile)
        if stale and self.cache.is_fresh(stale, now):
            self.counters['cache_hits'] += 1
            return TileAnswer(200, file=self.cache.relative_path(tile), stat=stale)
        wait = self.limiter.wait_needed(client)
        if wait:
            self.counters['rate_limited'] += 1
            if stale:
                return self._stale(tile, stale)
            return TileAnswer(429, reason='too many new tiles from this address: slow down',
                              retry_after=max(1, round(wait)))
        with self._lock:
            flight = self._flights.get(tile)
            leader = flight is None
            if leader:
                flight = self._flights[tile] = _Flight()
        if not leader:
            flight.done.wait(self.timeout + self.wait_for_cookies + 5)
            return flight.answer or TileAnswer(504, reason='the upstream fetch for this tile did not finish')
        try:
            flight.answer = self._fetch(tile, stale)
        finally:
            with self._lock:
                del self._flights[tile]
            flight.done.set()
        return flight.answer

    def _valid_state(self, may_wait: bool):
        state = self.store.state
        if not state.tiles_valid() and may_wait:
            self.refresher.wait_for_cookies(self.wait_for_cookies)
            state = self.store.state
        return state if state.tiles_valid() else None

    def _unavailable(self) -> TileAnswer:
        return TileAnswer(503, reason=self.refresher.unavailable_reason(), retry_after=60)

    def _fetch(self, tile: Tile, stale: os.stat_result | None) -> TileAnswer:
        if self.is_public(tile):
            return self._get(tile, upstream_url(self.public_template, tile), '', stale)
        state = self._valid_state(may_wait=stale is None)
        if state is None:
            return self._stale(tile, stale) if stale else self._unavailable()
        return self._get(tile, upstream_url(self.tile_template, tile), tile_cookie_header(state.cookies), stale)

    def redirect(self, tile: Tile) -> TileAnswer:
        """Redirect mode: a 302 to the configured query-signed template, signed with the stored cookies."""
        if self.is_public(tile):
            return TileAnswer(302, location=upstream_url(self.public_template, tile))
        state = self._valid_state(may_wait=True)
        if state is None:
            return self._unavailable()
        return TileAnswer(302, location=signed(upstream_url(self.tile_template, tile), state.cookies))

    def check_cookies(self, cookies: list[dict], redirecting: bool) -> None:
        """Load one tile with new cookies before trusting them; raise RefreshError if Strava refuses them."""
        probe = Tile('all', 'hot', CHECK_TILE[0], CHECK_TILE[1], CHECK_TILE[2])
        url = upstream_url(self.tile_template, probe)
        headers = {}
        if redirecting:
            url = signed(url, cookies)
        else:
            headers['Cookie'] = tile_cookie_header(cookies)
        try:
            status = self._request(url, headers).status
        except HTTPError as error:
            raise RefreshError('unreachable', f'could not check the new cookies on a tile ({type(error).__name__})') \
                from None
        if status in (401, 403):
            raise RefreshError('rejected', f'Strava refused the new cookies on a tile ({status})')

    def _stale(self, tile: Tile, stale: os.stat_result) -> TileAnswer:
        self.counters['stale_served'] += 1
        return TileAnswer(200, file=self.cache.relative_path(tile), stat=stale)

    def _get(self, tile: Tile, url: str, cookie_header: str, stale: os.stat_result | None) -> TileAnswer:
        self.counters['upstream_requests'] += 1
        headers = {'Cookie': cookie_header} if cookie_header else {}
        try:
            response = self._request(url, headers)
        except UpstreamTimeout:
            return self._failed(tile, stale, 504, f'Strava did not answer within {self.timeout:g} s')
        except HTTPError as error:
            return self._failed(tile, stale, 502, f'Strava could not be reached ({type(error).__name__})')
        now = time.time()
        if response.status == 200 and response.data.startswith(PNG_SIGNATURE):
            return self._fetched(tile, response.data, max_age(response.headers.get('Cache-Control')), now)
        if response.status == 404:
            return self._fetched(tile, transparent_png(tile.size), None, now)
        if response.status in (401, 403) and cookie_header:
            self.refresher.cookies_rejected(response.status)
            return self._failed(tile, stale, 503, f'Strava refused the cookies ({response.status}); getting new ones',
                                retry_after=60)
        return self._failed(tile, stale, 502, f'Strava answered {response.status}')

    def _fetched(self, tile: Tile, data: bytes, upstream_max_age: int | None, now: float) -> TileAnswer:
        stat = self.cache.store(tile, data, upstream_max_age, now)
        return TileAnswer(200, file=self.cache.relative_path(tile), stat=stat, body=data)

    def _request(self, url: str, headers: dict) -> urllib3.BaseHTTPResponse:
        return self.http.request('GET', url, headers=headers, retries=False, redirect=False,
                                 timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout))

    def _failed(self, tile: Tile, stale: os.stat_result | None, status: int, reason: str,
                retry_after: int | None = None) -> TileAnswer:
        self.counters['upstream_errors'] += 1
        log.warning('upstream error: %s%s', reason, '; serving the cached copy' if stale else '')
        if stale:
            return self._stale(tile, stale)
        return TileAnswer(status, reason=reason, retry_after=retry_after)
