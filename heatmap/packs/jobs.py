"""Pack jobs: estimates, packs made in the foreground (the command line) or as jobs (the page), and their files.

``PackService`` is what the command line and the web routes call. It takes plain parameters: the
tile service (``tiles.tile(tile, client)`` goes through the disk cache, the cookies and the
refresh), the data directory, the rate of requests to Strava, the largest pack in tiles and the
disk all finished packs may take.

- Counting tiles (reading an upload, finding its cover) runs one at a time in the server: another
  estimate meanwhile gets ``CountingBusy`` at once, so that a flood of uploads holds one request
  thread, never all of them.
- One pack is made at a time, across processes too (a lock file: the server and the command line share it).
- A job is JSON under ``DATA_DIR/packs/`` (atomic, 0600) holding its request (the bbox, or the
  simplified track), never the tiles; an unfinished one is resumed by ``resume_unfinished`` after a
  restart (the part file keeps what it holds and the cache answers the rest for free). A job file that
  cannot be read is shown as failed with the reason, and never stops the server.
- ``remove`` cancels a running job (the next may start at once) or deletes a finished one, with its files.
  A command-line process cancels a job the server runs by leaving a ``<id>.cancel`` file, which the job sees.
- Finished packs take at most ``max_bytes``: the oldest are removed to make room, and a pack that alone
  would not fit is refused. The same pack asked for again is the job that has it, not a new file.
"""

from __future__ import annotations

import calendar
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO

from ..layers import UPSTREAM_MAX_ZOOM
from ..status import iso
from ..store import AtomicJSONStorage, is_abandoned
from . import (
    JOB_ID,
    BadPackInput,
    CountingBusy,
    PackBusy,
    PackFailed,
    job_files,
    packs_folder,
)
from .area import cover
from .formats import WRITERS, part_path
from .request import Estimate, PackRequest, make_request, size_text
from .runner import PackCancelled, Progress, Runner, TileGetter

log = logging.getLogger(__name__)
ISO_FORMAT = '%Y-%m-%dT%H:%M:%SZ'
SAVE_EVERY = 5.0  # seconds between writes of a running job's JSON (the page reads a running job from memory)
PREVIEW_TILES = 2000  # tiles the page's map draws at most
MAX_JOBS = 50  # job records kept; beyond, the oldest that are not running go, with their files
CANCEL_WAIT = 10.0  # seconds a cancel waits for the job to let go of its files
FINISHED = ('done', 'failed', 'cancelled')


class PackTooLarge(BadPackInput):
    """More tiles than allowed, or more than finished packs may take on disk; the message gives the estimate
    and what to do."""

    def __init__(self, estimate: Estimate, max_tiles: int, max_bytes: int | None = None):
        self.estimate = estimate
        if max_bytes is not None and estimate.complete and estimate.total <= max_tiles:
            super().__init__(f'the pack would take about {size_text(estimate.size_bytes)}, more than the '
                             f'{size_text(max_bytes)} offline packs may take on this server (HEATMAP_PACKS_MAX_MB): '
                             f'choose a smaller area or fewer zooms ({estimate.zoom_text()})')
        else:
            super().__init__(f'the pack would hold {estimate.count_text()}, more than the {max_tiles:,} allowed '
                             f'(HEATMAP_PACK_MAX_TILES): choose a narrower corridor, a smaller area or fewer zooms '
                             f'({estimate.zoom_text()})')


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
    """A pack made in the background for the page. ``request`` is None for a job file that cannot be read."""

    id: str
    request: PackRequest | None
    estimate: Estimate | None
    progress: Progress
    created_at: float
    status: str = 'running'  # running | done | failed | cancelled
    error: str | None = None
    finished_at: float | None = None

    @property
    def file(self) -> str | None:
        """The pack's file under ``DATA_DIR/packs``."""
        return f'{self.id}{WRITERS[self.request.format].extension}' if self.request else None

    def files(self) -> list[str]:
        """Every file of this job under ``DATA_DIR/packs``: its JSON, the pack, its part and the part's journal."""
        names = [f'{self.id}.json', f'{self.id}.cancel']
        for writer in WRITERS.values():
            part = part_path(Path(f'{self.id}{writer.extension}')).name
            names += [f'{self.id}{writer.extension}', part, f'{part}-journal']
        return names

    def to_json(self) -> dict:
        """The job as its file keeps it."""
        return {'id': self.id, 'status': self.status, 'error': self.error,
                'request': self.request.to_json() if self.request else None,
                'estimate': self.estimate.to_json() if self.estimate else None,
                'progress': {**asdict(self.progress), 'percent': self.progress.percent},
                'created_at': iso(self.created_at), 'finished_at': iso(self.finished_at), 'file': self.file,
                'download_name': self.request.file_name if self.request else None}

    def to_page(self) -> dict:
        """The job as the page shows it: the request without the area's shapes, which can be large."""
        document = self.to_json()
        if document['request']:
            document['request'] = {name: value for name, value in document['request'].items() if name != 'area'}
        return document

    @classmethod
    def from_json(cls, data: dict, deepest: int) -> Job:
        progress = {name: value for name, value in data['progress'].items() if name != 'percent'}
        status = data['status']
        if status not in ('running', *FINISHED):
            raise ValueError(f'unknown status {str(status)[:40]!r}')
        return cls(data['id'], PackRequest.from_json(data['request'], deepest), Estimate.from_json(data['estimate']),
                   Progress(**progress), from_iso(data['created_at']), status, data['error'],
                   from_iso(data['finished_at']))


