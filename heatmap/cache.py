"""The tile cache on disk: one file a tile, fresh for a TTL, kept under a size cap; and the memory cache before it.

Layout: ``<2 hex digits>/<activity>-<color>-<z>-<x>-<y><suffix>-<size>.png``, at most 256 directories, each made
when its first tile arrives and removed with its last, so that directories cost little and are counted. The cap
counts what the disk allocates (``st_blocks``), files and directories alike. An index in memory (filled by a
background scan at start, then kept up to date by ``store``) lets eviction drop the oldest tiles without a rescan.

The memory cache holds copies of recently served tiles, never more than their disk copies: each is fresh exactly as
long as its disk copy, is dropped when the disk cache evicts or replaces the tile, and is checked against the disk
(one ``stat``) at most every ``RECHECK_SECONDS``, so that a file removed by hand is noticed within that.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import re
import shutil
import sys
import threading
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .layers import Tile
from .store import explain, is_abandoned

log = logging.getLogger(__name__)
BUCKET = re.compile(r'[0-9a-f]{2}')
TILE_FILE = re.compile(r'(personal-\d{1,12}-)?[A-Za-z_]+-[a-z]+-\d{1,2}-\d{1,8}-\d{1,8}(@2x)?-\d{3,4}\.png')
OLD_TILE_FILE = re.compile(r'[A-Za-z_]+/[a-z]+/\d{1,2}/\d{1,8}/\d{1,8}(@2x)?-\d{3,4}\.png')
MEMORY_CACHE_MB = 24  # the default of HEATMAP_MEMORY_CACHE_MB: 10,000 tiles of 20 kB leave the server under 80 MB
RECHECK_SECONDS = 1.0  # how long a memory copy is trusted before one stat confirms that its disk copy is unchanged
ROUTES_PER_TILE = 4  # request URLs that lead to one memory copy (with or without ?px=; keys are left out): a few
ENTRY_BYTES = 2048  # what a memory copy takes beside its body: the object, its headers, its index entries


def tile_name(tile: Tile) -> str:
    """The tile's file name: its path with dashes, so that one directory level is enough.

    >>> tile_name(Tile('ride', 'hot', 13, 4400, 2686, px=256))
    'ride-hot-13-4400-2686-256.png'
    """
    return tile.path.replace('/', '-')


def bucket(name: str) -> str:
    """The directory of a tile file: two hex digits of a hash of its name, which spreads neighbours apart.

    >>> bucket('ride-hot-13-4400-2686-256.png'), bucket('ride-hot-13-4401-2686-256.png')
    ('1f', '69')
    """
    return f'{zlib.crc32(name.encode()) & 0xff:02x}'


def relative_path(name: str) -> str:
    """Where the tile file ``name`` lives under the cache root.

    >>> relative_path('ride-hot-13-4400-2686-256.png')
    '1f/ride-hot-13-4400-2686-256.png'
    """
    return f'{bucket(name)}/{name}'


def new_path_of_old(relative: str) -> str | None:
    """Where a tile of the old layout (``activity/color/z/x/y-size.png``) belongs now; None if it is no tile.

    >>> new_path_of_old('ride/hot/13/4400/2686-256.png'), new_path_of_old('ride/hot/13/4400/.x.tmp')
    ('1f/ride-hot-13-4400-2686-256.png', None)
    """
    return relative_path(relative.replace('/', '-')) if OLD_TILE_FILE.fullmatch(relative) else None


def etag(mtime_ns: int, size: int) -> str:
    """A tile's ETag from its disk copy's mtime and size: the same whether it is sent from memory or from the disk.

    >>> etag(1700000000123456789, 2245)
    '"17979cfe3d85cd15-8c5"'
    """
    return f'"{mtime_ns:x}-{size:x}"'


def allocated(stat: os.stat_result) -> int:
    """Bytes the disk gives a file: whole blocks (a 900-byte tile takes 4 KiB on ext4), never less than its size."""
    return max(stat.st_blocks * 512, stat.st_size)


class PlannedCopy(NamedTuple):
    """What ``os.stat`` will say of a disk copy about to be written: enough for its validators and its memory copy.

    >>> PlannedCopy(1_700_000_000_500_000_000, 2048).st_mtime
    1700000000.5
    """

    st_mtime_ns: int
    st_size: int

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9


@dataclass(eq=False, slots=True)
class HotTile:
    """A tile's copy in memory: its bytes and validators, the disk copy it mirrors, and the response to send."""

    relative: str  # the disk copy, under the cache root
    body: bytes
    mtime_ns: int  # of the disk copy
    deadline: float  # when the disk copy stops being fresh (epoch seconds)
    checked: float  # when the disk copy was last seen unchanged
    etag: str = ''
    headers: list[tuple[str, str]] | None = None  # of the first 200 sent for it, kept for the next ones
    routes: list[str] = field(default_factory=list)  # request URLs answered with it

    def __post_init__(self):
        self.etag = etag(self.mtime_ns, len(self.body))

    def mirrors(self, stat: os.stat_result) -> bool:
        """True when ``stat`` is of the very disk copy this was made from."""
        return stat.st_mtime_ns == self.mtime_ns and stat.st_size == len(self.body)

    @property
    def cost(self) -> int:
        """Bytes this copy is counted as: its body, the rest of it, and its routes."""
        return sys.getsizeof(self.body) + ENTRY_BYTES + sum(len(route) for route in self.routes)


