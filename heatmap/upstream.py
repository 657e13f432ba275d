"""Getting tiles: from the cache, else the pooled upstream fetch with the cookie header, and what to answer."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import urllib3
from urllib3.exceptions import HTTPError, NameResolutionError, NewConnectionError
from urllib3.exceptions import TimeoutError as UpstreamTimeout

from . import overzoom
from .access import RateLimiter
from .cache import PlannedCopy, TileCache, etag
from .cookies import athlete_of, tile_cookie_header
from .layers import UPSTREAM_MAX_ZOOM, Tile, png_size, transparent_png, upstream_url
from .sources import RefreshError
from .status import iso
from .store import CookieState

log = logging.getLogger(__name__)
MAX_AGE = re.compile(r'max-age=(\d+)')
CHECK_TILE = (12, 2048, 1361)  # z, x, y of the tile that new cookies are checked on
REDIRECT_REFUSED = "redirect mode does not work with Strava's current cookies; use HEATMAP_MODE=proxy"
FOLLOWERS_PER_TILE = 4  # requests that wait for another request's fetch of the same tile
FAILING_FOR = 300  # seconds a failed upstream fetch, with none good since, keeps /healthz saying why
PENDING_FOR = 2.0  # seconds after which a tile answered before its disk copy gets that copy from the next request


@dataclass
class TileAnswer:
    """What to send for a tile: a cached file, a redirect, or an error with a one-line reason."""

    status: int
    file: str | None = None  # a cached tile, relative to the cache root (None with a body: the disk refused it)
    stat: os.stat_result | None = None  # of that file: its validators (ETag, Last-Modified)
    body: bytes | None = None  # the tile, when it was just fetched: no need to read the file back
    location: str | None = None
    reason: str = ''
    retry_after: int | None = None
    refused_with: int | None = None  # Strava's 401 or 403 to the cookie header
    answered: str = ''  # where a 200 or 302 came from: memory, disk, strava, overzoom, stale or redirect
    planned: PlannedCopy | None = None  # of a disk copy not written yet (no ``stat`` yet)
    write: Callable[[], None] | None = field(default=None, repr=False)  # writes that copy (each call after the first
    writing: threading.Lock = field(default_factory=threading.Lock, repr=False)  # does nothing)

    @property
    def validators(self) -> os.stat_result | PlannedCopy:
        """The disk copy's stat, or what it will be while the copy is being written."""
        return self.stat or self.planned

    @property
    def etag(self) -> str:
        """The same for a tile whether it is sent from memory or from the cache, until it changes."""
        return etag(self.validators.st_mtime_ns, self.validators.st_size)

    @property
    def last_modified(self) -> str:
        return formatdate(self.validators.st_mtime, usegmt=True)


class WriteAfterSending:
    """A new tile's body for WSGI that writes the tile's disk copy once the server has sent it (at ``close()``)."""

    def __init__(self, answer: TileAnswer):
        self.answer = answer

    def __iter__(self):
        yield self.answer.body

    def close(self) -> None:
        self.answer.write()


def max_age(cache_control: str | None) -> int | None:
    """The ``max-age`` of a Cache-Control header.

    >>> max_age('public, max-age=3600')
    3600
    >>> max_age(None) is None
    True
    """
    match = MAX_AGE.search(cache_control or '')
    return int(match.group(1)) if match else None


def retry_after_seconds(header: str | None, default: int = 60) -> int:
    """Seconds from an upstream ``Retry-After`` header (only the number form), else ``default``.

    >>> retry_after_seconds('120'), retry_after_seconds('Wed, 21 Oct 2026 07:28:00 GMT'), retry_after_seconds(None)
    (120, 60, 60)
    """
    return int(header) if header and header.strip().isdigit() else default


def unreachable(error: HTTPError, host: str, timeout: float) -> tuple[str, int, str]:
    """A request to Strava that got no answer: its label for the counters, the status to answer and the reason.

    >>> unreachable(UpstreamTimeout(), 'content-a.strava.com', 10)
    ('timeout', 504, 'Strava did not answer within 10 s')
    """
    if isinstance(error, NameResolutionError):
        return 'dns', 502, f'could not connect to Strava: {host} is not a known host name'
    if isinstance(error, NewConnectionError):
        return 'refused', 502, f'could not connect to Strava ({host} refused the connection)'
    if isinstance(error, UpstreamTimeout):
        return 'timeout', 504, f'Strava did not answer within {timeout:g} s'
    return 'broken', 502, f'Strava could not be reached ({type(error).__name__})'


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
        self.followers = 0