def damaged(job_id: str, path: Path, reason: str) -> Job:
    """A job whose file cannot be read: failed, with the reason, so that it shows and can be deleted."""
    try:
        created = path.stat().st_mtime
    except OSError:
        created = time.time()
    return Job(job_id, None, None, Progress(0, 0), created, 'failed',
               f'the job file cannot be read ({reason}): delete it and make the pack again', created)


class PackService:
    """Estimates and makes packs: ``run`` in the foreground (the command line), ``start`` as a job (the page)."""

    def __init__(self, tiles: TileGetter, data_dir: Path, rate: float = 4, max_tiles: int = 20_000,
                 max_bytes: int = 2048 * 10 ** 6, backoff: tuple[float, float] = (2, 120), give_up_after: int = 8):
        self.tiles, self.rate, self.max_tiles, self.max_bytes = tiles, rate, max_tiles, max_bytes
        self.data_dir, self.folder = Path(data_dir), packs_folder(data_dir)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.runner = Runner(tiles, rate, backoff, give_up_after)
        self.deepest = getattr(tiles, 'max_zoom', UPSTREAM_MAX_ZOOM)
        self._counting = threading.Lock()
        self._jobs_lock = threading.RLock()
        self._loaded: dict[str, tuple[tuple[int, int], Job]] = {}  # id -> (the file's mtime and size, its job)
        self._running: Job | None = None
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._tidy()

    # -- requests and estimates -----------------------------------------------------------------
    @contextmanager
    def counting(self) -> Iterator[None]:
        """Hold the right to count tiles: one upload or area at a time; CountingBusy when another one counts."""
        if not self._counting.acquire(blocking=False):
            raise CountingBusy('another estimate is being counted: retry in a few seconds')
        try:
            yield
        finally:
            self._counting.release()

    def request(self, layer: str, zooms: str, px: str | int = 256, format: str = 'mbtiles', bbox: str | None = None,
                track: bytes | None = None, track_name: str = 'the track',
                corridor_km: str | float | None = None) -> PackRequest:
        """``make_request`` with this server's deepest zoom, refusing the personal heatmap without an athlete id."""
        request = make_request(layer, zooms, px, format, bbox, track, track_name, corridor_km, self.deepest)
        if request.kind != 'personal':
            return request
        athlete = self.tiles.athlete_id()
        if not athlete:
            raise BadPackInput('the personal heatmap needs your athlete id: set STRAVA_ATHLETE_ID (the number in '
                               'strava.com/athletes/<id>), or import cookies that hold strava_remember_id')
        return replace(request, athlete=athlete)

    def _plan(self, request: PackRequest):
        found = cover(request.area, request.zooms, self.max_tiles)
        cached, requests, size = 0, found.total, 0
        if found.complete:  # a pack that may be made: look its tiles up in the cache
            cached, requests, size = self.runner.plan_requests(request, found)
        counts = {zoom: len(tiles) for zoom, tiles in found.tiles.items()}
        return found, Estimate(counts, found.complete, request.max_zoom, cached, requests, size, self.rate,
                               request.area.centre())

    def estimate(self, request: PackRequest) -> Estimate:
        """What the pack would hold, before any tile is fetched (``--dry-run`` stops here)."""
        return self._plan(request)[1]

    def preview(self, request: PackRequest) -> dict:
        """For the page's map: the estimate, whether it may be made, the area, and the tiles of the deepest zoom
        that has at most ``PREVIEW_TILES`` (as ``[z, x, y]``)."""
        found, estimate = self._plan(request)
        shown = [zoom for zoom, tiles in found.tiles.items() if len(tiles) <= PREVIEW_TILES]
        refusal = self.refusal(estimate)
        return {'estimate': estimate.to_json(), 'allowed': refusal is None, 'refusal': refusal and str(refusal),
                'max_tiles': self.max_tiles, 'area': request.area.geojson(), 'bounds': request.area.bounds(),
                'existing': next((job.id for job in self.jobs() if self._same(job, request)), None),
                'tiles': [[shown[-1], x, y] for x, y in found.tiles[shown[-1]]] if shown else []}

    def refusal(self, estimate: Estimate) -> PackTooLarge | None:
        """Why a pack of this estimate may not be made (too many tiles, or too large for the disk), or None."""
        if not (estimate.complete and estimate.total <= self.max_tiles):
            return PackTooLarge(estimate, self.max_tiles)
        if estimate.size_bytes > self.max_bytes:
            return PackTooLarge(estimate, self.max_tiles, self.max_bytes)
        return None

    def allows(self, estimate: Estimate) -> bool:
        """Whether a pack of this estimate may be made (it holds at most ``max_tiles``)."""
        return estimate.complete and estimate.total <= self.max_tiles

    # -- making packs ---------------------------------------------------------------------------
    def run(self, request: PackRequest, out: Path, progress: Callable[[Progress], None] | None = None) -> Path:
        """Make the pack at ``out`` (a file, or a folder to put it in under its own name) now, in this thread;
        PackTooLarge, PackBusy or PackFailed say why not."""
        found, estimate = self._plan(request)
        if not self.allows(estimate):
            raise PackTooLarge(estimate, self.max_tiles)
        out = Path(out) / request.file_name if Path(out).is_dir() else Path(out)
        with self._lock(request):
            return self.runner.write(request, found, estimate, out, progress or (lambda _: None))

    def start(self, request: PackRequest, resumed: Job | None = None) -> tuple[Job, bool]:
        """Make the pack in the background as a job whose JSON survives a restart (``resumed``: the job that a
        restart interrupted, which keeps its id and its creation time). Returns the job and whether it is one
        that had this pack already (running, or done with its file still there)."""
        existing = None if resumed else next((job for job in self.jobs() if self._same(job, request)), None)
        if existing:
            return existing, True
        found, estimate = self._plan(request)
        refusal = self.refusal(estimate)
        if refusal:
            raise refusal
        lock = self._lock(request)
        created = resumed.created_at if resumed else time.time()
        job = Job(resumed.id if resumed else new_job_id(created), request, estimate, Progress(0, estimate.total),
                  created)
        try:
            self._make_room(estimate.size_bytes)
            with self._jobs_lock:
                self._running = job
                self._cancel.clear()
                self._finished.clear()
            self._save(job)
        except BaseException:
            lock.close()
            raise
        threading.Thread(target=self._run_job, args=(job, found, lock), daemon=True, name=f'pack-{job.id}').start()
        log.info('pack %s %s: %s; %s', job.id, 'resumed' if resumed else 'started', request.describe(),
                 estimate.summary())
        return job, False

    def _same(self, job: Job, request: PackRequest) -> bool:
        if job.request is None or job.request.fingerprint() != request.fingerprint():
            return False
        return job.status == 'running' or (job.status == 'done' and (self.folder / job.file).exists())

    def _run_job(self, job: Job, found, lock: IO) -> None:
        saved_at = time.monotonic()

        def report(progress: Progress) -> None:
            nonlocal saved_at
            job.progress = progress
            if time.monotonic() - saved_at >= SAVE_EVERY or progress.note:
                self._save(job)
                saved_at = time.monotonic()

        marker = self.folder / f'{job.id}.cancel'
        try:
            with lock:
                self.runner.write(job.request, found, job.estimate, self.folder / job.file, report,
                                  cancelled=lambda: self._cancel.is_set() or marker.exists(), room=self._room)
            job.status = 'done'
            size = (self.folder / job.file).stat().st_size
            self._make_room(size, but=job.id)  # the estimate guessed: the file as it came out counts
            log.info('pack %s finished: %s (%s)', job.id, job.request.file_name, size_text(size))
        except PackCancelled:
            job.status, job.error = 'cancelled', 'cancelled'
            self._remove_files(job, keep_json=True)
            log.info('pack %s cancelled after %d of %d tiles', job.id, job.progress.done, job.progress.total)
        except PackFailed as error:
            job.status, job.error = 'failed', str(error)
            self._remove_files(job, keep_json=True)  # its tiles are in the cache: a pack made again takes them
            log.warning('pack %s failed: %s', job.id, error)
        except Exception as error:  # noqa: BLE001 - a job must end with a status, whatever went wrong
            log.exception('pack %s failed', job.id)
            job.status, job.error = 'failed', f'the pack failed ({type(error).__name__}): see the server log'
            self._remove_files(job, keep_json=True)
        finally:
            job.finished_at = time.time()
            self._save(job)
            marker.unlink(missing_ok=True)
            with self._jobs_lock:
                self._running = None
            self._finished.set()
            self._prune()

    def _lock(self, request: PackRequest) -> IO:
        """Hold the one-pack-at-a-time lock (closing the file lets go of it); PackBusy when another pack has it."""
        lock = os.fdopen(os.open(self.folder / '.lock', os.O_RDWR | os.O_CREAT, 0o600), 'r+')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip()
            lock.close()
            raise PackBusy(f'another pack is being made ({holder or "starting"}): one runs at a time, '
                           'wait for it to finish or cancel it') from None
        lock.truncate()
        lock.write(request.describe())
        lock.flush()
        return lock

    # -- disk -----------------------------------------------------------------------------------
    def _finished_packs(self, but: str | None = None) -> list[tuple[Job, int]]:
        """The finished packs with their sizes on disk, oldest first."""
        packs = []
        for job in self.jobs():
            if job.status == 'done' and job.id != but and job.file:
                try:
                    packs.append((job, (self.folder / job.file).stat().st_size))
                except OSError:
                    continue
        return sorted(packs, key=lambda pack: pack[0].finished_at or pack[0].created_at)

    def _make_room(self, needed: float, but: str | None = None) -> bool:
        """Remove the oldest finished packs until ``needed`` bytes more fit under ``max_bytes``; False if they
        cannot."""
        packs = self._finished_packs(but)
        used = sum(size for _, size in packs)
        for job, size in packs:
            if used + needed <= self.max_bytes:
                break
            log.info('pack %s removed to make room for a new one (HEATMAP_PACKS_MAX_MB)', job.id)
            self._remove_files(job)
            used -= size
        return used + needed <= self.max_bytes

    def _room(self, part_size: int) -> float:
        """How large the running pack may grow, once older packs made room for the ``part_size`` it has now."""
        running = self._running
        self._make_room(part_size, but=running.id if running else None)
        return self.max_bytes - sum(size for _, size in self._finished_packs(running.id if running else None))

    def _remove_files(self, job: Job, keep_json: bool = False) -> None:
        for name in job.files():
            if not (keep_json and name == f'{job.id}.json'):
                (self.folder / name).unlink(missing_ok=True)
        if not keep_json:
            with self._jobs_lock:
                self._loaded.pop(job.id, None)

    def _prune(self) -> None:
        """Keep at most ``MAX_JOBS`` job records: the oldest that are not running go, with their files."""
        finished = [job for job in self.jobs() if job.status != 'running']
        for job in finished[MAX_JOBS:]:
            self._remove_files(job)

    def _tidy(self) -> None:
        """Remove what an interrupted process left behind: abandoned temporary files of job saves."""
        now = time.time()
        for temporary in self.folder.glob('.*.tmp'):
            if is_abandoned(temporary, now):
                temporary.unlink(missing_ok=True)

    # -- cancel and delete ----------------------------------------------------------------------
    def remove(self, job_id: str) -> str | None:
        """Cancel the job if it runs, else delete it with its files: 'cancelled', 'deleted', or None (no such job)."""
        job = self.job(job_id)
        if job is None:
            return None
        running = self._running
        if running is not None and running.id == job.id:
            self._cancel.set()
            self._finished.wait(CANCEL_WAIT)
            return 'cancelled'
        if job.status == 'running':
            return self._cancel_elsewhere(job)
        self._remove_files(job)
        log.info('pack %s deleted', job.id)
        return 'deleted'

    def _cancel_elsewhere(self, job: Job) -> str:
        """A job this process does not run: another process runs it (it sees the marker), or nobody does (a
        restart will not resume it now)."""
        marker = self.folder / f'{job.id}.cancel'
        marker.touch(mode=0o600)
        try:
            lock = self._lock(job.request) if job.request else None
        except PackBusy:  # the server runs it: wait for it to see the marker
            deadline = time.monotonic() + CANCEL_WAIT
            while marker.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            return 'cancelled'
        try:
            job.status, job.error, job.finished_at = 'cancelled', 'cancelled', time.time()
            self._remove_files(job, keep_json=True)
            self._save(job)
        finally:
            if lock:
                lock.close()
        return 'cancelled'

    # -- jobs -----------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        path = self.folder / f'{job.id}.json'
        AtomicJSONStorage(path).write(job.to_json())
        with self._jobs_lock:
            try:
                stat = path.stat()
                self._loaded[job.id] = ((stat.st_mtime_ns, stat.st_size), job)
            except OSError:
                self._loaded.pop(job.id, None)

    def job(self, job_id: str) -> Job | None:
        """The job with this id (from memory while it runs), or None; ids that are not job ids are None too.
        A job file that cannot be read is a failed job that says why."""
        running = self._running
        if running and running.id == job_id:
            return running
        if not JOB_ID.fullmatch(job_id):
            return None
        path = self.folder / f'{job_id}.json'
        try:
            stat = path.stat()
        except FileNotFoundError:
            with self._jobs_lock:
                self._loaded.pop(job_id, None)
            return None
        except OSError as error:
            return damaged(job_id, path, error.strerror or type(error).__name__)
        key = (stat.st_mtime_ns, stat.st_size)
        with self._jobs_lock:
            known = self._loaded.get(job_id)
        if known and known[0] == key:
            return known[1]
        job = self._read(job_id, path)
        with self._jobs_lock:
            self._loaded[job_id] = (key, job)
        return job

    def _read(self, job_id: str, path: Path) -> Job:
        storage = AtomicJSONStorage(path)
        try:
            data = storage.read()
            job = Job.from_json(data, self.deepest)
            if job.id != job_id:
                raise ValueError('the job names another id')
            return job
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            reason = f'{type(error).__name__}: {str(error).splitlines()[0][:120]}' if str(error) else \
                type(error).__name__
            log.warning('pack job %s cannot be read (%s): shown as failed', job_id, reason)
            job = damaged(job_id, path, reason)
            try:
                data = storage.read()
                if isinstance(data, dict) and data.get('status') == 'running':  # never resumed: say so on disk
                    storage.write({**data, 'status': 'failed', 'error': job.error})
            except (OSError, ValueError):
                pass
            return job

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
        if (self.folder / f'{job.id}.cancel').exists():
            job.status, job.error, job.finished_at = 'cancelled', 'cancelled', time.time()
            self._remove_files(job, keep_json=True)
            self._save(job)
            return job
        try:
            return self.start(job.request, job)[0]
        except (BadPackInput, PackBusy) as error:
            job.status, job.error, job.finished_at = 'failed', f'could not go on after a restart: {error}', time.time()
            self._save(job)
            log.warning('pack %s could not go on after a restart: %s', job.id, error)
            return job
