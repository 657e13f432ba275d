"""Getting a pack's tiles politely and writing them into its file.

``Runner.write`` goes through the tiles of a cover zoom by zoom. A tile the cache holds is free;
every request to Strava waits for its slot at ``rate`` a second. A tile above zoom 15 is cut here
from its zoom-15 ancestor, which the lower zooms have usually fetched already: only a missing
ancestor costs a request (and a slot). A refused or failed tile waits and tries again, longer each
time (an expired cookie gets renewed by the refresher meanwhile), and the pack stops after
``give_up_after`` failures in a row. ``cancelled`` is asked between tiles and during every wait.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ..layers import UPSTREAM_MAX_ZOOM, Tile
from ..overzoom import ancestor
from ..refresher import backoff_delay
from . import PackFailed
from .area import Cover
from .formats import WRITERS, part_path
from .request import Estimate, PackRequest, size_text

PACK_CLIENT = 'pack'  # the client name packs use with the tile service's per-client limit
# Rough sizes of a Strava heat tile, for the estimate of tiles not cached yet; cached ones count as they are.
TILE_BYTES_GUESS = {256: 15_000, 512: 45_000}
SIZE_CHECK_EVERY = 50  # tiles between looks at the part file's size


class PackCancelled(Exception):
    """The pack was cancelled while it was being made."""


class TileCacheLike(Protocol):
    def lookup(self, tile: Tile) -> os.stat_result | None: ...

    def is_fresh(self, stat: os.stat_result, now: float) -> bool: ...

    def relative_path(self, tile: Tile) -> str: ...

    def read(self, relative: str) -> bytes | None: ...


class TileGetter(Protocol):
    """What packs need of ``heatmap.upstream.TileService``."""

    cache: TileCacheLike

    def tile(self, tile: Tile, client: str | None = ''):
        """An answer with ``status``, ``body`` (bytes or None), ``file`` (under the cache root), ``reason``
        and ``retry_after``; ``client`` None: the rate limit is paid already."""

    def bytes_of(self, answer) -> bytes | None:
        """The tile a 200 answer holds; None when it was evicted meanwhile."""


@dataclass(frozen=True)
class Progress:
    """Where a pack is: tiles done of the total, how many requests to Strava it made, time left, a note."""

    done: int
    total: int
    fetched: int = 0
    seconds_left: float = 0.0
    note: str = ''

    @property
    def percent(self) -> int:
        return 100 * self.done // self.total if self.total else 100


class Pacer:
    """Spaces calls at least ``1 / rate`` seconds apart, with no burst at the start.

    >>> slept = []
    >>> pacer = Pacer(2, clock=lambda: 0.0, sleep=slept.append)
    >>> pacer.wait(); pacer.wait(); pacer.wait(); slept
    [0.5, 1.0]
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval, self.clock, self.sleep = 1 / rate, clock, sleep
        self._next = float('-inf')

    def wait(self) -> None:
        now = self.clock()
        if self._next > now:
            self.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


def never() -> bool:
    return False


