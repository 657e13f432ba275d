"""Strava accounts to log in with: ``STRAVA_EMAIL``/``STRAVA_PASSWORD`` and the ``STRAVA_ACCOUNTS_FILE``.

When a login with one account ends in a reason that needs its owner (a one-time code, a wrong
password, a captcha, Strava's bot block), the next account logs in. Each account's state (its
failures, its backoff, whether it waits for the user) is kept in the store under an id that is
a hash of its email, and shown with the email masked.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path


class AccountsFileError(ValueError):
    """The accounts file cannot be used; the message names the file and the line, never a password."""


@dataclass(frozen=True)
class Account:
    email: str
    password: str

    def __repr__(self) -> str:  # never a password, even in a traceback
        return f'Account({self.masked})'

    @property
    def id(self) -> str:
        """A stable name for the account's state in the store, not the email itself.

        >>> Account('rider@example.com', 'x').id == Account('Rider@Example.com ', 'y').id
        True
        """
        return hashlib.sha256(self.email.strip().lower().encode()).hexdigest()[:12]

    @property
    def masked(self) -> str:
        return mask(self.email)


def mask(email: str) -> str:
    """An email as the status page shows it.

    >>> mask('rider@example.com'), mask('x@y.org'), mask('no-at-sign')
    ('r***@example.com', 'x***@y.org', 'n***')
    """
    name, at, domain = email.strip().partition('@')
    return f'{name[:1]}***{at}{domain}'


def parse_accounts(text: str, where: str) -> list[Account]:
    """Accounts from ``email password`` lines (``#`` comments, blank lines) or a JSON list of objects.

    >>> parse_accounts('# club accounts\\na@x.org  pass word\\nb@x.org p2', 'f')
    [Account(a***@x.org), Account(b***@x.org)]
    >>> parse_accounts('[{"email": "a@x.org", "password": "p"}]', 'f')
    [Account(a***@x.org)]
    >>> parse_accounts('a@x.org', 'accounts.txt')
    Traceback (most recent call last):
    heatmap.accounts.AccountsFileError: accounts.txt line 1: expected "email password"
    """
    stripped = text.strip()
    if stripped.startswith('['):
        try:
            items = json.loads(stripped)
        except ValueError:
            raise AccountsFileError(f'{where} looks like JSON but does not parse: expected a list of '
                                    '{"email": …, "password": …}') from None
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get('email'), str)
                                                  and isinstance(i.get('password'), str) for i in items):
            raise AccountsFileError(f'{where}: expected a JSON list of {{"email": …, "password": …}}')
        accounts = [Account(i['email'].strip(), i['password']) for i in items]
    else:
        accounts = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            email, _, password = line.partition(' ')
            if '@' not in email or not password.strip():
                raise AccountsFileError(f'{where} line {number}: expected "email password"')
            accounts.append(Account(email, password.strip()))
    if not accounts:
        raise AccountsFileError(f'{where} holds no accounts: one "email password" a line')
    return accounts


def read_accounts_file(path: str, setting: str) -> list[Account]:
    """The accounts of a file only its owner can read (mode 0600), else AccountsFileError."""
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text(encoding='utf-8')
    except OSError as error:
        raise AccountsFileError(f'{setting} names {path}, which cannot be read ({error.strerror})') from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AccountsFileError(f'{setting} names {path}, which others can read (mode {stat.S_IMODE(mode):o}): '
                                f'it holds passwords; run `chmod 600 {path}`')
    return parse_accounts(text, path)


def all_accounts(email: str, password: str, accounts_file: str, setting: str = 'STRAVA_ACCOUNTS_FILE') -> list[Account]:
    """The account of STRAVA_EMAIL/STRAVA_PASSWORD first, then the file's, each email once."""
    accounts = [Account(email, password)] if email and password else []
    if accounts_file:
        accounts += read_accounts_file(accounts_file, setting)
    unique: dict[str, Account] = {}
    for account in accounts:
        unique.setdefault(account.id, account)
    return list(unique.values())
