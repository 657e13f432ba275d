"""Member keys: a key of their own for each member of a club, kept hashed, with what each member used.

``redirector.py keys add NAME`` makes a key. Only its SHA-256 is kept, in ``DATA_DIR/keys.json``
(``heatmap.tokens``), with the member's name, when the key was made, the tiles served to the member,
those fetched from Strava for them, and when they were last seen. A member key opens what
``HEATMAP_ACCESS_KEY`` (the operator's key) opens: tiles, presets, packs, and the personal heatmap
only where the operator allows it (``HEATMAP_MEMBERS_PERSONAL``). The admin routes stay the admin token's.

Once ``keys.json`` exists, every keyed route needs a key, even without ``HEATMAP_ACCESS_KEY`` and
after the last member was revoked: revoking keys never opens the server to everyone (deleting the
file does). A file the server cannot read admits no member until it can (the operator's key still works).

The server reads the file at start and again within ``RELOAD_SECONDS`` of a change (one ``stat`` a
second), so that a key revoked by the command in another process is refused at once, by the memory
cache too, which asks ``admit`` before each answer. Usage is counted in memory and added to the file
every ``FLUSH_SECONDS`` and at exit, never once per tile.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote

from .cookies import when
from .tokens import TokenFile, TokenFileError, token_hash

log = logging.getLogger(__name__)
RELOAD_SECONDS = 1.0  # how often the server looks whether keys.json changed
FLUSH_SECONDS = 5.0  # how often the usage counted in memory is added to keys.json
MEMBERS_PERSONAL_OFF = ('the personal heatmap is the operator\'s own: member keys open it only when the operator sets '
                        'HEATMAP_MEMBERS_PERSONAL=1')


class KeysError(TokenFileError):
    """keys.json cannot be used, or a request about a key is wrong; ``str()`` is one line saying what to do."""


@dataclass(frozen=True)
class Caller:
    """Who a request's key says it comes from: a ``member`` (by name), the ``operator`` (HEATMAP_ACCESS_KEY), or
    ``anyone`` (on a server that needs no key)."""

    kind: str
    name: str = ''

    def budget(self, address: str) -> str:
        """Whose rate limit a request spends: a member's own, else its address's.

        >>> Caller('member', 'anna').budget('203.0.113.9'), OPERATOR.budget('203.0.113.9')
        ('member anna', '203.0.113.9')
        """
        return f'member {self.name}' if self.kind == 'member' else address

    def __str__(self) -> str:
        """How the log names a request's sender: a member by name beside the address, never a key."""
        return f'member {self.name!r}' if self.kind == 'member' else self.kind


OPERATOR = Caller('operator')
ANYONE = Caller('anyone')


@dataclass(frozen=True)
class Usage:
    """One member as the operator sees them: never their key, nor its hash."""

    name: str
    created_at: float
    served: int = 0
    fetched: int = 0
    last_seen: float | None = None

    def line(self) -> str:
        """
        >>> print(Usage('anna', 1700000000, 120, 31, 1700003600).line())
        anna: 120 tiles served, 31 fetched from Strava, last seen 2023-11-14 23:13 UTC (key made 2023-11-14 22:13 UTC)
        """
        seen = f'last seen {when(self.last_seen)}' if self.last_seen else 'not seen yet'
        return (f'{self.name}: {self.served} tiles served, {self.fetched} fetched from Strava, {seen} '
                f'(key made {when(self.created_at)})')


def split_key(query: str) -> tuple[str, str]:
    """The key a query string carries, as Bottle reads it (the last ``key=``, decoded as UTF-8; '' when there is
    none, or it is not UTF-8), and the query without it.

    >>> split_key('px=256&key=s%C3%A9same'), split_key('key=a&px=256&key=b'), split_key('px=256')
    (('sésame', 'px=256'), ('b', 'px=256'), ('', 'px=256'))
    >>> split_key('k%65y=a+b&'), split_key('key=%FF'), split_key('key')
    (('a b', ''), ('', ''), ('', ''))
    """
    if 'key' not in query and '%' not in query:
        return '', query
    given, rest = '', []
    for pair in query.split('&'):
        name, _, value = pair.partition('=')
        if unquote(name.replace('+', ' '), 'latin1') == 'key':
            given = value
        elif pair:
            rest.append(pair)
    try:
        given = unquote(given.replace('+', ' '), 'latin1').encode('latin1').decode('utf-8')
    except UnicodeError:
        given = ''
    return given, '&'.join(rest)