class MemoryCache:
    """Recently served tiles in memory, at most ``max_bytes`` of them (the least recently used go first).

    ``routes`` maps a request URL that was answered with a copy to that copy, for a lookup before any routing.
    Reads of ``routes`` take no lock: a copy dropped a moment ago was still fresh a moment ago.
    """

    def __init__(self, root_name: str, max_bytes: int):
        self.root_name, self.max_bytes = root_name, max_bytes
        self.routes: dict[str, HotTile] = {}
        self.bytes = 0
        self._tiles: OrderedDict[str, HotTile] = OrderedDict()  # relative path -> copy, least recently used first
        self._lock = threading.Lock()

    def hit(self, url: str, now: float) -> HotTile | None:
        """The fresh copy answered for ``url`` before; None when there is none (or its disk copy changed)."""
        hot = self.routes.get(url)
        if hot is None or now >= hot.deadline:
            return None
        if now - hot.checked >= RECHECK_SECONDS and not self._unchanged_on_disk(hot, now):
            return None
        try:
            self._tiles.move_to_end(hot.relative)
        except KeyError:  # dropped meanwhile
            pass
        return hot

    def _unchanged_on_disk(self, hot: HotTile, now: float) -> bool:
        try:
            unchanged = hot.mirrors(os.stat(os.path.join(self.root_name, hot.relative)))
        except OSError:
            unchanged = False
        if unchanged:
            hot.checked = now
        else:
            self.forget(hot.relative)
        return unchanged

    def get(self, relative: str, stat: os.stat_result, now: float) -> HotTile | None:
        """The copy of the disk copy ``stat``, if one is held."""
        hot = self._tiles.get(relative)
        if hot is None or not hot.mirrors(stat):
            return None
        hot.checked = now
        return hot

    def put(self, hot: HotTile) -> None:
        """Hold ``hot`` in place of any older copy of its tile, dropping the least recently used to make room."""
        if hot.cost > self.max_bytes:
            return
        with self._lock:
            self._drop(hot.relative)
            self._tiles[hot.relative] = hot
            self.bytes += hot.cost
            self._fit()

    def route(self, url: str, hot: HotTile, headers: list[tuple[str, str]]) -> None:
        """Answer ``url`` with ``hot`` from now on, with the ``headers`` its first answer had; a few URLs a tile."""
        with self._lock:
            if self._tiles.get(hot.relative) is not hot or url in self.routes:
                return  # replaced or dropped meanwhile, or routed by another request meanwhile
            if hot.headers is None:
                hot.headers = headers
            if len(hot.routes) >= ROUTES_PER_TILE:
                oldest = hot.routes.pop(0)
                del self.routes[oldest]
                self.bytes -= len(oldest)
            hot.routes.append(url)
            self.routes[url] = hot
            self.bytes += len(url)
            self._fit()

    def __len__(self) -> int:
        """How many tiles are held."""
        return len(self._tiles)

    def forget(self, relative: str, unless: os.stat_result | None = None) -> None:
        """Drop the copy of a tile that is no longer on disk as it was (``unless`` it mirrors that disk copy: a tile
        answered before its disk copy was written keeps the memory copy it was given)."""
        with self._lock:
            hot = self._tiles.get(relative)
            if hot is not None and not (unless is not None and hot.mirrors(unless)):
                self._drop(relative)

    def _fit(self) -> None:
        """Drop the least recently used copies until what is held fits ``max_bytes``."""
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._tiles)))

    def _drop(self, relative: str) -> None:
        hot = self._tiles.pop(relative, None)
        if hot is None:
            return
        for url in hot.routes:
            del self.routes[url]
        self.bytes -= hot.cost


