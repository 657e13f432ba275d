"""The cookie store: ``DATA_DIR/cookies.json``, a TinyDB file written atomically, read from memory."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from .cookies import cookies_expire_at, has_tile_cookies, session_value

log = logging.getLogger(__name__)
STATE_ID = 1


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a half-written file: temp file, fsync, rename, mode 0600."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            text = self.path.read_text(encoding='utf-8')
        except FileNotFoundError:
            return None
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError('the top level is not a JSON object')
        return data

    def write(self, data: dict) -> None:
        temporary = self.path.with_name(f'.{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp')
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(descriptor, 'w', encoding='utf-8') as file:
                json.dump(data, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@dataclass(frozen=True)
class CookieState:
    """What the store holds: the cookie set, where and when it came from, and the last failure."""

    cookies: tuple = ()
    source: str | None = None
    refreshed_at: float | None = None
    expires_at: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    failures: int = 0
    next_login_at: float | None = None

    def tiles_valid(self, now: float | None = None) -> bool:
        """True while the tile cookies are all there and not expired."""
        return (self.expires_at is not None and self.expires_at > (time.time() if now is None else now)
                and has_tile_cookies(self.cookies))

    @property
    def session(self) -> str | None:
        return session_value(self.cookies)


def _to_document(state: CookieState) -> dict:
    document = asdict(state)
    document['cookies'] = [dict(c) for c in state.cookies]
    return document


def _from_document(document: dict) -> CookieState:
    known = {name: document[name] for name in CookieState.__dataclass_fields__ if name in document}
    known['cookies'] = tuple(dict(c) for c in known.get('cookies', ()))
    if not all(isinstance(c.get('name'), str) and isinstance(c.get('value'), str) for c in known['cookies']):
        raise ValueError('a cookie without a name or value')
    return CookieState(**known)


class CookieStore:
    """One process writes at a time (a lock); readers use the in-memory ``state``, never the file."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self.path = self.data_dir / 'cookies.json'
        self._lock = threading.Lock()
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._table = self._db.table('state')
        self._mtime = None
        for leftover in self.data_dir.glob('.cookies.json.*.tmp'):
            leftover.unlink(missing_ok=True)
        self.state = self._load()

    def _load(self) -> CookieState:
        try:
            self._mtime = self.path.stat().st_mtime_ns if self.path.exists() else None
            document = self._table.get(doc_id=STATE_ID)
            return _from_document(document) if document else CookieState()
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            aside = self.path.with_name(f'cookies.json.corrupt-{time.strftime("%Y%m%d-%H%M%S")}')
            os.replace(self.path, aside)
            log.error('cookies.json could not be read (%s); moved it aside to %s and started without cookies: '
                      'import cookies again', type(error).__name__, aside.name)
            self._table.clear_cache()
            self._mtime = None
            return CookieState()

    def reload_if_changed(self) -> bool:
        """Pick up a file written by another process (``redirector.py import-cookies``)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        with self._lock:
            self.state = self._load()
        return True

    def _write(self, state: CookieState) -> CookieState:
        with self._lock:
            self._table.upsert(Document(_to_document(state), doc_id=STATE_ID))
            self._mtime = self.path.stat().st_mtime_ns
            os.chmod(self.path, 0o600)
            self.state = state
        return state

    def save_cookies(self, cookies: list[dict], source: str, now: float | None = None) -> CookieState:
        """Replace the cookie set; a new set clears the last error and the login backoff."""
        return self._write(CookieState(cookies=tuple(cookies), source=source,
                                       refreshed_at=time.time() if now is None else now,
                                       expires_at=cookies_expire_at(cookies)))

    def record_failure(self, message: str, reason: str, next_login_at: float | None) -> CookieState:
        state = self.state
        return self._write(replace(state, last_error=message, last_error_reason=reason,
                                   failures=state.failures + 1, next_login_at=next_login_at))
