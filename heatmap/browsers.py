"""The browsers paired with this server, and the cookies they push.

Pairing makes a push token for one browser, by name. Only the token's SHA-256 hash is kept, in
``DATA_DIR/browsers.json`` (``heatmap.tokens``), with the name, when it was paired, and when that
browser last pushed and what came of it. A push token opens one route, ``POST /browser/cookies``:
it cannot read cookies, ask for a refresh or change anything else.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass

from .cookies import STRAVA_NAMES, CookieExportError, describe, parse_export
from .refresher import PushOutcome
from .tokens import TokenFile, TokenFileError, token_hash

log = logging.getLogger(__name__)
MAX_NAMES = 30  # cookie names of one push that the DEBUG log lists
NOTHING_SENT = PushOutcome(False, 'nothing to judge: the browser sent no cookies (it is not logged in to Strava), '
                                  'only checked that it is paired')
NOT_A_COOKIE_LIST = ('a push is the JSON list of cookies that the browser\'s cookie API returns (objects with "name" '
                     'and "value")')


class BrowsersError(TokenFileError):
    """browsers.json cannot be used, or a pairing request is wrong; ``str()`` is one line saying what to do."""


@dataclass(frozen=True)
class Browser:
    """A paired browser as anyone may see it: never its token, nor the token's hash."""

    name: str
    paired_at: float
    last_push_at: float | None = None
    last_result: str | None = None


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
    except (ValueError, RecursionError):
        raise CookieExportError(NOT_A_COOKIE_LIST) from None
    if not isinstance(received, list) or not all(isinstance(c, dict) and 'name' in c for c in received):
        raise CookieExportError(NOT_A_COOKIE_LIST)
    if not received:
        return [], []
    names = [''.join(ch if ch.isprintable() else '?' for ch in str(c['name'])[:60]) for c in received[:MAX_NAMES]]
    if len(received) > MAX_NAMES:
        names.append(f'and {len(received) - MAX_NAMES} more')
    return [c for c in parse_export(text) if c['name'] in STRAVA_NAMES], names


class Browsers(TokenFile):
    """The paired browsers of one data directory; every call reads the file, so pairings made elsewhere count."""

    error = BrowsersError

    def pair(self, name: str, now: float | None = None) -> tuple[str, bool]:
        """A new push token for ``name`` (returned once, never stored) and whether it replaced an earlier one."""
        return self.make(name, lambda replaced: {'paired_at': time.time() if now is None else now,
                                                 'last_push_at': None, 'last_result': None})

    def list(self) -> list[Browser]:
        """The paired browsers in the order they were paired."""
        entries = sorted(self.read().items(), key=lambda item: item[1].get('paired_at') or 0)
        return [Browser(name, e.get('paired_at') or 0, e.get('last_push_at'), e.get('last_result'))
                for name, e in entries]

    def authenticate(self, token: str) -> str | None:
        """The name of the browser this push token belongs to, or None; every hash is compared in constant time."""
        if not token:
            return None
        given = token_hash(token)
        found = None
        for name, entry in self.read().items():
            if hmac.compare_digest(given, entry['hash']):
                found = name
        return found

    def record_push(self, name: str, result: str, now: float | None = None) -> None:
        """Note when ``name`` last pushed and what came of it (nothing when it was revoked meanwhile)."""
        def note(entries: dict[str, dict]) -> None:
            if name in entries:
                entries[name].update(last_push_at=time.time() if now is None else now, last_result=result)
        try:
            self.change(note)
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