class Runner:
    """Makes packs with ``tiles`` (the server's tile service: its cache, cookies and refresh) at ``rate`` requests
    to Strava a second, shared by every pack it makes."""

    def __init__(self, tiles: TileGetter, rate: float, backoff: tuple[float, float] = (2, 120),
                 give_up_after: int = 8):
        self.tiles, self.rate, self.backoff, self.give_up_after = tiles, rate, backoff, give_up_after
        self.pacer = Pacer(rate)

    def write(self, request: PackRequest, found: Cover, estimate: Estimate, out: Path,
              report: Callable[[Progress], None], cancelled: Callable[[], bool] = never,
              room: Callable[[int], float] | None = None) -> Path:
        """Make the pack at ``out``; PackFailed says why it could not, PackCancelled that it was cancelled.
        ``room(size)`` tells how large the part file, ``size`` bytes now, may grow (asked every few tiles)."""
        try:
            return self._write(request, found, estimate, out, report, cancelled, room)
        except (OSError, sqlite3.Error) as error:
            raise PackFailed(f'cannot write the pack to {out} ({getattr(error, "strerror", None) or error}): '
                             'choose a folder you can write to, with room for the pack') from None

    def _write(self, request: PackRequest, found: Cover, estimate: Estimate, out: Path,
               report: Callable[[Progress], None], cancelled: Callable[[], bool],
               room: Callable[[int], float] | None) -> Path:
        writer = WRITERS[request.format](out, request.fingerprint(), request.px)
        try:
            stored = writer.stored()
            progress = Progress(0, estimate.total)
            requests_left = estimate.requests
            for zoom, tiles in found.tiles.items():
                for x, y in tiles:
                    if cancelled():
                        raise PackCancelled()
                    fetched = 0
                    if (zoom, x, y) not in stored:
                        image, fetched = self._image(request.tile(zoom, x, y), cancelled,
                                                     lambda note: report(replace(progress, note=note)))
                        writer.add(zoom, x, y, image)
                    requests_left = max(0, requests_left - fetched)
                    progress = Progress(progress.done + 1, estimate.total, progress.fetched + fetched,
                                        requests_left / self.rate)
                    report(progress)
                    if room and progress.done % SIZE_CHECK_EVERY == 0:
                        self._check_size(out, room)
            return writer.finish(request.info())
        finally:
            writer.close()

    @staticmethod
    def _check_size(out: Path, room: Callable[[int], float]) -> None:
        part = part_path(out)
        size = sum(path.stat().st_size for path in (part, part.with_name(part.name + '-journal')) if path.exists())
        allowed = room(size)
        if size > allowed:
            raise PackFailed(f'the pack grew to {size_text(size)}, more than the room left for packs '
                             f'({size_text(allowed)}, HEATMAP_PACKS_MAX_MB): choose a smaller area or fewer zooms')

    def _image(self, tile: Tile, cancelled: Callable[[], bool], note: Callable[[str], None]) -> tuple[bytes, int]:
        """The tile's PNG and how many requests to Strava it took (0 or 1); waits out failures."""
        failures = 0
        while True:
            image = self._cached(tile)
            if image:
                return image, 0
            if tile.z > UPSTREAM_MAX_ZOOM:
                parent = ancestor(tile)
                if self.is_cached(parent):  # cut here from its cached ancestor: no request, no slot
                    answer = self.tiles.tile(tile, client=None)
                    requests = 0
                else:
                    self._pace(cancelled)
                    answer = self.tiles.tile(parent, PACK_CLIENT)
                    requests = 1
                    if answer.status == 200:
                        answer = self.tiles.tile(tile, client=None)
            else:
                self._pace(cancelled)
                answer = self.tiles.tile(tile, PACK_CLIENT)
                requests = 1
            if answer.status == 200:
                image = self.tiles.bytes_of(answer)
                if image:
                    return image, requests
                continue  # evicted from the cache between the answer and the read: ask again
            if answer.status == 400:
                raise PackFailed(f'Strava refused the layer {tile.activity}/{tile.color}: {answer.reason}')
            failures += 1
            if failures >= self.give_up_after:
                raise PackFailed(f'stopped after {failures} failed tries in a row: {answer.reason}; '
                                 'make the pack again later: it goes on where it stopped')
            delay = backoff_delay(failures, *self.backoff)
            if answer.retry_after:
                delay = max(delay, min(answer.retry_after, self.backoff[1]))
            note(f'{answer.reason}: trying again in {delay:g} s')
            self._sleep(delay, cancelled)

    def _pace(self, cancelled: Callable[[], bool]) -> None:
        self.pacer.wait()
        if cancelled():
            raise PackCancelled()

    @staticmethod
    def _sleep(seconds: float, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cancelled():
                raise PackCancelled()
            time.sleep(min(0.2, deadline - time.monotonic()))

    def _cached(self, tile: Tile) -> bytes | None:
        cache = self.tiles.cache
        stat = cache.lookup(tile)
        return cache.read(cache.relative_path(tile)) if stat and cache.is_fresh(stat, time.time()) else None

    def is_cached(self, tile: Tile) -> bool:
        """Whether the cache holds a fresh copy of ``tile`` (without reading it)."""
        stat = self.tiles.cache.lookup(tile)
        return bool(stat and self.tiles.cache.is_fresh(stat, time.time()))

    def plan_requests(self, request: PackRequest, found: Cover) -> tuple[int, int, int]:
        """How many of the cover's tiles are cached, how many requests to Strava the rest takes, and their size
        (cached tiles as they are, the rest guessed)."""
        cached = requests = size = 0
        guess = TILE_BYTES_GUESS[request.px]
        fetched: set[Tile] = set()  # the tiles this pack will have asked Strava for, ancestors included
        now = time.time()
        for zoom, tiles in found.tiles.items():
            for x, y in tiles:
                tile = request.tile(zoom, x, y)
                stat = self.tiles.cache.lookup(tile)
                if stat and self.tiles.cache.is_fresh(stat, now):
                    cached += 1
                    size += stat.st_size
                    continue
                size += guess
                source = tile if zoom <= UPSTREAM_MAX_ZOOM else ancestor(tile)
                if source not in fetched and (source is tile or not self.is_cached(source)):
                    requests += 1
                    fetched.add(source)
        return cached, requests, size
