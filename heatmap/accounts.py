"""Strava accounts to log in with: ``STRAVA_EMAIL``/``STRAVA_PASSWORD`` and the ``STRAVA_ACCOUNTS_FILE``.

An account has a password, or a mailbox where Strava's emailed code is read (``STRAVA_IMAP_URL``,
``imap_url`` in the file's JSON form), or both. When a login with one account ends in a reason that
needs its owner (a one-time code, a wrong password, a captcha, Strava's bot block), the next account
logs in. Each account's state (its failures, its backoff, whether it waits for the user) is kept in
the store under an id that is a hash of its email, and shown with the email masked.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from actor.src.mailbox import parse_imap_url


class SecretFileError(ValueError):
    """A file holding secrets cannot be used; the message names the file and the fix, never what it holds."""


class AccountsFileError(SecretFileError):
    """The accounts file cannot be used; the message names the file and the line, never a password."""


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    imap_url: str = ''  # the mailbox Strava's code is read from, for a login that meets the code screen
    imap_password: str = ''

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

    In the JSON form an account may carry its mailbox, ``imap_url`` and ``imap_password``, beside or
    instead of its ``password``.

    >>> parse_accounts('# club accounts\\na@x.org  pass word\\nb@x.org p2', 'f')
    [Account(a***@x.org), Account(b***@x.org)]
    >>> parse_accounts('[{"email": "a@x.org", "imap_url": "imaps://a@imap.x.org", "imap_password": "p"}]', 'f')
    [Account(a***@x.org)]
    >>> parse_accounts('a@x.org', 'accounts.txt')
    Traceback (most recent call last):
    heatmap.accounts.AccountsFileError: accounts.txt line 1: expected "email password"
    >>> parse_accounts('[{"email": "a@x.org", "imap_url": "imaps://a@imap.x.org"}]', 'f')
    Traceback (most recent call last):
    heatmap.accounts.AccountsFileError: f entry 1 (a***@x.org): "imap_url" and "imap_password" go together
    """
    stripped = text.strip()
    if stripped.startswith('['):
        try:
            items = json.loads(stripped)
        except ValueError:
            raise AccountsFileError(f'{where} looks like JSON but does not parse: expected a list of '
                                    '{"email": …, "password": …}') from None
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get('email'), str)
                                                  for i in items):
            raise AccountsFileError(f'{where}: expected a JSON list of {{"email": …, "password": …}}')
        accounts = [_json_account(item, f'{where} entry {number} ({mask(item["email"])})')
                    for number, item in enumerate(items, 1)]
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


def _json_account(item: dict, where: str) -> Account:
    """One account of the JSON form: a password, a mailbox (``imap_url`` with ``imap_password``), or both."""
    values = {key: item.get(key) or '' for key in ('password', 'imap_url', 'imap_password')}
    if not all(isinstance(value, str) for value in values.values()):
        raise AccountsFileError(f'{where}: "password", "imap_url" and "imap_password" are strings')
    password, imap_url, imap_password = values.values()
    if bool(imap_url) != bool(imap_password):
        raise AccountsFileError(f'{where}: "imap_url" and "imap_password" go together')
    if not password and not imap_url:
        raise AccountsFileError(f'{where}: needs a "password", or a mailbox ("imap_url", "imap_password"), or both')
    if imap_url:
        try:
            parse_imap_url(imap_url, f'{where}: "imap_url"', '"imap_password"')
        except ValueError as error:
            raise AccountsFileError(str(error)) from None
    return Account(item['email'].strip(), password, imap_url.strip(), imap_password)


def read_secret_file(path: str, setting: str, holds: str = 'a secret') -> str:
    """The text of a file only its owner can read (mode 0600), else SecretFileError saying how to fix it."""
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text(encoding='utf-8')
    except OSError as error:
        raise SecretFileError(f'{setting} names {path}, which cannot be read ({error.strerror})') from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(f'{setting} names {path}, which others can read (mode {stat.S_IMODE(mode):o}): '
                              f'it holds {holds}; run `chmod 600 {path}`')
    return text


def read_accounts_file(path: str, setting: str) -> list[Account]:
    """The accounts of a file only its owner can read (mode 0600), else SecretFileError."""
    return parse_accounts(read_secret_file(path, setting, 'passwords'), path)


def all_accounts(email: str, password: str, accounts_file: str, setting: str = 'STRAVA_ACCOUNTS_FILE',
                 imap_url: str = '', imap_password: str = '') -> list[Account]:
    """The account of STRAVA_EMAIL (with STRAVA_PASSWORD, its mailbox, or both) first, then the file's, each once."""
    accounts = [Account(email, password, imap_url, imap_password)] if email and (password or imap_url) else []
    if accounts_file:
        accounts += read_accounts_file(accounts_file, setting)
    unique: dict[str, Account] = {}
    for account in accounts:
        unique.setdefault(account.id, account)
    return list(unique.values())
