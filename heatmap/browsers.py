"""The browsers paired with this server, and the cookies they push.

Pairing makes a push token for one browser, by name. Only the token's SHA-256 hash is kept, in
``DATA_DIR/browsers.json`` (a TinyDB file written atomically, mode 0600), with the name, when it
was paired, and when that browser last pushed and what came of it. A push token opens one route,
``POST /browser/cookies``: it cannot read cookies, ask for a refresh or change anything else.

Writers (``redirector.py pair`` in another process, the server recording a push or pairing from
the status page) hold ``DATA_DIR/.browsers.lock`` and re-read the file before they change it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinydb import TinyDB
from tinydb.table import Document

from .cookies import STRAVA_NAMES, CookieExportError, describe, parse_export
from .refresher import PushOutcome
from .store import AtomicJSONStorage, FileLock, explain, is_abandoned

log = logging.getLogger(__name__)
STATE_ID = 1
MAX_BROWSERS = 50
MAX_NAMES = 30  # cookie names of one push that the DEBUG log lists
NAME = re.compile(r'\w[\w.@ -]{0,39}')
NAME_RULE = 'a browser\'s name is 1 to 40 letters, digits, spaces, dots, dashes or underscores, e.g. laptop'
NOTHING_SENT = PushOutcome(False, 'nothing to judge: the browser sent no cookies (it is not logged in to Strava), '
                                  'only checked that it is paired')
NOT_A_COOKIE_LIST = ('a push is the JSON list of cookies that the browser\'s cookie API returns (objects with "name" '
                     'and "value")')


class BrowsersError(Exception):
    """browsers.json cannot be used, or a pairing request is wrong; ``str()`` is one line saying what to do."""


@dataclass(frozen=True)
class Browser:
    """A paired browser as anyone may see it: never its token, nor the token's hash."""

    name: str
    paired_at: float
    last_push_at: float | None = None
    last_result: str | None = None