class TileCache:
    """Tiles on disk under ``root``; a file's mtime is when it stops being fresh minus the TTL.

    With ``memory_bytes``, copies of the tiles served are also kept in memory (``memory``).
    """

    def __init__(self, root: Path, ttl: float, max_bytes: int, memory_bytes: int = 0):
        self.root, self.ttl, self.max_bytes = Path(root), ttl, max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_name = str(self.root.resolve())
        self.memory = MemoryCache(self.root_name, memory_bytes) if memory_bytes > 0 else None
        self._lock = threading.Lock()  # held for renames, unlinks and the index, not while writing a tile
        self._tiles: dict[str, tuple[float, int]] = {}  # relative path -> (mtime, allocated bytes)
        self._oldest: list[tuple[float, str]] = []  # a heap of (mtime, relative path); stale entries are skipped
        self._directories: dict[str, int] = {}  # bucket -> allocated bytes
        self._files_in: Counter[str] = Counter()  # bucket -> tiles in it
        self._bytes = 0
        self._scanned = threading.Event()  # until the start-up scan is done the total is partial: nothing is evicted
        self._temporary_mark = f'.{os.getpid()}-'
        self.problem: str | None = None  # why tiles cannot be written to the disk, while they cannot
        threading.Thread(target=self._scan, daemon=True, name='tile-cache-scan').start()

    def relative_path(self, tile: Tile) -> str:
        """Where ``tile`` lives under the cache root."""
        return relative_path(tile_name(tile))

    def lookup(self, tile: Tile) -> os.stat_result | None:
        """The cached tile's stat, or None when it is not cached, or not readable by this server (a ``sudo`` pack
        may have written it): then it is fetched again."""
        path = os.path.join(self.root_name, self.relative_path(tile))
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat if os.access(path, os.R_OK) else None

    def usage(self) -> tuple[int, int]:
        """The bytes the cache takes on disk and how many tiles it holds (while the start-up scan runs, so far)."""
        return self._bytes, len(self._tiles)

    def is_fresh(self, stat: os.stat_result, now: float) -> bool:
        return now - stat.st_mtime < self.ttl

    def in_memory(self, relative: str, stat: os.stat_result, now: float, data: bytes | None = None) -> HotTile | None:
        """The memory copy of the fresh disk copy ``stat`` of the tile at ``relative``, made from ``data`` or the
        file if need be; None without a memory cache, for a copy that is no longer fresh, or a file it cannot read."""
        if self.memory is None or not self.is_fresh(stat, now):
            return None
        hot = self.memory.get(relative, stat, now)
        if hot is None:
            data = self.read(relative) if data is None else data
            if data is None:  # gone or unreadable: answered from the disk as without a memory cache
                return None
            hot = HotTile(relative, data, stat.st_mtime_ns, stat.st_mtime + self.ttl, now)
            if not hot.mirrors(stat):  # replaced between the stat and the read
                return None
            self.memory.put(hot)
        return hot

    def read(self, relative: str) -> bytes | None:
        """The bytes of the cached tile at ``relative``; None when it is gone (evicted meanwhile) or unreadable."""
        try:
            with open(os.path.join(self.root_name, relative), 'rb') as file:
                return file.read()
        except OSError:
            return None

    def store(self, tile: Tile, data: bytes, upstream_max_age: int | None, now: float) -> os.stat_result | None:
        """Write ``tile`` and make room for it by evicting the oldest others; it is never evicted itself.

        None when the disk refuses it (full, or not this server's to write): ``problem`` says why until a tile
        can be written again.
        """
        relative = self.relative_path(tile)
        path = os.path.join(self.root_name, relative)
        temporary = None
        try:
            temporary = self._write_temporary(relative[:2], data)
            made_at = self.made_at_ns(upstream_max_age, now)
            os.utime(temporary, ns=(made_at, made_at))
            with self._lock:
                os.replace(temporary, path)
                stat = os.stat(path)
                if self.memory is not None:
                    self.memory.forget(relative, unless=stat)
                self._index(relative, stat)
                self._measure_directory(relative[:2])
                self._evict(keep=relative)
        except OSError as error:
            self._cannot_write(error, temporary)
            return None
        if self.problem is not None:
            self.problem = None
            log.info('the tile cache can be written again')
        return stat

    def made_at_ns(self, upstream_max_age: int | None, now: float) -> int:
        """The mtime a tile stored at ``now`` gets, in ns: ``now``, or backdated so that the one freshness rule
        (age < TTL) expires it when upstream says. Known before the write, so that an answer sent before its disk
        copy exists carries the validators that copy will have.

        >>> cache = TileCache.__new__(TileCache); cache.ttl = 3600
        >>> cache.made_at_ns(None, 1000.5), cache.made_at_ns(600, 10_000), cache.made_at_ns(0, 10_000)
        (1000500000000, 7000000000000, 6400000000000)
        """
        if upstream_max_age is not None and upstream_max_age < self.ttl:
            now -= self.ttl - upstream_max_age
        return round(now * 1e9)

    def write_problem(self) -> str | None:
        """Why a tile cannot be written to the cache now, found by writing a small file; None when it can."""
        probe = os.path.join(self.root_name, f'{self._temporary_mark}{threading.get_ident()}.tmp')
        try:
            with open(probe, 'wb') as file:
                file.write(bytes(4096))  # a block, as a small tile takes
            os.unlink(probe)
        except OSError as error:
            return explain(error, self.root, 'write to the tile cache')
        return None

    def _cannot_write(self, error: OSError, temporary: str | None) -> None:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        problem = explain(error, self.root, 'write to the tile cache')
        if problem != self.problem:
            self.problem = problem
            log.error('%s; new tiles are served without a disk copy meanwhile', problem)

    def _write_temporary(self, directory: str, data: bytes) -> str:
        """Write ``data`` to this thread's temporary file (0600) in ``directory`` (a rename within a directory is
        the cheapest), making the directory when it is missing; the start-up scan leaves the file alone."""
        temporary = os.path.join(self.root_name, directory, f'{self._temporary_mark}{threading.get_ident()}.tmp')
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:  # the directory's first tile, or the cache was emptied by hand
            with self._lock:  # eviction removes empty directories, but not this one once the file is in it
                os.makedirs(os.path.dirname(temporary), exist_ok=True)
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, 'wb') as file:
            file.write(data)
        return temporary

    def _index(self, relative: str, stat: os.stat_result) -> None:
        """Count a tile that is now on disk (a new one, or a new copy of one already counted)."""
        old = self._tiles.get(relative)
        if old is None:
            self._files_in[relative[:2]] += 1
        self._bytes += allocated(stat) - (old[1] if old else 0)
        self._tiles[relative] = (stat.st_mtime, allocated(stat))
        heapq.heappush(self._oldest, (stat.st_mtime, relative))
        if len(self._oldest) > 2 * len(self._tiles) + 64:  # mostly stale entries of replaced tiles: rebuild
            self._oldest = [(mtime, path) for path, (mtime, _) in self._tiles.items()]
            heapq.heapify(self._oldest)

    def _measure_directory(self, directory: str) -> None:
        """Directories grow as they fill (and never shrink): count what this one takes now."""
        size = allocated(os.stat(os.path.join(self.root_name, directory)))
        self._bytes += size - self._directories.get(directory, 0)
        self._directories[directory] = size

    def _evict(self, keep: str | None = None, limit: int | None = None) -> None:
        """Delete the oldest tiles (at most ``limit``) until the cache fits its cap; never ``keep``."""
        kept = []
        while self._scanned.is_set() and self._bytes > self.max_bytes and self._oldest and limit != 0:
            mtime, relative = heapq.heappop(self._oldest)
            if self._tiles.get(relative, (None,))[0] != mtime:
                continue  # replaced or already evicted
            if relative == keep:
                kept.append((mtime, relative))
                continue
            self._forget(relative)
            limit = None if limit is None else limit - 1
        for entry in kept:
            heapq.heappush(self._oldest, entry)

    def discard(self, tile: Tile) -> None:
        """Delete a tile that turned out to be unusable, with its memory copy."""
        relative = self.relative_path(tile)
        with self._lock:
            if relative in self._tiles:
                self._forget(relative)

    def _forget(self, relative: str) -> None:
        """Delete a tile and its memory copy, and its directory with the directory's last tile."""
        if self.memory is not None:
            self.memory.forget(relative)
        try:
            os.unlink(os.path.join(self.root_name, relative))
        except FileNotFoundError:  # removed by hand: it no longer takes space either
            pass
        self._bytes -= self._tiles.pop(relative)[1]
        directory = relative[:2]
        self._files_in[directory] -= 1
        if self._files_in[directory] == 0:
            del self._files_in[directory]
            try:
                os.rmdir(os.path.join(self.root_name, directory))
            except OSError:  # something that is not ours is in it: leave it, and keep counting it
                return
            self._bytes -= self._directories.pop(directory)

    def _scan(self) -> None:
        """Index the tiles on disk; move tiles of the old layout in, and remove what is not a tile.

        Only entries under the root are touched, and symbolic links are removed, never followed.
        """
        found: dict[str, os.stat_result] = {}
        directories: dict[str, os.stat_result] = {}
        with os.scandir(self.root_name) as entries:
            for entry in entries:
                try:
                    if BUCKET.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                        directories[entry.name] = entry.stat(follow_symlinks=False)
                        found.update(self._scan_bucket(entry))
                    elif not is_abandoned(Path(entry.path), time.time()):  # doctor's probe, being written
                        continue
                    else:
                        found.update(self._move_in(entry))
                except OSError as error:
                    log.warning('tile cache: could not tidy %s (%s)', entry.path, error.strerror or error)
        with self._lock:
            for directory, stat in directories.items():
                self._directories.setdefault(directory, allocated(stat))
            for relative, stat in found.items():
                if relative not in self._tiles:  # else a store has counted a newer copy meanwhile
                    self._index(relative, stat)
                if relative[:2] not in self._directories:  # made by moving an old tile in
                    self._measure_directory(relative[:2])
            self._bytes = sum(size for _, size in self._tiles.values()) + sum(self._directories.values())
            self._scanned.set()
        log.info('tile cache: %d tiles, %d MB of %d MB', len(self._tiles), self._bytes // 2**20,
                 self.max_bytes // 2**20)
        while self._bytes > self.max_bytes:  # a lowered cap: evict in small steps so that stores go on meanwhile
            with self._lock:
                before = self._bytes
                self._evict(limit=100)
            if self._bytes >= before:
                break

    def _scan_bucket(self, directory: os.DirEntry) -> dict[str, os.stat_result]:
        tiles = {}
        with os.scandir(directory.path) as entries:
            for entry in entries:
                if (entry.is_file(follow_symlinks=False) and TILE_FILE.fullmatch(entry.name)
                        and bucket(entry.name) == directory.name):
                    tiles[f'{directory.name}/{entry.name}'] = entry.stat(follow_symlinks=False)
                elif is_abandoned(Path(entry.path), time.time()):  # else a store is writing it, here or elsewhere
                    remove(entry)
        return tiles

    def _move_in(self, top: os.DirEntry) -> dict[str, os.stat_result]:
        """Move the tiles of an old-layout tree into place, then remove the tree."""
        if not top.is_dir(follow_symlinks=False):
            remove(top)
            return {}
        moved = {}
        for directory, _, files in os.walk(top.path):  # never follows links
            for name in files:
                path = os.path.join(directory, name)
                relative = new_path_of_old(os.path.relpath(path, self.root_name))
                if relative and not os.path.islink(path):
                    moved[relative] = self._move(path, relative)
        shutil.rmtree(top.path)
        return moved

    def _move(self, path: str, relative: str) -> os.stat_result:
        target = os.path.join(self.root_name, relative)
        with self._lock:  # a store of the same tile meanwhile is newer: keep that one
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(path, target)
            return os.stat(target)


def remove(entry: os.DirEntry) -> None:
    """Remove a file, a link (not what it points to) or a directory tree (``rmtree`` does not follow links)."""
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)
