"""Making a pack: the request, the estimate, and the job that gets the tiles politely and writes the file.

``PackService`` is what the command line and the web routes call. It takes plain parameters: the
tile service (``tiles.tile(tile, client)`` goes through the disk cache, the cookies and the
refresh), the data directory, the rate of new upstream fetches and the largest pack allowed.

- Cached tiles are free; each new upstream fetch waits for its slot at ``rate`` tiles per second.
- One pack at a time, across processes too (a lock file: the server and the command line share it).
- A refused or failed tile waits and tries again, longer each time (an expired cookie gets renewed
  by the refresher meanwhile), and the pack stops after ``give_up_after`` failures in a row.
- A job started with ``start`` is JSON under ``DATA_DIR/packs/`` (atomic, 0600); an unfinished one is
  resumed by ``resume_unfinished`` after a restart. Resuming is running again: the part file keeps
  what it holds and the cache answers the rest for free.
"""

from __future__ import annotations

import calendar
import fcntl
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Protocol

from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from ..layers import UPSTREAM_MAX_ZOOM, BadTile, Tile, parse_tile
from ..refresher import backoff_delay
from ..status import iso
from ..store import AtomicJSONStorage
from . import JOB_ID, BadPackInput, PackBusy, PackFailed, job_files, packs_folder
from .area import Cover, cover, parse_bbox, read_track, track_area
from .formats import WRITERS, PackInfo

log = logging.getLogger(__name__)
PACK_CLIENT = 'pack'  # the client name packs use with the tile service's per-client limit
FORMATS = tuple(WRITERS)
# Rough sizes of a Strava heat tile, for the estimate of tiles not cached yet; cached ones count as they are.
TILE_BYTES_GUESS = {256: 15_000, 512: 45_000}
ISO_FORMAT = '%Y-%m-%dT%H:%M:%SZ'
SAVE_EVERY = 1.0  # seconds between writes of a running job's JSON
PREVIEW_TILES = 2000  # tiles the page's map draws at most


class PackTooLarge(BadPackInput):
    """More tiles than allowed; the message gives the estimate and how to make the pack smaller."""

    def __init__(self, estimate: Estimate, max_tiles: int):
        self.estimate = estimate
        super().__init__(f'the pack would hold {estimate.count_text()}, more than the {max_tiles:,} allowed '
                         f'(HEATMAP_PACK_MAX_TILES): choose a narrower corridor, a smaller area or fewer zooms '
                         f'({estimate.zoom_text()})')


class TileCacheLike(Protocol):
    def lookup(self, tile: Tile) -> os.stat_result | None: ...

    def is_fresh(self, stat: os.stat_result, now: float) -> bool: ...

    def relative_path(self, tile: Tile) -> str: ...

    def read(self, relative: str) -> bytes | None: ...


class TileGetter(Protocol):
    """What packs need of ``heatmap.upstream.TileService``."""

    cache: TileCacheLike

    def tile(self, tile: Tile, client: str = ''):
        """An answer with ``status``, ``body`` (bytes or None), ``file`` (under the cache root), ``reason``
        and ``retry_after``."""

    def bytes_of(self, answer) -> bytes | None:
        """The tile a 200 answer holds; None when it was evicted meanwhile."""


# --- the request -----------------------------------------------------------------------------

def parse_layer(text: str) -> tuple[str, str]:
    """``activity/color`` checked as tile requests are.

    >>> parse_layer('sport_GravelRide/blue')
    ('sport_GravelRide', 'blue')
    >>> parse_layer('bike/hot')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: layer 'bike/hot': unknown activity 'bike': use one of all, ride, run, \
water, winter or sport_<Type>
    """
    activity, slash, color = text.strip().partition('/')
    if not slash:
        raise BadPackInput(f'layer must be activity/color, e.g. ride/hot, not {text[:60]!r}')
    try:
        parse_tile(activity, color, '0', '0', '0')
    except BadTile as error:
        raise BadPackInput(f'layer {text[:60]!r}: {error}') from None
    return activity, color