def key_text(name: str, key: str, replaced: bool) -> str:
    """What adding a member prints: where the key goes, then the key itself as the last line.

    >>> print(key_text('anna', 'K3Y', replaced=False))
    give this key to anna (it goes into tile URLs as ?key=…; /presets/?key=… makes their presets):
    K3Y
    """
    earlier = ", in place of their earlier key, which no longer works" if replaced else ''
    return (f'give this key to {name}{earlier} (it goes into tile URLs as ?key=…; /presets/?key=… makes their '
            f'presets):\n{key}')


class Keys(TokenFile):
    """The member keys of one data directory, and who a request's key is.

    ``add``, ``revoke`` and ``usage`` go to the file, so that the command line and the server see the same
    members; ``admit`` and ``count`` work in memory, for every tile.
    """

    file, kind, example = 'keys', 'member', 'anna'
    again, full = 'add the members again', 'members have a key already'
    maximum = 1000
    error = KeysError

    def __init__(self, data_dir, access_key: str = '', members_personal: bool = False):
        super().__init__(data_dir)
        self.access_key, self.members_personal = access_key, members_personal
        self.problem: str | None = None  # why member keys are refused now (keys.json cannot be read)
        self.required = bool(access_key)
        self._members: dict[str, Caller] = {}  # key hash -> member
        self._read: tuple | None = (-2, 0)  # keys.json's inode and mtime when last read (None: there was none)
        self._reload_lock = threading.Lock()
        self._usage: dict[str, list] = {}  # member name -> [served, fetched, last seen] not written yet
        self._lock = threading.Lock()

    # -- in memory, for every request ---------------------------------------------------------
    def caller(self, given: str) -> Caller | None:
        """Who the key ``given`` is; None when it opens nothing (keys are needed, and it is none of them)."""
        if self.access_key and hmac.compare_digest(given.encode(), self.access_key.encode()):
            return OPERATOR
        member = self._members.get(token_hash(given)) if given else None
        if member is not None:
            return member
        return None if self.required else ANYONE

    def admit(self, given: str, kind: str = 'global') -> Caller | None:
        """Who ``given`` is, when it opens tiles of ``kind`` (``global`` or ``personal``); None when it does not."""
        caller = self.caller(given)
        if caller is not None and kind == 'personal' and not self.opens_personal(caller):
            return None
        return caller

    def opens_personal(self, caller: Caller) -> bool:
        """Whether ``caller`` may see the personal heatmap, the operator's own activities: members only if allowed."""
        return caller.kind != 'member' or self.members_personal

    def admits_query(self, query: str) -> bool:
        """Whether a query string's key opens the keyed routes (waitress asks, before it reads an upload)."""
        return self.caller(split_key(query)[0]) is not None

    def count(self, caller: Caller, fetched: bool = False, now: float | None = None) -> None:
        """One tile served to ``caller`` (fetched from Strava for them or not); counted for members only."""
        if caller.kind != 'member':
            return
        now = time.time() if now is None else now
        with self._lock:
            usage = self._usage.get(caller.name)
            if usage is None:
                usage = self._usage[caller.name] = [0, 0, now]
            usage[0] += 1
            usage[1] += fetched
            usage[2] = now

    # -- the file ---------------------------------------------------------------------------
    def reload_if_changed(self) -> None:
        """Read keys.json again when it changed (or could not be read last time): one ``stat`` otherwise."""
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns)  # a write replaces the file: a new inode, whatever the clock says
        except FileNotFoundError:
            seen = None
        except OSError as error:
            seen = (-1, error.errno)
        if seen == self._read and self.problem is None:
            return
        with self._reload_lock:
            self._read = seen
            try:
                entries = self.read() if seen is not None else {}
            except KeysError as error:
                self._members, self.required = {}, True
                if self.problem != str(error):
                    log.error('member keys are refused until keys.json can be read: %s', error)
                self.problem = str(error)
                return
            if self.problem:
                log.info('keys.json can be read again: member keys work')
            self.problem = None
            known = {entry['hash']: Caller('member', name) for name, entry in entries.items()}
            gone = [member.name for hashed, member in self._members.items() if hashed not in known]
            self._members, self.required = known, bool(self.access_key) or seen is not None
        if gone:
            log.info('member keys revoked or replaced: %s; refused from now on', ', '.join(repr(n) for n in gone))

    def add(self, name: str, now: float | None = None) -> tuple[str, bool]:
        """A new key for member ``name`` (returned once, never stored) and whether it replaced their earlier key;
        a member who gets a new key keeps what they used so far."""
        def entry(replaced: dict | None) -> dict:
            kept = {k: replaced.get(k) for k in ('served', 'fetched', 'last_seen')} if replaced else {}
            return {'created_at': time.time() if now is None else now, 'served': 0, 'fetched': 0, 'last_seen': None,
                    **{k: v for k, v in kept.items() if v is not None}}
        made = self.make(name, entry)
        self.reload_if_changed()
        return made

    def revoke(self, name: str) -> bool:
        """End ``name``'s key: refused from now on (here at once, in a server within ``RELOAD_SECONDS``)."""
        revoked = super().revoke(name)
        self.reload_if_changed()
        return revoked

    def usage(self) -> list[Usage]:
        """Every member in the order they were added, with what they used (counted here and not written yet too)."""
        entries = sorted(self.read().items(), key=lambda item: item[1].get('created_at') or 0)
        with self._lock:
            pending = {name: tuple(usage) for name, usage in self._usage.items()}
        listed = []
        for name, entry in entries:
            served, fetched, seen = pending.get(name, (0, 0, None))
            stored_seen = entry.get('last_seen')
            listed.append(Usage(name, entry.get('created_at') or 0, (entry.get('served') or 0) + served,
                                (entry.get('fetched') or 0) + fetched,
                                max(stored_seen or 0, seen or 0) or None))
        return listed

    def flush(self) -> None:
        """Add the usage counted since the last flush to keys.json (a revoked member's is dropped)."""
        with self._lock:
            usage, self._usage = self._usage, {}
        if not usage:
            return

        def add(entries: dict[str, dict]) -> None:
            for name, (served, fetched, seen) in usage.items():
                entry = entries.get(name)
                if entry is not None:
                    entry['served'] = (entry.get('served') or 0) + served
                    entry['fetched'] = (entry.get('fetched') or 0) + fetched
                    entry['last_seen'] = max(entry.get('last_seen') or 0, seen)
        try:
            self.change(add)
        except KeysError as error:
            with self._lock:  # kept for the next try
                for name, (served, fetched, seen) in usage.items():
                    again = self._usage.setdefault(name, [0, 0, seen])
                    again[0] += served
                    again[1] += fetched
                    again[2] = max(again[2], seen)
            log.error('the members\' usage is not written: %s', error)

    def start(self) -> Keys:
        """Read keys.json, then watch it and write the usage now and then, in a thread of its own, and once more at
        exit. A command that only changes the file never starts: it reads nothing it does not need."""
        self.reload_if_changed()
        threading.Thread(target=self._watch, daemon=True, name='member-keys').start()
        atexit.register(self.flush)
        return self

    def _watch(self) -> None:
        flushed = time.monotonic()
        while True:
            time.sleep(RELOAD_SECONDS)
            try:
                self.reload_if_changed()
                if time.monotonic() - flushed >= FLUSH_SECONDS:
                    flushed = time.monotonic()
                    self.flush()
            except Exception as error:  # noqa: BLE001 - the watcher must outlive anything the disk does
                log.error('member keys: %s (%s); trying again', error, type(error).__name__)
