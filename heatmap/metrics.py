"""``GET /metrics``: what the server did, for Prometheus, written by prometheus-client from its own registry.

One collector reads, when Prometheus asks, the counters the server keeps anyway (the tile service's,
the refresher's, the members' usage) and the state of the cookies, the caches and the packs: a tile
costs no metric update of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .keys import Keys, KeysError
from .refresher import Refresher
from .store import CookieStore
from .upstream import TileService

ANSWERED = ('memory', 'disk', 'strava', 'overzoom', 'stale', 'redirect', 'error')
PACK_STATES = ('running', 'done', 'failed', 'cancelled')


def counted(counters: Counter, kind: str) -> dict[tuple, int]:
    """The counts of one kind in a counter whose keys are ``(kind, *labels)``.

    >>> counted(Counter({('upstream', '200'): 3, ('upstream failed', '502'): 1, 'tiles_served': 9}), 'upstream')
    {('200',): 3}
    """
    return {key[1:]: value for key, value in list(counters.items()) if isinstance(key, tuple) and key[0] == kind}


class ServerCollector:
    """The server's metrics, read from its parts at each scrape."""

    def __init__(self, tiles: TileService, refresher: Refresher, store: CookieStore, keys: Keys,
                 pack_states: Callable[[], Counter]):
        self.tiles, self.refresher, self.store, self.keys, self.pack_states = tiles, refresher, store, keys, pack_states

    def collect(self) -> Iterator[Metric]:
        counters = self.tiles.counters
        served = CounterMetricFamily('heatmap_tiles_served', 'Tile requests answered, by how: from memory, from the '
                                     'disk cache, fetched from Strava, cut from an ancestor (overzoom), a stale copy '
                                     'while Strava failed, a redirect, or an error', labels=['answered'])
        answered = counted(counters, 'answered')
        for how in ANSWERED:
            served.add_metric([how], answered.get((how,), 0))
        yield served
        yield self._by(counters, 'upstream', 'heatmap_upstream_requests', 'Requests to Strava for tiles, by its '
                       'status or why there was none (dns, refused, timeout, broken)', ['status'])
        yield self._by(counters, 'upstream failed', 'heatmap_upstream_failures', 'Requests to Strava that brought no '
                       'tile, by its status or why there was none', ['status'])
        yield CounterMetricFamily('heatmap_rate_limited', 'New tiles refused (429) or served stale because a client '
                                  'or member was over HEATMAP_RATE_LIMIT', value=counters['rate_limited'])
        yield self._by(self.refresher.counters, 'refresh', 'heatmap_refreshes', 'Refreshes from the session and '
                       'logins, by source (session, local, apify, browser: a pushed session) and result (ok, or the '
                       "failure's reason)", ['source', 'result'])
        state = self.store.state
        yield GaugeMetricFamily('heatmap_cookies_valid', '1 while the stored tile cookies are valid',
                                value=int(state.tiles_valid()))
        if state.expires_at is not None:
            yield GaugeMetricFamily('heatmap_cookies_expiry_timestamp_seconds', 'When the stored tile cookies expire',
                                    value=state.expires_at)
        yield from self._caches()
        packs = GaugeMetricFamily('heatmap_packs', 'Offline packs of the /packs/ page, by state', labels=['state'])
        states = self.pack_states()
        for name in PACK_STATES:
            packs.add_metric([name], states.get(name, 0))
        yield packs
        yield from self._members()

    @staticmethod
    def _by(counters: Counter, kind: str, name: str, text: str, labels: list[str]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, text, labels=labels)
        for values, count in sorted(counted(counters, kind).items()):
            family.add_metric(list(values), count)
        return family

    def _caches(self) -> Iterator[Metric]:
        size = GaugeMetricFamily('heatmap_cache_bytes', 'Bytes the tile cache takes: on disk as the disk allocates '
                                 'them, in memory as counted against HEATMAP_MEMORY_CACHE_MB', labels=['cache'])
        entries = GaugeMetricFamily('heatmap_cache_entries', 'Tiles in the tile cache', labels=['cache'])
        disk_bytes, disk_tiles = self.tiles.cache.usage()
        size.add_metric(['disk'], disk_bytes)
        entries.add_metric(['disk'], disk_tiles)
        memory = self.tiles.cache.memory
        if memory is not None:
            size.add_metric(['memory'], memory.bytes)
            entries.add_metric(['memory'], len(memory))
        yield size
        yield entries

    def _members(self) -> Iterator[Metric]:
        served = CounterMetricFamily('heatmap_member_tiles_served', 'Tiles served to each member', labels=['member'])
        fetched = CounterMetricFamily('heatmap_member_tiles_fetched', 'Tiles fetched from Strava for each member',
                                      labels=['member'])
        try:
            members = self.keys.usage()
        except KeysError:  # the log and `keys list` say why; the other metrics still count
            members = []
        for member in members:
            served.add_metric([member.name], member.served)
            fetched.add_metric([member.name], member.fetched)
        yield served
        yield fetched


def registry(collector: ServerCollector) -> CollectorRegistry:
    """A registry of the server's own (not prometheus-client's global one, with its process metrics)."""
    own = CollectorRegistry()
    own.register(collector)
    return own


def exposition(own: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The metrics in the format the scraper's ``Accept`` asks for (Prometheus's text format by default), and its
    content type."""
    encode, content_type = choose_encoder(accept)
    return encode(own), content_type