def parse_zooms(text: str, px: int, max_zoom: int = UPSTREAM_MAX_ZOOM) -> tuple[int, int]:
    """``10-15`` or ``12``, within what the server serves (``max_zoom``, overzoom included).

    >>> parse_zooms('10-15', 512), parse_zooms('12', 256), parse_zooms('14-17', 256, max_zoom=18)
    ((10, 15), (12, 12), (14, 17))
    >>> parse_zooms('10-16', 512)
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: zooms '10-16': z must be between 0 and 15, not 16
    """
    low, _, high = text.strip().partition('-')
    try:
        zooms = [parse_tile('all', 'hot', part.strip(), '0', '0', str(px), max_zoom).z for part in (low, high or low)]
    except BadTile as error:
        raise BadPackInput(f'zooms {text[:40]!r}: {error}') from None
    if zooms[0] > zooms[1]:
        raise BadPackInput(f'zooms {text[:40]!r}: the first zoom must not be above the last, e.g. 10-15')
    return zooms[0], zooms[1]


def parse_px(text: str | int) -> int:
    """
    >>> parse_px('512')
    512
    >>> parse_px('1024')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: px must be 256 or 512, not '1024'
    """
    try:
        return parse_tile('all', 'hot', '0', '0', '0', str(text)).px
    except BadTile as error:
        raise BadPackInput(str(error)) from None


def parse_corridor(text: str | float | None) -> float | None:
    """Kilometres either side of the track; empty means none.

    >>> parse_corridor('2.5'), parse_corridor('')
    (2.5, None)
    >>> parse_corridor('wide')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: corridor must be a number of km either side of the track, e.g. 2, not 'wide'
    """
    if text is None or str(text).strip() == '':
        return None
    try:
        return float(text)
    except ValueError:
        raise BadPackInput(f'corridor must be a number of km either side of the track, e.g. 2, '
                           f'not {str(text)[:40]!r}') from None