def token_hash(token: str) -> str:
    """What is stored of a push token: its SHA-256, in hex.

    >>> token_hash('abc')[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def checked_name(name: str) -> str:
    """A browser's name, trimmed, or BrowsersError saying what a name may be.

    >>> checked_name(' phone-firefox ')
    'phone-firefox'
    >>> checked_name('a;rm -rf')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    heatmap.browsers.BrowsersError: a browser's name is 1 to 40 letters, digits, ...
    """
    name = name.strip()
    if not NAME.fullmatch(name):
        raise BrowsersError(NAME_RULE)
    return name


def pairing_text(name: str, token: str, replaced: bool) -> str:
    """What pairing prints: where the token goes, then the token itself as the last line.

    >>> print(pairing_text('laptop', 'T0KEN', replaced=False))
    paste this push token into the options page of the extension in the browser 'laptop':
    T0KEN
    """
    earlier = " (it replaces that browser's earlier token, which no longer works)" if replaced else ''
    return f'paste this push token into the options page of the extension in the browser {name!r}{earlier}:\n{token}'


def pushed_cookies(text: str) -> tuple[list[dict], list[str]]:
    """The cookies of a push that the server keeps, and the names of all it received (for the DEBUG log).

    Only the cookies the server needs are kept, whatever else a push holds.

    >>> kept, names = pushed_cookies('[{"name": "_strava4_session", "value": "s", "domain": ".strava.com"},'
    ...                              ' {"name": "_ga", "value": "g", "domain": ".strava.com"}]')
    >>> [c['name'] for c in kept], names
    (['_strava4_session'], ['_strava4_session', '_ga'])
    >>> pushed_cookies('_strava4_session=s')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    heatmap.cookies.CookieExportError: a push is the JSON list of cookies ...
    """
    try:
        received = json.loads(text)
    except ValueError:
        raise CookieExportError(NOT_A_COOKIE_LIST) from None
    if not isinstance(received, list) or not all(isinstance(c, dict) and 'name' in c for c in received):
        raise CookieExportError(NOT_A_COOKIE_LIST)
    if not received:
        return [], []
    names = [''.join(ch if ch.isprintable() else '?' for ch in str(c['name'])[:60]) for c in received[:MAX_NAMES]]
    if len(received) > MAX_NAMES:
        names.append(f'and {len(received) - MAX_NAMES} more')
    return [c for c in parse_export(text) if c['name'] in STRAVA_NAMES], names


class Browsers:
    """The paired browsers of one data directory; every call reads the file, so pairings made elsewhere count."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / 'browsers.json'
        self._table = TinyDB(self.path, storage=AtomicJSONStorage).table('browsers')

    def _read(self, writing: bool = False) -> dict[str, dict]:
        """The entries by name; a damaged file is moved aside by a writer, and an error for a reader."""
        try:
            document = self._table.get(doc_id=STATE_ID)
            entries = dict(document['browsers']) if document else {}
            if not all(isinstance(e, dict) and isinstance(e.get('hash'), str) for e in entries.values()):
                raise ValueError('an entry without a hash')
            return entries
        except OSError as error:
            raise BrowsersError(explain(error, self.path, 'read')) from None
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            if not writing:
                raise BrowsersError(f'{self.path} is damaged ({type(error).__name__}): pair the browsers again') \
                    from None
            aside = self.path.with_name(f'browsers.json.corrupt-{time.strftime("%Y%m%d-%H%M%S")}')
            os.replace(self.path, aside)
            log.error('browsers.json could not be read (%s); moved it aside to %s: pair the browsers again',
                      type(error).__name__, aside.name)
            return {}

    def _change(self, change: Callable[[dict[str, dict]], object]):
        """Apply ``change`` to the entries under the lock and write them; returns what ``change`` returned."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(self.data_dir / '.browsers.lock'):
                now = time.time()
                for temporary in self.data_dir.glob('.browsers.json.*.tmp'):  # left by a writer that died
                    if is_abandoned(temporary, now):
                        temporary.unlink(missing_ok=True)
                entries = self._read(writing=True)
                result = change(entries)
                self._table.upsert(Document({'browsers': entries}, doc_id=STATE_ID))
                return result
        except OSError as error:
            raise BrowsersError(explain(error, self.path, 'write')) from None

    def pair(self, name: str, now: float | None = None) -> tuple[str, bool]:
        """A new push token for ``name`` (returned once, never stored) and whether it replaced an earlier one."""
        name = checked_name(name)
        token = secrets.token_urlsafe(32)

        def add(entries: dict[str, dict]) -> bool:
            if name not in entries and len(entries) >= MAX_BROWSERS:
                raise BrowsersError(f'{MAX_BROWSERS} browsers are paired already: revoke one first')
            replaced = name in entries
            entries[name] = {'hash': token_hash(token), 'paired_at': time.time() if now is None else now,
                             'last_push_at': None, 'last_result': None}
            return replaced
        return token, self._change(add)

    def revoke(self, name: str) -> bool:
        """Forget ``name``'s token: its pushes are refused from now on. False when no such browser is paired."""
        return bool(self._change(lambda entries: entries.pop(name.strip(), None)))

    def list(self) -> list[Browser]:
        """The paired browsers in the order they were paired."""
        entries = sorted(self._read().items(), key=lambda item: item[1].get('paired_at') or 0)
        return [Browser(name, e.get('paired_at') or 0, e.get('last_push_at'), e.get('last_result'))
                for name, e in entries]

    def authenticate(self, token: str) -> str | None:
        """The name of the browser this push token belongs to, or None; every hash is compared in constant time."""
        if not token:
            return None
        given = token_hash(token)
        found = None
        for name, entry in self._read().items():
            if hmac.compare_digest(given, entry['hash']):
                found = name
        return found

    def record_push(self, name: str, result: str, now: float | None = None) -> None:
        """Note when ``name`` last pushed and what came of it (nothing when it was revoked meanwhile)."""
        def note(entries: dict[str, dict]) -> None:
            if name in entries:
                entries[name].update(last_push_at=time.time() if now is None else now, last_result=result)
        try:
            self._change(note)
        except BrowsersError as error:
            log.error('the push of browser %r is not recorded: %s', name, error)


def receive_push(browsers: Browsers, refresher, name: str, text: str, client: str, wait: float):
    """Judge the cookies a paired browser pushed (``text``, the body); returns the refresher's PushOutcome.

    An empty list is how the extension checks its pairing from a browser logged out of Strava: there
    is nothing to judge. CookieExportError when the body is not a cookie list the server can use.
    The log says what the push held and what came of it, never a value; at DEBUG it names every
    cookie received.
    """
    try:
        cookies, names = pushed_cookies(text)
    except CookieExportError as error:
        log.info('refused a push of browser %r from %s: %s', name, client, error)
        raise
    if not names:
        browsers.record_push(name, NOTHING_SENT.result)
        log.info('browser %r checked its pairing from %s: it sent no cookies', name, client)
        return NOTHING_SENT
    log.debug('browser %r sent cookies named %s', name, ', '.join(names))

    def done(outcome) -> None:
        browsers.record_push(name, outcome.result)
        log.info('browser %r pushed cookies from %s (%s): %s', name, client, describe(cookies), outcome.result)
    return refresher.take_push(cookies, wait, done)
