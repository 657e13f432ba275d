"""The tile cache on disk: one file a tile, fresh for a TTL, kept under a size cap."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .layers import Tile

log = logging.getLogger(__name__)


class TileCache:
    """Tiles on disk under ``root``; a file's mtime is when it stops being fresh minus the TTL."""

    def __init__(self, root: Path, ttl: float, max_bytes: int):
        self.root, self.ttl, self.max_bytes = Path(root), ttl, max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_name = str(self.root.resolve())
        self._lock = threading.Lock()
        self._bytes: int | None = None  # unknown until the start-up scan is done
        threading.Thread(target=self._measure, daemon=True, name='tile-cache-scan').start()

    def _measure(self) -> None:
        total = self.size_on_disk()
        with self._lock:
            self._bytes = total

    def relative_path(self, tile: Tile) -> str:
        """Where ``tile`` lives under the cache root."""
        return tile.path

    def lookup(self, tile: Tile) -> os.stat_result | None:
        """The cached tile's stat, or None when it is not cached (one stat: the hot path)."""
        try:
            return os.stat(os.path.join(self.root_name, self.relative_path(tile)))
        except FileNotFoundError:
            return None

    def is_fresh(self, stat: os.stat_result, now: float) -> bool:
        return now - stat.st_mtime < self.ttl

    def store(self, tile: Tile, data: bytes, upstream_max_age: int | None, now: float) -> os.stat_result:
        path = os.path.join(self.root_name, self.relative_path(tile))
        temporary = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.{threading.get_ident()}.tmp')
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:  # the tile's first directory: make it only then, it saves a syscall a tile
            os.makedirs(os.path.dirname(path), exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, 'wb') as file:
            file.write(data)
        if upstream_max_age is not None and upstream_max_age < self.ttl:
            # Backdate so that the one freshness rule (age < TTL) expires it when upstream says.
            backdated = now - (self.ttl - upstream_max_age)
            os.utime(temporary, (backdated, backdated))
        try:
            replaced = os.stat(path).st_size
        except FileNotFoundError:
            replaced = 0
        os.replace(temporary, path)
        self._account(len(data) - replaced)
        return os.stat(path)

    def _account(self, delta: int) -> None:
        with self._lock:
            if self._bytes is None:  # the scan is still running and will count this tile
                return
            self._bytes += delta
            over = self._bytes > self.max_bytes
        if over:
            self.evict()

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.root.rglob('*.png'):
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted or replaced meanwhile
                continue
            found.append((stat.st_mtime, stat.st_size, path))
        return found

    def size_on_disk(self) -> int:
        return sum(size for _, size, _ in self._files())

    def evict(self) -> None:
        """Delete the oldest tiles until the cache is under 90 % of its cap."""
        with self._lock:
            files = sorted(self._files(), key=lambda item: item[0])
            total = sum(size for _, size, _ in files)
            target = self.max_bytes * 0.9
            removed = 0
            for _, size, path in files:
                if total <= target:
                    break
                path.unlink(missing_ok=True)
                total -= size
                removed += 1
            self._bytes = total
        log.info('tile cache over its cap: evicted %d tiles, %d MB left', removed, total // 2**20)