@dataclass(frozen=True)
class PackRequest:
    """One layer, one area, a zoom range, a tile size and a file format: everything a pack is made from."""

    activity: str
    color: str
    min_zoom: int
    max_zoom: int
    px: int
    format: str
    area: BaseGeometry = field(compare=False, repr=False)
    area_name: str = ''  # how the area was given, for people: 'bbox …' or 'ride.gpx, 2 km either side'

    @property
    def layer(self) -> str:
        return f'{self.activity}/{self.color}'

    @property
    def zooms(self) -> range:
        return range(self.min_zoom, self.max_zoom + 1)

    def tile(self, z: int, x: int, y: int) -> Tile:
        return Tile(self.activity, self.color, z, x, y, px=self.px)

    @property
    def file_name(self) -> str:
        """A name for the finished file.

        >>> make_request('ride/hot', '10-15', bbox='7,46,7.2,46.1', format='osmand').file_name
        'strava-ride-hot-z10-15-256px.sqlitedb'
        """
        return f'strava-{self.activity}-{self.color}-z{self.min_zoom}-{self.max_zoom}-{self.px}px' \
               f'{WRITERS[self.format].extension}'

    def info(self) -> PackInfo:
        return PackInfo(f'Strava heatmap {self.layer}', f'{self.area_name}, zooms {self.min_zoom}-{self.max_zoom}',
                        self.area.bounds, self.min_zoom, self.max_zoom, self.px)

    def to_json(self) -> dict:
        return {'activity': self.activity, 'color': self.color, 'min_zoom': self.min_zoom,
                'max_zoom': self.max_zoom, 'px': self.px, 'format': self.format, 'area_name': self.area_name,
                'area': mapping(self.area)}

    @classmethod
    def from_json(cls, data: dict) -> PackRequest:
        return cls(**{**data, 'area': shape(data['area'])})

    def fingerprint(self) -> str:
        """Tells one request from another, so that a part file is only reused for the same pack."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:24]


def make_request(layer: str, zooms: str, px: str | int = 256, format: str = 'mbtiles', bbox: str | None = None,
                 track: bytes | None = None, track_name: str = 'the track',
                 corridor_km: str | float | None = None, deepest: int = UPSTREAM_MAX_ZOOM) -> PackRequest:
    """A request from the command line's flags or the page's form, every part checked; BadPackInput names
    the first bad one. The area is a ``bbox`` (``W,S,E,N``) or a ``track`` file (GPX or GeoJSON) with a
    corridor of ``corridor_km`` either side; zooms go down to ``deepest`` (overzoom included).

    >>> make_request('ride/hot', '10-12', bbox='7,46,7.2,46.1').area_name
    'bbox 7,46,7.2,46.1'
    >>> make_request('ride/hot', '10-12', track=b'<gpx></gpx>', track_name='empty.gpx', corridor_km='2')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: empty.gpx holds no track, route, line or polygon: nothing to make a pack of
    """
    size = parse_px(px)
    activity, color = parse_layer(layer)
    min_zoom, max_zoom = parse_zooms(zooms, size, deepest)
    if format not in WRITERS:
        raise BadPackInput(f'format must be {" or ".join(FORMATS)}, not {str(format)[:40]!r}')
    if (bbox is None) == (track is None):
        raise BadPackInput('give the area as a bbox (W,S,E,N) or as a track file with a corridor, one of the two')
    corridor = parse_corridor(corridor_km)
    if bbox is not None and corridor is not None:
        raise BadPackInput('a corridor goes with a track: a bbox is the area as it is, leave the corridor out')
    if bbox is not None:
        area, name = parse_bbox(bbox), f'bbox {bbox.replace(" ", "")}'
    else:
        area = track_area(read_track(track, track_name), corridor)
        name = track_name[:80] + (f', {corridor:g} km either side' if corridor else '')
    return PackRequest(activity, color, min_zoom, max_zoom, size, format, area, name)


# --- the estimate ----------------------------------------------------------------------------

def duration(seconds: float) -> str:
    """
    >>> duration(7), duration(185), duration(4000)
    ('7 s', '3 min', '1 h 7 min')
    """
    if seconds < 60:
        return f'{seconds:.0f} s'
    if seconds < 3600:
        return f'{seconds / 60:.0f} min'
    return f'{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min'


def size_text(size: int) -> str:
    """
    >>> size_text(12_345), size_text(1_720_000), size_text(250_400_000)
    ('12 kB', '1.7 MB', '250 MB')
    """
    if size < 1e6:
        return f'{size / 1e3:.0f} kB'
    return f'{size / 1e6:.1f} MB' if size < 1e7 else f'{size / 1e6:.0f} MB'


@dataclass(frozen=True)
class Estimate:
    """Tiles per zoom (only the zooms counted when ``complete`` is False), how many are cached, size and time."""

    tiles: dict[int, int]
    complete: bool
    max_zoom: int
    cached: int
    size_bytes: int
    rate: float

    @property
    def total(self) -> int:
        return sum(self.tiles.values())

    @property
    def seconds(self) -> float:
        """Time for the tiles that are not cached, at the pack rate."""
        return (self.total - self.cached) / self.rate

    def zoom_text(self) -> str:
        """
        >>> Estimate({10: 4, 11: 1200}, False, 13, 0, 0, 4).zoom_text()
        'z10: 4, z11: 1,200, z12-13: not counted'
        """
        counted = ', '.join(f'z{zoom}: {count:,}' for zoom, count in self.tiles.items())
        if self.complete:
            return counted
        first = max(self.tiles, default=-1) + 1
        rest = f'z{first}' + (f'-{self.max_zoom}' if self.max_zoom > first else '')
        return f'{counted}, {rest}: not counted' if counted else f'{rest}: not counted'

    def count_text(self) -> str:
        return f'{self.total:,} tiles' if self.complete else f'more than {self.total:,} tiles'

    def summary(self) -> str:
        """One line: tiles per zoom, in all, cached, size and time.

        >>> Estimate({10: 4, 11: 12}, True, 11, 6, 200_000, 4).summary()
        '16 tiles (z10: 4, z11: 12), 6 already cached; about 200 kB; about 2 s at 4 tiles/s'
        """
        if not self.complete:
            return f'{self.count_text()} ({self.zoom_text()})'
        return (f'{self.count_text()} ({self.zoom_text()}), {self.cached:,} already cached; '
                f'about {size_text(self.size_bytes)}; about {duration(self.seconds)} at {self.rate:g} tiles/s')

    def to_json(self) -> dict:
        return {'tiles': {str(zoom): count for zoom, count in self.tiles.items()}, 'complete': self.complete,
                'max_zoom': self.max_zoom, 'total': self.total, 'cached': self.cached,
                'size_bytes': self.size_bytes, 'rate': self.rate, 'seconds': round(self.seconds, 1),
                'summary': self.summary()}

    @classmethod
    def from_json(cls, data: dict) -> Estimate:
        return cls({int(zoom): count for zoom, count in data['tiles'].items()}, data['complete'],
                   data['max_zoom'], data['cached'], data['size_bytes'], data['rate'])


# --- progress and jobs -----------------------------------------------------------------------

@dataclass(frozen=True)
class Progress:
    """Where a pack is: tiles done of the total, how many were new upstream fetches, time left, a note."""

    done: int
    total: int
    fetched: int = 0
    seconds_left: float = 0.0
    note: str = ''

    @property
    def percent(self) -> int:
        return 100 * self.done // self.total if self.total else 100


def new_job_id(now: float) -> str:
    """
    >>> bool(JOB_ID.fullmatch(new_job_id(0)))
    True
    """
    return f'{time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))}-{secrets.token_hex(3)}'


def from_iso(text: str | None) -> float | None:
    """
    >>> from_iso('2023-11-14T22:13:20Z')
    1700000000
    """
    return calendar.timegm(time.strptime(text, ISO_FORMAT)) if text else None


@dataclass
class Job:
    """A pack made in the background for the page; its JSON is what ``/packs/<id>.json`` shows."""

    id: str
    request: PackRequest
    estimate: Estimate
    progress: Progress
    created_at: float
    status: str = 'running'  # running | done | failed
    error: str | None = None
    finished_at: float | None = None

    @property
    def file(self) -> str:
        """The pack's file under ``DATA_DIR/packs``."""
        return f'{self.id}{WRITERS[self.request.format].extension}'

    def to_json(self) -> dict:
        return {'id': self.id, 'status': self.status, 'error': self.error, 'request': self.request.to_json(),
                'estimate': self.estimate.to_json(), 'progress': {**asdict(self.progress),
                                                                  'percent': self.progress.percent},
                'created_at': iso(self.created_at), 'finished_at': iso(self.finished_at), 'file': self.file,
                'download_name': self.request.file_name}

    @classmethod
    def from_json(cls, data: dict) -> Job:
        progress = {name: value for name, value in data['progress'].items() if name != 'percent'}
        return cls(data['id'], PackRequest.from_json(data['request']), Estimate.from_json(data['estimate']),
                   Progress(**progress), from_iso(data['created_at']), data['status'], data['error'],
                   from_iso(data['finished_at']))


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