class TileService:
    """Answers tile requests from the cache, the upstream with the stored cookies, or with a clear error.

    A request that waits for another request's fetch of the same tile holds a worker thread; past
    ``FOLLOWERS_PER_TILE`` on one tile or ``max_waiters`` in all, it gets a 503 at once, so that threads
    stay free for the rest. Waits for new cookies are not capped: they happen only while a quick
    refresh (one request to Strava) runs, and they end with it.
    """

    def __init__(self, store, refresher, cache: TileCache, tile_template: str, public_template: str | None,
                 public_max_zoom: int, timeout: float, limiter: RateLimiter | None = None, pool_size: int = 32,
                 wait_for_cookies: float = 10, max_waiters: int = 8, redirecting: bool = False,
                 personal_template: str | None = None, athlete_id: str = '', max_zoom: int = UPSTREAM_MAX_ZOOM):
        self.store, self.refresher, self.cache = store, refresher, cache
        self.personal_template, self.configured_athlete_id, self.max_zoom = personal_template, athlete_id, max_zoom
        self.limiter = limiter or RateLimiter(0)
        self.tile_template, self.public_template, self.public_max_zoom = tile_template, public_template, public_max_zoom
        self.timeout, self.wait_for_cookies, self.max_waiters = timeout, wait_for_cookies, max_waiters
        self.redirecting = redirecting
        self.http = upstream_pool(tile_template, pool_size)
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._cookie_headers: tuple[CookieState | None, dict[str, str]] = (None, {})  # built once per cookie set
        self.counters: Counter = Counter()
        self._flights: dict[Tile, _Flight] = {}
        self._waiting = 0
        self._lock = threading.Lock()
        self._redirect_checked: tuple[CookieState, str | None] | None = None
        self._last_failure: tuple[float, str] | None = None  # the last failed fetch, while none has worked since
        self._pending: dict[Tile, TileAnswer] = {}  # new tiles answered before their disk copy is written
        self._local = threading.local()  # .answer_first: this request writes its new tile's disk copy after answering

    def _write_pending(self, tile: Tile, data: bytes, upstream_max_age: int | None, now: float,
                       answer: TileAnswer) -> None:
        """Write the disk copy of a tile answered before it (once, whoever asks first), then forget it as pending."""
        with answer.writing:
            if answer.stat is None and self._pending.get(tile) is answer:
                answer.stat = self.cache.store(tile, data, upstream_max_age, now)  # None: the disk refused, it says
                with self._lock:
                    del self._pending[tile]

    def is_public(self, tile: Tile) -> bool:
        return self.public_template is not None and tile.z <= self.public_max_zoom and tile.kind == 'global'

    def athlete_id(self, state: CookieState | None = None) -> str | None:
        """Whose personal heatmap: STRAVA_ATHLETE_ID, else the ``strava_remember_id`` a login or an export brought."""
        return self.configured_athlete_id or athlete_of((state or self.store.state).cookies)

    # -- proxy mode --------------------------------------------------------------------------
    def tile(self, tile: Tile, client: str | None = '', answer_first: bool = False) -> TileAnswer:
        """The answer for ``tile``; ``client`` is who pays the rate limit for a miss (None: paid already).

        A personal tile is the current athlete's (unless ``tile.athlete`` names one), cached under that athlete.
        With ``answer_first`` a new tile's disk copy is written only when ``answer.write()`` is called, after the
        answer went out (the server's routes do: a miss is answered sooner); the answer carries the validators
        that copy will have. Until then the same tile is answered from the pending answer.
        """
        if tile.kind == 'personal' and not tile.athlete:
            athlete = self.athlete_id()
            if not athlete:
                return TileAnswer(503, retry_after=3600, reason='the personal heatmap needs your athlete id: set '
                                  'STRAVA_ATHLETE_ID (the number in strava.com/athletes/<id>), or import cookies '
                                  'that hold strava_remember_id')
            tile = replace(tile, athlete=athlete)
        now = time.time()
        stale = self.cache.lookup(tile)
        if stale and self.cache.is_fresh(stale, now):
            self.counters['cache_hits'] += 1
            return TileAnswer(200, file=self.cache.relative_path(tile), stat=stale, answered='disk')
        pending = self._pending.get(tile)  # just fetched, its disk copy on its way: the same answer while fresh
        if pending is not None and self.cache.is_fresh(pending.planned, now):
            if now - pending.planned.st_mtime > PENDING_FOR:  # never written by its answer: write it now
                pending.write()
            self.counters['cache_hits'] += 1
            return replace(pending, answered='memory')
        wait = self.limiter.wait_needed(client) if client is not None else 0
        if wait:
            self.counters['rate_limited'] += 1
            if stale:
                return self._stale(tile, stale)
            return TileAnswer(429, reason='too many new tiles from this address or member key: slow down',
                              retry_after=max(1, round(wait)))
        with self._lock:
            flight = self._flights.get(tile)
            leader = flight is None
            if leader:
                flight = self._flights[tile] = _Flight()
            else:
                flight.followers += 1
                patient = flight.followers <= FOLLOWERS_PER_TILE
        if not leader:
            return self._follow(flight, patient)
        outer, self._local.answer_first = getattr(self._local, 'answer_first', False), answer_first
        try:
            flight.answer = self._overzoom(tile, stale) if tile.z > UPSTREAM_MAX_ZOOM else self._fetch(tile, stale)
        finally:
            self._local.answer_first = outer
            with self._lock:
                del self._flights[tile]
            flight.done.set()
        return flight.answer

    def _follow(self, flight: _Flight, patient: bool) -> TileAnswer:
        """Wait for the leader's answer, as long as its fetch may take; past the caps, a 503 at once."""
        with self._lock:
            counted = patient and self._waiting < self.max_waiters
            self._waiting += counted
        if not counted:
            return TileAnswer(503, reason='this tile is being fetched for many clients at once: retry in a second',
                              retry_after=1)
        try:
            flight.done.wait(self.timeout * 2 + self.wait_for_cookies + 5)
        finally:
            with self._lock:
                self._waiting -= 1
        return flight.answer or TileAnswer(504, reason='the upstream fetch for this tile did not finish')

    def _valid_state(self, may_wait: bool) -> CookieState | None:
        state = self.store.state
        if not state.tiles_valid() and may_wait:
            self.refresher.wait_for_cookies(self.wait_for_cookies)  # only for a quick refresh: seconds at most
            state = self.store.state
        return state if state.tiles_valid() else None

    def _unavailable(self) -> TileAnswer:
        return TileAnswer(503, reason=self.refresher.unavailable_reason(), retry_after=60)

    def _overzoom(self, tile: Tile, stale: os.stat_result | None) -> TileAnswer:
        """A tile deeper than Strava's: cut from its zoom-15 ancestor, which comes through the cache like any tile."""
        parent = overzoom.ancestor(tile)
        answer = self.tile(parent, client=None)
        data = self.bytes_of(answer) if answer.status == 200 else None
        if data is None:
            return self._stale(tile, stale) if stale and answer.status != 400 else answer
        now = time.time()
        made_at = answer.stat.st_mtime if answer.stat else now  # no stat: fetched just now, with no disk copy
        fresh_for = max(0, int(made_at + self.cache.ttl - now))  # not a second longer than its ancestor
        try:
            cut = overzoom.cut(data, tile)
        except overzoom.UnreadableImage as error:
            self.cache.discard(parent)  # asked again next time, rather than failing every child until the TTL
            return self._failed(tile, stale, 502, f"Strava's zoom-15 tile cannot be read ({error}): not kept",
                                upstream='bad image')
        return self._fetched(tile, cut, fresh_for, now, 'overzoom')

    def bytes_of(self, answer: TileAnswer) -> bytes | None:
        """The tile a 200 answer holds: its body, else its cached file; None when that was evicted meanwhile."""
        return answer.body if answer.body is not None else self.cache.read(answer.file)

    def _fetch(self, tile: Tile, stale: os.stat_result | None) -> TileAnswer:
        if self.is_public(tile):
            return self._get(tile, upstream_url(self.public_template, tile), None, stale)
        state = self._valid_state(may_wait=stale is None)
        if state is None:
            return self._stale(tile, stale) if stale else self._unavailable()
        answer = self._get(tile, self._url(tile), state, stale)
        if answer.refused_with is None:
            return answer
        self.refresher.cookies_rejected(state, answer.refused_with)
        renewed = self._valid_state(may_wait=True)
        if renewed is None or renewed.same_cookies(state):
            return TileAnswer(503, reason=self.refresher.unavailable_reason(), retry_after=60)
        answer = self._get(tile, self._url(tile), renewed, stale)
        if answer.refused_with is not None:
            self.refresher.cookies_rejected(renewed, answer.refused_with)
            return TileAnswer(503, reason='Strava refused the new cookies too; see / for what to do', retry_after=60)
        return answer

    def _stale(self, tile: Tile, stale: os.stat_result) -> TileAnswer:
        self.counters['stale_served'] += 1
        return TileAnswer(200, file=self.cache.relative_path(tile), stat=stale, answered='stale')

    def _get(self, tile: Tile, url: str, state: CookieState | None, stale: os.stat_result | None) -> TileAnswer:
        """One upstream request for ``tile``, sent with the tile cookies of ``state`` (None: a public tile)."""
        self.counters['upstream_requests'] += 1
        headers = {'Cookie': self._cookies_of(state, tile.kind)} if state else {}
        try:
            response = self._request(url, headers)
        except HTTPError as error:
            label, status, reason = unreachable(error, urlsplit(url).hostname, self.timeout)
            self.counters['upstream', label] += 1
            return self._failed(tile, stale, status, reason, upstream=label)
        now = time.time()
        status = response.status
        self.counters['upstream', str(status)] += 1
        if status < 500 and status != 429:
            self._last_failure = None  # the tile server answers; a failure below sets it again
        if status == 200 and response.data.startswith(b'\x89PNG'):
            size = png_size(response.data)
            if size != (tile.size, tile.size):  # never stored: a wrong or damaged image would be served for days
                what = f'a {size[0]} × {size[1]} px image' if size else 'a damaged PNG'
                return self._failed(tile, stale, 502, f'Strava sent {what} for a {tile.size} px tile',
                                    upstream='bad image')
            return self._fetched(tile, response.data, max_age(response.headers.get('Cache-Control')), now,
                                'strava')
        if status == 404:
            return self._fetched(tile, transparent_png(tile.size), None, now, 'strava')
        if status == 400 and tile.activity.startswith('sport_'):
            return TileAnswer(400, reason=f'Strava has no heatmap for the activity {tile.activity!r}: check the '
                              'spelling of the sport type (e.g. sport_GravelRide)')
        if status in (401, 403) and state:
            self.counters['upstream failed', str(status)] += 1
            if stale:
                self.refresher.cookies_rejected(state, status)
                return self._stale(tile, stale)
            return TileAnswer(503, refused_with=status, reason=f'Strava refused the cookies ({status})')
        if status == 429:
            return self._failed(tile, stale, 503, 'Strava is limiting requests from this server (429)',
                                retry_after=retry_after_seconds(response.headers.get('Retry-After')), upstream='429')
        return self._failed(tile, stale, 502, f'Strava answered {status}', upstream=str(status))

    def _url(self, tile: Tile) -> str:
        if tile.kind == 'personal':
            return upstream_url(self.personal_template, tile, tile.athlete)
        return upstream_url(self.tile_template, tile)

    def _cookies_of(self, state: CookieState, kind: str = 'global') -> str:
        """The Cookie header for a tile of ``kind`` with the cookies of ``state``, built once for each cookie set:
        the tile cookies, and for the personal heatmap the session too."""
        built_for, headers = self._cookie_headers
        if built_for is not state:
            headers = {'global': tile_cookie_header(state.cookies),
                       'personal': tile_cookie_header(state.cookies, with_session=True)}
            self._cookie_headers = (state, headers)
        return headers[kind]

    def _fetched(self, tile: Tile, data: bytes, upstream_max_age: int | None, now: float,
                 answered: str) -> TileAnswer:
        """The answer with a tile just fetched or made, and its disk copy (written by ``answer.write()`` when the
        request answers first); only the bytes when the disk refused it."""
        if getattr(self._local, 'answer_first', False):
            answer = TileAnswer(200, file=self.cache.relative_path(tile), body=data, answered=answered,
                                planned=PlannedCopy(self.cache.made_at_ns(upstream_max_age, now), len(data)))
            answer.write = lambda: self._write_pending(tile, data, upstream_max_age, now, answer)
            with self._lock:
                self._pending[tile] = answer
            return answer
        stat = self.cache.store(tile, data, upstream_max_age, now)
        if stat is None:
            return TileAnswer(200, body=data, answered=answered)
        return TileAnswer(200, file=self.cache.relative_path(tile), stat=stat, body=data, answered=answered)

    def _request(self, url: str, headers: dict) -> urllib3.BaseHTTPResponse:
        return self.http.urlopen('GET', url, headers=headers, retries=False, redirect=False, timeout=self._timeout)

    def _failed(self, tile: Tile, stale: os.stat_result | None, status: int, reason: str,
                retry_after: int | None = None, upstream: str = '') -> TileAnswer:
        """A fetch that failed (``upstream``: Strava's status, or why it gave none): the stale copy, else ``status``."""
        self.counters['upstream_errors'] += 1
        self.counters['upstream failed', upstream] += 1
        self._last_failure = (time.time(), reason)
        log.warning('upstream error: %s%s', reason, '; serving the cached copy' if stale else '')
        if stale:
            return self._stale(tile, stale)
        return TileAnswer(status, reason=reason, retry_after=retry_after)

    def upstream_problem(self, now: float | None = None) -> str | None:
        """Why new tiles fail although the cookies are good: the last upstream fetch failed, a short while ago,
        and none has worked since. It clears with the next fetch that works."""
        failure = self._last_failure
        if failure is None or (time.time() if now is None else now) - failure[0] > FAILING_FOR:
            return None
        return (f"Strava's tile server is failing ({failure[1]}, at {iso(failure[0])}): new tiles fail, cached ones "
                'are still served, and the next new tile tries again')

    # -- redirect mode and checks ------------------------------------------------------------
    def redirect(self, tile: Tile) -> TileAnswer:
        """Redirect mode: a 302 to the configured query-signed template, signed with the stored cookies."""
        if self.is_public(tile):
            return TileAnswer(302, location=upstream_url(self.public_template, tile), answered='redirect')
        state = self._valid_state(may_wait=True)
        if state is None:
            return self._unavailable()
        problem = self.redirect_problem(state)
        if problem:
            return TileAnswer(503, reason=problem, retry_after=3600)
        return TileAnswer(302, location=signed(upstream_url(self.tile_template, tile), state.cookies),
                          answered='redirect')

    def redirect_problem(self, state: CookieState | None = None) -> str | None:
        """In redirect mode, why signed URLs with these cookies would end in a 403; checked once per cookie set."""
        state = state or self.store.state
        if not self.redirecting or not state.tiles_valid():
            return None
        checked = self._redirect_checked
        if checked and checked[0].same_cookies(state):
            return checked[1]
        try:
            self.check_cookies(list(state.cookies))
            problem = None
        except RefreshError as error:
            if error.reason == 'unreachable':
                return None  # unknown for now: ask again with the next request
            problem = str(error)
        self._redirect_checked = (state, problem)
        if problem:
            log.error('%s', problem)
        return problem

    def check_cookies(self, cookies: list[dict]) -> None:
        """Load one tile with new cookies before trusting them; raise RefreshError if Strava refuses them."""
        probe = Tile('all', 'hot', CHECK_TILE[0], CHECK_TILE[1], CHECK_TILE[2])
        url = upstream_url(self.tile_template, probe)
        headers = {}
        if self.redirecting:
            url = signed(url, cookies)
        else:
            headers['Cookie'] = tile_cookie_header(cookies)
        try:
            status = self._request(url, headers).status
        except HTTPError as error:
            raise RefreshError('unreachable', f'could not check the new cookies on a tile ({type(error).__name__})') \
                from None
        if status in (401, 403):
            if self.redirecting:
                raise RefreshError('redirect_refused', f'{REDIRECT_REFUSED} (Strava answered {status} to a signed URL)')
            raise RefreshError('rejected', f'Strava refused the new cookies on a tile ({status})')
