"""A real IMAP server for the tests (pymap, mailboxes in memory) and the tests' own client of it.

pymap runs as a subprocess with its demo user and logs every command it is sent. The tests'
connections and the fake Strava's introduce themselves with IMAP's ``ID`` command, so that a test
can tell what the login itself sent (``commands_of_the_login``): only commands that read.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

USER = 'demouser'
PASSWORD = 'mail-secret-5Jq'  # the demo user's, distinct enough to look for in logs
COMMAND = re.compile(r':(\w+) -->\| \S+ ((?:UID )?[A-Z]+)(.*)$')


@dataclass(frozen=True)
class Mailbox:
    """One mailbox (folder) of the demo user: where the fake Strava sends its code mails."""

    host: str
    port: int
    name: str = 'INBOX'
    user: str = USER
    password: str = PASSWORD

    @property
    def url(self) -> str:
        """The mailbox as STRAVA_IMAP_URL names it (plain IMAP: the server is on this machine)."""
        return f'imap://{self.user}@{self.host}:{self.port}/{self.name}'

    @contextmanager
    def client(self, who: str = 'tests'):
        """A logged-in connection that introduces itself as ``who``, so that it is not taken for the login's."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.xatom('ID', f'("name" "{who}")')  # RFC 2971
            imap.login(self.user, self.password)
            yield imap
        finally:
            try:
                imap.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def create(self) -> Mailbox:
        with self.client() as imap:
            imap.create(f'"{self.name}"')
        return self

    def append(self, mail: bytes, arrived: float | None = None, who: str = 'tests') -> None:
        """Deliver ``mail`` unread, as arriving at ``arrived`` (default: now)."""
        with self.client(who) as imap:
            status, answer = imap.append(f'"{self.name}"', None,
                                         imaplib.Time2Internaldate(time.time() if arrived is None else arrived), mail)
            assert status == 'OK', answer

    def flags(self) -> dict[int, str]:
        """Every message's UID and flags, read without changing them."""
        with self.client() as imap:
            imap.select(f'"{self.name}"', readonly=True)
            _, data = imap.uid('FETCH', '1:*', '(FLAGS)')
        found = (re.search(rb'UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+)', line) for line in data if line)
        return {int(m[1] or m[4]): (m[2] or m[3] or b'').decode() for m in found if m}


@dataclass
class MailServer:
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen | None = None
    created: int = field(default=0)

    @classmethod
    def start(cls, port: int, log_path: Path, host: str = '127.0.0.1', password: str = PASSWORD,
              timeout: float = 20) -> MailServer:
        """Start pymap and wait until it answers; a RuntimeError says why it did not."""
        program = shutil.which('pymap', path=os.path.dirname(sys.executable)) or shutil.which('pymap')
        if program is None:
            raise RuntimeError('pymap is not installed: pip install -r requirements-dev.txt')
        with open(log_path, 'w') as log:
            process = subprocess.Popen([program, '--debug', '--host', host, '--port', str(port), '--no-tls', 'dict',
                                        '--demo-data', '--demo-password', password], stdout=log,
                                       stderr=subprocess.STDOUT)
        server = cls(host, port, log_path, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f'pymap exited with {process.returncode}: {log_path.read_text()[-500:]}')
            try:
                with server.inbox().client():
                    return server
            except (OSError, imaplib.IMAP4.error):
                time.sleep(0.1)
        server.stop()
        raise RuntimeError(f'pymap did not answer on {host}:{port} within {timeout:g} s')

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def inbox(self) -> Mailbox:
        return Mailbox(self.host, self.port)

    def new_mailbox(self, prefix: str = 'Strava') -> Mailbox:
        """A mailbox of its own for one test: nothing another test delivered is in it."""
        self.created += 1
        return Mailbox(self.host, self.port, f'{prefix}-{os.getpid()}-{self.created}').create()

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def commands_of_the_login(self, since: int = 0) -> list[str]:
        """The commands sent since ``since`` (a ``log_mark()``) by connections that did not introduce themselves."""
        with open(self.log_path, 'rb') as log:
            log.seek(since)
            lines = log.read().decode('utf-8', 'replace').splitlines()
        by_connection: dict[str, list[str]] = defaultdict(list)
        for line in lines:
            found = COMMAND.search(line)
            if found:
                by_connection[found[1]].append(f'{found[2]}{found[3]}')
        return [command for commands in by_connection.values()
                if not any(c.startswith('ID ') for c in commands) for command in commands]

