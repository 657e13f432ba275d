"""Secret tokens by name, of which only a hash is kept: the paired browsers' push tokens, the members' keys.

Each kind lives in one TinyDB file of the data directory (``DATA_DIR/browsers.json``, ``DATA_DIR/keys.json``,
written atomically, mode 0600): a name, the token's SHA-256, and what the kind records beside it. The token itself
is shown once, when it is made, and never stored. Writers (a command in another process, the server) hold the
file's lock (``DATA_DIR/.browsers.lock``, ``.keys.lock``) and re-read the file before they change it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from tinydb import TinyDB
from tinydb.table import Document

from .store import AtomicJSONStorage, FileLock, explain, is_abandoned

log = logging.getLogger(__name__)
STATE_ID = 1
NAME = re.compile(r'\w[\w.@ -]{0,39}')


class TokenFileError(Exception):
    """A token file cannot be used, or a request about one is wrong; ``str()`` is one line saying what to do."""


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256, in hex.

    >>> token_hash('abc')[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A token nobody can guess: 256 random bits, URL-safe (43 characters).

    >>> len(new_token()), new_token() == new_token()
    (43, False)
    """
    return secrets.token_urlsafe(32)


class TokenFile:
    """The tokens of one kind in one data directory, by name; every read goes to the file, so that changes made by
    another process count. Subclasses set ``file`` (its name without ``.json``), ``kind`` (a browser, a member),
    ``example`` (a name), what to do ``again`` after damage, the messages' words, ``maximum`` and ``error`` (a
    TokenFileError subclass), and add what they record."""

    file = 'browsers'
    kind = 'browser'
    example = 'laptop'
    again = 'pair the browsers again'  # what to do when the file is damaged
    full = 'browsers are paired already'
    maximum = 50
    error: type[TokenFileError] = TokenFileError

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / f'{self.file}.json'
        self._table = TinyDB(self.path, storage=AtomicJSONStorage).table(self.file)

    def checked_name(self, name: str) -> str:
        """``name`` trimmed, or the error saying what a name may be.

        >>> TokenFile('data').checked_name(' phone-firefox ')
        'phone-firefox'
        >>> TokenFile('data').checked_name('a;rm -rf')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        heatmap.tokens.TokenFileError: a browser's name is 1 to 40 letters, digits, ...
        """
        name = name.strip()
        if not NAME.fullmatch(name):
            raise self.error(f"a {self.kind}'s name is 1 to 40 letters, digits, spaces, dots, dashes or underscores, "
                             f'e.g. {self.example}')
        return name

    def read(self, writing: bool = False) -> dict[str, dict]:
        """The entries by name; a damaged file is moved aside by a writer, and an error for a reader."""
        try:
            document = self._table.get(doc_id=STATE_ID)
            entries = dict(document[self.file]) if document else {}
            if not all(isinstance(e, dict) and isinstance(e.get('hash'), str) for e in entries.values()):
                raise ValueError('an entry without a hash')
            return entries
        except OSError as error:
            raise self.error(explain(error, self.path, 'read')) from None
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            if not writing:
                raise self.error(f'{self.path} is damaged ({type(error).__name__}): {self.again}') from None
            aside = self.path.with_name(f'{self.path.name}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}')
            os.replace(self.path, aside)
            log.error('%s could not be read (%s); moved it aside to %s: %s', self.path.name, type(error).__name__,
                      aside.name, self.again)
            return {}

    def change(self, change: Callable[[dict[str, dict]], object]):
        """Apply ``change`` to the entries under the lock and write them; returns what ``change`` returned."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(self.data_dir / f'.{self.file}.lock'):
                now = time.time()
                for temporary in self.data_dir.glob(f'.{self.path.name}.*.tmp'):  # left by a writer that died
                    if is_abandoned(temporary, now):
                        temporary.unlink(missing_ok=True)
                entries = self.read(writing=True)
                result = change(entries)
                self._table.upsert(Document({self.file: entries}, doc_id=STATE_ID))
                return result
        except OSError as error:
            raise self.error(explain(error, self.path, 'write')) from None

    def make(self, name: str, entry: Callable[[dict | None], dict]) -> tuple[str, bool]:
        """A new token for ``name`` (returned once, never stored) and whether it replaced an earlier one; ``entry``
        makes what is stored beside the hash from the entry it replaces (None for a new name)."""
        name = self.checked_name(name)
        token = new_token()

        def add(entries: dict[str, dict]) -> bool:
            if name not in entries and len(entries) >= self.maximum:
                raise self.error(f'{self.maximum} {self.full}: revoke one first')
            replaced = entries.get(name)
            entries[name] = {**entry(replaced), 'hash': token_hash(token)}
            return replaced is not None
        return token, self.change(add)

    def revoke(self, name: str) -> bool:
        """Forget ``name``'s token: it is refused from now on. False when there is no such name."""
        return bool(self.change(lambda entries: entries.pop(name.strip(), None)))
