"""The cookie store: ``DATA_DIR/cookies.json``, a TinyDB file written atomically, read from memory.

Writers (the server's refresher, ``import-cookies`` in another process, an admin import) take a
lock on ``DATA_DIR/.cookies.lock`` and re-read the file before they change it, so that no write
is based on a stale copy. A file the store cannot read or write is a ``problem``: one line that
says what to do, shown where the operator looks, and cleared by itself once the cause is fixed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from .cookies import cookies_expire_at, has_tile_cookies, session_value, when
from .sources import NEEDS_USER

log = logging.getLogger(__name__)
STATE_ID = 1
STALE_TEMPORARY = 60  # seconds after which another process's temporary file is surely abandoned
TEMPORARY_WRITER = re.compile(r'\.(\d+)[.-]\d+\.tmp$')  # the pid in a writer's temporary file name


class StoreError(Exception):
    """cookies.json cannot be read or written; ``str()`` is one line saying what to do."""


class NewerCookiesStored(Exception):
    """An import older than the stored tile cookies, refused unless forced; ``str()`` says so."""


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
        temporary = self.path.with_name(temporary_name(self.path.name))
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


def temporary_name(name: str) -> str:
    """The temporary file a write goes through: it names the writing process, so others can tell it is alive.

    >>> temporary_name('cookies.json').startswith(f'.cookies.json.{os.getpid()}.')
    True
    """
    return f'.{name}.{os.getpid()}.{threading.get_ident()}.tmp'


def is_abandoned(temporary: Path, now: float) -> bool:
    """True for a temporary file whose writer is gone (no such process) or that is older than a minute, and for
    a file not named as a writer's (``.cookies.json.{pid}.{thread}.tmp``, the tile cache's ``.{pid}-{thread}.tmp``).

    >>> is_abandoned(Path(f'.cookies.json.{os.getpid()}.1.tmp'), now=0), is_abandoned(Path(f'.{os.getpid()}-1.tmp'), 0)
    (False, False)
    >>> is_abandoned(Path('.cookies.json.x.tmp'), now=0)
    True
    """
    writer = TEMPORARY_WRITER.search(temporary.name)
    if writer is None:
        return True
    try:
        os.kill(int(writer.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, but another user's
        pass
    try:
        return now - temporary.stat().st_mtime > STALE_TEMPORARY
    except FileNotFoundError:
        return False


class FileLock:
    """An exclusive lock on a lock file (created 0600), held against other processes; opening may raise OSError."""

    def __init__(self, path: Path):
        self.descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> FileLock:
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.descriptor)
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.descriptor)


def owner_name(path: Path) -> str:
    try:
        uid = path.stat().st_uid
    except OSError:
        return 'another user'
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f'uid {uid}'


def this_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f'uid {os.geteuid()}'


def explain(error: OSError, path: Path, doing: str) -> str:
    """One line for an OSError on the store: what failed and what the operator can do about it."""
    if isinstance(error, PermissionError):
        return (f'cannot {doing} {path} (permission denied: it belongs to {owner_name(path)}, this server runs as '
                f'{this_user()}): run `sudo chown -R {this_user()} {path.parent}`')
    if error.errno == 28:
        return f'cannot {doing} {path}: the disk is full; free some space (the tile cache can be deleted)'
    return f'cannot {doing} {path} ({error.strerror or type(error).__name__})'


@dataclass(frozen=True)
class AccountState:
    """How logins with one account went: the email only masked, never a password."""

    id: str
    email: str = ''
    failures: int = 0
    next_login_at: float | None = None
    waiting_for_user: bool = False
    last_error: str | None = None
    last_error_reason: str | None = None

    def usable(self, now: float) -> bool:
        """True when this account may log in now by itself."""
        return not self.waiting_for_user and not (self.next_login_at and now < self.next_login_at)


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
    rejected_at: float | None = None  # when Strava refused these cookies before their expiry
    waiting_for_user: bool = False  # no refresh or login will work until the user acts
    accounts: tuple = ()  # one AccountState a login account, in the order they are tried

    def tiles_valid(self, now: float | None = None) -> bool:
        """True while the tile cookies are all there, not expired and not refused by Strava."""
        return (self.expires_at is not None and self.expires_at > (time.time() if now is None else now)
                and self.rejected_at is None and has_tile_cookies(self.cookies))

    @property
    def session(self) -> str | None:
        return session_value(self.cookies)

    def account(self, account_id: str) -> AccountState:
        return next((a for a in self.accounts if a.id == account_id), AccountState(account_id))

    def same_cookies(self, other: CookieState) -> bool:
        """True when ``other`` holds this very cookie set (not merely equal values imported twice)."""
        return self.cookies == other.cookies and self.refreshed_at == other.refreshed_at


def _to_document(state: CookieState) -> dict:
    document = asdict(state)
    document['cookies'] = [dict(c) for c in state.cookies]
    document['accounts'] = [asdict(a) for a in state.accounts]
    return document


def _from_document(document: dict) -> CookieState:
    known = {name: document[name] for name in CookieState.__dataclass_fields__ if name in document}
    known['cookies'] = tuple(dict(c) for c in known.get('cookies', ()))
    if not all(isinstance(c.get('name'), str) and isinstance(c.get('value'), str) for c in known['cookies']):
        raise ValueError('a cookie without a name or value')
    fields = AccountState.__dataclass_fields__
    known['accounts'] = tuple(AccountState(**{k: v for k, v in a.items() if k in fields})
                              for a in known.get('accounts', ()))
    if 'waiting_for_user' not in document:  # written before the field existed: what it meant then
        known['waiting_for_user'] = bool(known.get('failures')) and known.get('last_error_reason') in NEEDS_USER
    return CookieState(**known)


def _with_account(accounts: tuple, changed: AccountState) -> tuple:
    """``accounts`` with ``changed`` in its place (or added at the end)."""
    if any(a.id == changed.id for a in accounts):
        return tuple(changed if a.id == changed.id else a for a in accounts)
    return (*accounts, changed)


class CookieStore:
    """The cookie state, kept in memory (``state``) and on disk; ``read_only`` stores change nothing on disk."""

    def __init__(self, data_dir: str | os.PathLike, read_only: bool = False):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / 'cookies.json'
        self.read_only = read_only
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._mtime: int | None = None
        if not read_only:
            self._prepare_directory()
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._table = self._db.table('state')
        self.state = CookieState()
        self._reload()

    def _prepare_directory(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.data_dir, 0o700)
        except PermissionError:  # someone else's directory that we may write to: leave its mode alone
            if self.data_dir.stat().st_mode & 0o077:
                log.warning('%s belongs to %s and others can read it; cookies.json itself stays private (0600)',
                            self.data_dir, owner_name(self.data_dir))
        now = time.time()
        for temporary in self.data_dir.glob('.cookies.json.*.tmp'):
            if is_abandoned(temporary, now):
                temporary.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> CookieState:
        """The state on disk; StoreError when it cannot be read, moving a damaged file aside unless read-only."""
        try:
            self._mtime = self.path.stat().st_mtime_ns if self.path.exists() else None
            document = self._table.get(doc_id=STATE_ID)
            return _from_document(document) if document else CookieState()
        except OSError as error:
            raise StoreError(explain(error, self.path, 'read')) from None
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            if self.read_only:
                raise StoreError(f'{self.path} is damaged ({type(error).__name__}): the server moves it aside when it '
                                 'starts; then import cookies again') from None
            aside = self.path.with_name(f'cookies.json.corrupt-{time.strftime("%Y%m%d-%H%M%S")}')
            os.replace(self.path, aside)
            log.error('cookies.json could not be read (%s); moved it aside to %s and started without cookies: '
                      'import cookies again', type(error).__name__, aside.name)
            self._mtime = None
            return CookieState()

    def _reload(self) -> None:
        try:
            self.state = self._read()
        except StoreError as error:
            if self.problem != str(error):
                log.error('%s', error)
            self.problem = str(error)
        else:
            if self.problem:
                log.info('cookies.json can be used again')
            self.problem = None

    def reload_if_changed(self) -> bool:
        """Pick up a file written by another process; retry one that could not be read before."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        except OSError:
            mtime = -1
        if mtime == self._mtime and not self.problem:
            return False
        with self._lock:
            self._reload()
        return True

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def _exclusive(self) -> Iterator[CookieState]:
        """Hold the store against every other writer, in this process and others; yield the state on disk."""
        if self.read_only:
            raise StoreError('this store was opened read-only')
        with self._lock:
            try:
                lock = FileLock(self.data_dir / '.cookies.lock')
            except OSError as error:
                self.problem = explain(error, self.data_dir / '.cookies.lock', 'open')
                raise StoreError(self.problem) from None
            with lock:
                try:
                    current = self._read()
                except StoreError as error:
                    self.problem = str(error)
                    raise
                self.state = current
                yield current

    def _write(self, state: CookieState) -> CookieState:
        """Write ``state``; call inside ``_exclusive``."""
        try:
            self._table.upsert(Document(_to_document(state), doc_id=STATE_ID))
            self._mtime = self.path.stat().st_mtime_ns
        except OSError as error:
            self.problem = explain(error, self.path, 'write')
            log.error('%s', self.problem)
            raise StoreError(self.problem) from None
        self.problem = None
        self.state = state
        return state

    def save_cookies(self, cookies: list[dict], source: str, now: float | None = None,
                     based_on: CookieState | None = None, account: AccountState | None = None) -> CookieState | None:
        """Replace the cookie set; a new set clears the last error and the login backoff (of ``account`` too).

        With ``based_on`` (the state a refresh started from), nothing is written and None is returned
        when the cookies changed meanwhile: an import made during the refresh wins.
        """
        with self._exclusive() as current:
            if based_on is not None and not current.same_cookies(based_on):
                return None
            accounts = current.accounts
            if account is not None:
                accounts = _with_account(accounts, AccountState(account.id, account.email))
            return self._write(CookieState(cookies=tuple(cookies), source=source,
                                           refreshed_at=time.time() if now is None else now,
                                           expires_at=cookies_expire_at(cookies), accounts=accounts))

    def import_cookies(self, cookies: list[dict], force: bool = False) -> CookieState:
        """Store an export; one whose tile cookies expire before the stored, valid ones is refused unless ``force``."""
        with self._exclusive() as current:
            imported_until = cookies_expire_at(cookies)
            if (not force and current.tiles_valid() and has_tile_cookies(cookies)
                    and (imported_until or 0) < current.expires_at):
                raise NewerCookiesStored(
                    f'the stored tile cookies are newer (valid until {when(current.expires_at)}) than the '
                    f'imported ones ({when(imported_until)}): nothing changed; import with --force (or ?force=1) '
                    'to replace them anyway')
            return self._write(CookieState(cookies=tuple(cookies), source='import', refreshed_at=time.time(),
                                           expires_at=imported_until, accounts=current.accounts))

    def record_failure(self, message: str, reason: str, next_login_at: float | None, waiting_for_user: bool = False,
                       based_on: CookieState | None = None) -> CookieState | None:
        """Count a failed refresh; dropped (None) when the cookies changed since ``based_on``."""
        with self._exclusive() as current:
            if based_on is not None and not current.same_cookies(based_on):
                return None
            return self._write(replace(current, last_error=message, last_error_reason=reason,
                                       failures=current.failures + 1, next_login_at=next_login_at,
                                       waiting_for_user=waiting_for_user))

    def record_account_failure(self, account: AccountState, message: str, reason: str, next_login_at: float | None,
                               waiting_for_user: bool, based_on: CookieState | None = None) -> CookieState | None:
        """Count a failed login with one account; dropped (None) when the cookies changed since ``based_on``."""
        with self._exclusive() as current:
            if based_on is not None and not current.same_cookies(based_on):
                return None
            before = current.account(account.id)
            failed = AccountState(account.id, account.email, before.failures + 1, next_login_at, waiting_for_user,
                                  message, reason)
            return self._write(replace(current, accounts=_with_account(current.accounts, failed)))

    def mark_rejected(self, used: CookieState, now: float | None = None) -> bool:
        """Strava refused the cookies of ``used``: mark them, once, unless newer cookies came meanwhile."""
        with self._exclusive() as current:
            if not current.same_cookies(used) or current.rejected_at is not None:
                return False
            self._write(replace(current, rejected_at=time.time() if now is None else now))
            return True