# --- the service -----------------------------------------------------------------------------

class PackService:
    """Estimates and makes packs: ``run`` in the foreground (the command line), ``start`` as a job (the page)."""

    def request(self, *args, **kwargs) -> PackRequest:
        """``make_request`` with this server's deepest zoom: for the routes, which hold only the service."""
        return make_request(*args, deepest=getattr(self.tiles, 'max_zoom', UPSTREAM_MAX_ZOOM), **kwargs)

    def __init__(self, tiles: TileGetter, data_dir: Path, rate: float = 4, max_tiles: int = 20_000,
                 backoff: tuple[float, float] = (2, 120), give_up_after: int = 8):
        self.tiles, self.rate, self.max_tiles = tiles, rate, max_tiles
        self.backoff, self.give_up_after = backoff, give_up_after
        self.data_dir, self.folder = Path(data_dir), packs_folder(data_dir)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pacer = Pacer(rate)
        self._running: Job | None = None

    # -- estimate -------------------------------------------------------------------------------
    def _plan(self, request: PackRequest) -> tuple[Cover, Estimate]:
        found = cover(request.area, request.zooms, self.max_tiles)
        guess = TILE_BYTES_GUESS[request.px]
        cached, size = 0, found.total * guess
        if found.complete:  # a pack that may be made: look its tiles up in the cache
            stats = [self._fresh_stat(request.tile(zoom, x, y))
                     for zoom, tiles in found.tiles.items() for x, y in tiles]
            cached = sum(stat is not None for stat in stats)
            size = sum(stat.st_size if stat else guess for stat in stats)
        counts = {zoom: len(tiles) for zoom, tiles in found.tiles.items()}
        return found, Estimate(counts, found.complete, request.max_zoom, cached, size, self.rate)

    def estimate(self, request: PackRequest) -> Estimate:
        """What the pack would hold, before any tile is fetched (``--dry-run`` stops here)."""
        return self._plan(request)[1]

    def preview(self, request: PackRequest) -> dict:
        """For the page's map: the estimate, whether it may be made, the area, and the tiles of the deepest zoom
        that has at most ``PREVIEW_TILES`` (as ``[z, x, y]``)."""
        found, estimate = self._plan(request)
        shown = [zoom for zoom, tiles in found.tiles.items() if len(tiles) <= PREVIEW_TILES]
        return {'estimate': estimate.to_json(), 'allowed': self.allows(estimate),
                'max_tiles': self.max_tiles, 'area': mapping(request.area),
                'tiles': [[shown[-1], x, y] for x, y in found.tiles[shown[-1]]] if shown else []}

    def allows(self, estimate: Estimate) -> bool:
        """Whether a pack of this estimate may be made (it holds at most ``max_tiles``)."""
        return estimate.complete and estimate.total <= self.max_tiles

    def _allowed_plan(self, request: PackRequest) -> tuple[Cover, Estimate]:
        found, estimate = self._plan(request)
        if not self.allows(estimate):
            raise PackTooLarge(estimate, self.max_tiles)
        return found, estimate

    # -- making packs ---------------------------------------------------------------------------
    def run(self, request: PackRequest, out: Path, progress: Callable[[Progress], None] | None = None) -> Path:
        """Make the pack at ``out`` (a file, or a folder to put it in under its own name) now, in this thread;
        PackTooLarge, PackBusy or PackFailed say why not."""
        found, estimate = self._allowed_plan(request)
        out = Path(out) / request.file_name if Path(out).is_dir() else Path(out)
        with self._lock(request):
            return self._build(request, found, estimate, out, progress or (lambda _: None))

    def start(self, request: PackRequest, resumed: Job | None = None) -> Job:
        """Make the pack in the background as a job whose JSON survives a restart (``resumed``: the job that a
        restart interrupted, which keeps its id and its creation time)."""
        found, estimate = self._allowed_plan(request)
        lock = self._lock(request)
        created = resumed.created_at if resumed else time.time()
        job = Job(resumed.id if resumed else new_job_id(created), request, estimate, Progress(0, estimate.total),
                  created)
        self._running = job
        self._save(job)
        threading.Thread(target=self._run_job, args=(job, found, lock), daemon=True, name=f'pack-{job.id}').start()
        return job

    def _run_job(self, job: Job, found: Cover, lock: IO) -> None:
        saved_at = time.monotonic()

        def report(progress: Progress) -> None:
            nonlocal saved_at
            job.progress = progress
            if time.monotonic() - saved_at >= SAVE_EVERY or progress.note:
                self._save(job)
                saved_at = time.monotonic()

        try:
            with lock:
                self._build(job.request, found, job.estimate, self.folder / job.file, report)
            job.status = 'done'
        except PackFailed as error:
            job.status, job.error = 'failed', str(error)
        except Exception as error:  # noqa: BLE001 - a job must end with a status, whatever went wrong
            log.exception('pack %s failed', job.id)
            job.status, job.error = 'failed', f'the pack failed ({type(error).__name__}): see the server log'
        finally:
            job.finished_at = time.time()
            self._save(job)
            self._running = None

    def _lock(self, request: PackRequest) -> IO:
        """Hold the one-pack-at-a-time lock (closing the file lets go of it); PackBusy when another pack has it."""
        lock = os.fdopen(os.open(self.folder / '.lock', os.O_RDWR | os.O_CREAT, 0o600), 'r+')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip()
            lock.close()
            raise PackBusy(f'another pack is being made ({holder or "starting"}): one runs at a time, '
                           'wait for it to finish') from None
        lock.truncate()
        lock.write(f'{request.layer}, {request.area_name}, zooms {request.min_zoom}-{request.max_zoom}')
        lock.flush()
        return lock

    def _build(self, request: PackRequest, found: Cover, estimate: Estimate, out: Path,
               report: Callable[[Progress], None]) -> Path:
        try:
            return self._write(request, found, estimate, out, report)
        except (OSError, sqlite3.Error) as error:
            raise PackFailed(f'cannot write the pack to {out} ({getattr(error, "strerror", None) or error}): '
                             'choose a folder you can write to, with room for the pack') from None

    def _write(self, request: PackRequest, found: Cover, estimate: Estimate, out: Path,
               report: Callable[[Progress], None]) -> Path:
        writer = WRITERS[request.format](out, request.fingerprint(), request.px)
        try:
            stored = writer.stored()
            progress = Progress(0, estimate.total)
            for zoom, tiles in found.tiles.items():
                for x, y in tiles:
                    fetched = 0
                    if (zoom, x, y) not in stored:
                        image, fetched = self._image(request.tile(zoom, x, y),
                                                     lambda note: report(replace(progress, note=note)))
                        writer.add(zoom, x, y, image)
                    left = max(0, estimate.total - estimate.cached - progress.fetched - fetched) / self.rate
                    progress = Progress(progress.done + 1, estimate.total, progress.fetched + fetched, left)
                    report(progress)
            return writer.finish(request.info())
        finally:
            writer.close()

    def _image(self, tile: Tile, note: Callable[[str], None]) -> tuple[bytes, int]:
        """The tile's PNG and 1 when it was a new upstream fetch (0 from the cache); waits out failures."""
        failures = 0
        while True:
            stat = self._fresh_stat(tile)
            image = stat and self.tiles.cache.read(self.tiles.cache.relative_path(tile))
            if image:
                return image, 0
            self._pacer.wait()
            answer = self.tiles.tile(tile, PACK_CLIENT)
            if answer.status == 200:
                image = self.tiles.bytes_of(answer)
                if image:
                    return image, 1
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
            time.sleep(delay)

    def _fresh_stat(self, tile: Tile) -> os.stat_result | None:
        stat = self.tiles.cache.lookup(tile)
        return stat if stat and self.tiles.cache.is_fresh(stat, time.time()) else None

    # -- jobs -----------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        AtomicJSONStorage(self.folder / f'{job.id}.json').write(job.to_json())

    def job(self, job_id: str) -> Job | None:
        """The job with this id (from memory while it runs), or None; ids that are not job ids are None too."""
        running = self._running
        if running and running.id == job_id:
            return running
        if not JOB_ID.fullmatch(job_id):
            return None
        try:
            data = AtomicJSONStorage(self.folder / f'{job_id}.json').read()
            return Job.from_json(data) if data else None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning('pack job %s cannot be read (%s): left out', job_id, error)
            return None

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        return [job for job in (self.job(path.stem) for path in job_files(self.data_dir)) if job]

    def resume_unfinished(self) -> Job | None:
        """After a restart: go on with the newest job that was running; older ones (there should be none) fail."""
        unfinished = [job for job in self.jobs() if job.status == 'running']
        for stale in unfinished[1:]:
            stale.status, stale.error = 'failed', 'interrupted by a restart: start it again'
            self._save(stale)
        if not unfinished:
            return None
        job = unfinished[0]
        try:
            return self.start(job.request, job)
        except (BadPackInput, PackBusy) as error:
            job.status, job.error, job.finished_at = 'failed', f'could not go on after a restart: {error}', time.time()
            self._save(job)
            return job
