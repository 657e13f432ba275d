"""Read the one-time code Strava emails for a login from the account's mailbox, without changing the mailbox.

The mailbox is opened read-only (IMAP ``EXAMINE``) and messages are fetched with ``BODY.PEEK``, so
nothing is ever marked seen, flagged, moved or deleted. Just before the login asks for a code, the
mailbox's ``UIDNEXT`` and the time are noted; a code mail is then a message that got a higher UID,
arrived no earlier than the ask (less a little clock skew), comes from an address at strava.com (or a
subdomain) and holds exactly one distinct 6-digit number. The mail's wording is not relied on: Strava
does not document it, and it follows the account's language. Only standard-library modules are used,
so the actor runs unchanged on the Apify platform.

Nothing here logs; the errors name the mailbox, the host and the user, never the password, and the
code is only ever returned to the caller, which types it.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import imaplib
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

DEFAULT_WAIT_SECS = 120
CLOCK_SKEW_SECS = 120  # a mail may carry an arrival time this much before the ask: the mail server's clock may lag
IMAP_TIMEOUT_SECS = 20
SENDER_DOMAIN = 'strava.com'
MAX_MAIL_BYTES = 1 << 20  # a code mail is a few dozen kB: no more of a message is read
MAX_NEW_MAILS = 20  # the newest new messages looked at in one poll
URL_FORM = 'imaps://USER@HOST[:PORT][/MAILBOX]'
# Every mailbox_failed message that trying again later may cure says this; a refusal never does.
UNREACHABLE = 'cannot be reached'
CODE = re.compile(r'(?<!\d)\d{6}(?!\d)')
LINK = re.compile(r'(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+', re.IGNORECASE)
BLOCK_TAGS = {'br', 'p', 'div', 'td', 'th', 'tr', 'li', 'table', 'h1', 'h2', 'h3', 'h4', 'title', 'hr'}
SKIPPED_TAGS = {'style', 'script', 'head'}
LOCAL_HOSTS = {'localhost'}


class MailboxError(Exception):
    """The mailbox cannot be used; ``str()`` names the host and the user, never the password.

    A network error, which trying later may cure, says ``UNREACHABLE``; a refusal by the mail server does not.
    """


@dataclass(frozen=True)
class MailboxAddress:
    host: str
    port: int
    user: str
    mailbox: str = 'INBOX'
    tls: bool = True

    def __str__(self) -> str:
        """The mailbox as messages name it.

        >>> str(MailboxAddress('imap.gmail.com', 993, 'me@gmail.com'))
        'INBOX of me@gmail.com on imap.gmail.com'
        """
        port = '' if self.port == (993 if self.tls else 143) else f':{self.port}'
        return f'{self.mailbox} of {self.user} on {self.host}{port}'


def parse_imap_url(url: str, setting: str = 'STRAVA_IMAP_URL',
                   password_setting: str = 'STRAVA_IMAP_PASSWORD') -> MailboxAddress:
    """Where the mailbox is, from ``imaps://USER@HOST[:PORT][/MAILBOX]`` (``imap://`` only for this machine).

    The user may be URL-encoded (``%40`` for ``@``); the mailbox is INBOX unless the path names another.

    >>> parse_imap_url('imaps://me%40gmail.com@imap.gmail.com')
    MailboxAddress(host='imap.gmail.com', port=993, user='me@gmail.com', mailbox='INBOX', tls=True)
    >>> parse_imap_url('imaps://me@example.org@mail.example.org:1993/Strava%20codes')
    MailboxAddress(host='mail.example.org', port=1993, user='me@example.org', mailbox='Strava codes', tls=True)
    >>> parse_imap_url('imap://rider@127.0.0.1:1143/').port
    1143
    >>> parse_imap_url('https://imap.gmail.com', 'imapUrl')
    Traceback (most recent call last):
    ValueError: imapUrl must look like imaps://USER@HOST[:PORT][/MAILBOX], not 'https://imap.gmail.com'
    >>> parse_imap_url('imaps://me:hunter2@imap.gmail.com', 'imapUrl', 'imapPassword')
    Traceback (most recent call last):
    ValueError: imapUrl must not hold the password: give it in imapPassword instead
    >>> parse_imap_url('imap://me@imap.gmail.com')
    Traceback (most recent call last):
    ValueError: STRAVA_IMAP_URL: imap:// sends the password unencrypted, only to a server on this machine: use imaps://
    """
    parts = urlsplit(url.strip())
    if parts.password is not None:
        raise ValueError(f'{setting} must not hold the password: give it in {password_setting} instead')
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ('imap', 'imaps') or not parts.hostname or not parts.username or port == -1
            or parts.query or parts.fragment or any(ch.isspace() for ch in url.strip())):
        raise ValueError(f'{setting} must look like {URL_FORM}, not {url!r}')
    tls = parts.scheme == 'imaps'
    if not tls and not _on_this_machine(parts.hostname):
        raise ValueError(f'{setting}: imap:// sends the password unencrypted, only to a server on this machine: '
                         'use imaps://')
    return MailboxAddress(parts.hostname, port or (993 if tls else 143), unquote(parts.username),
                          unquote(parts.path.strip('/')) or 'INBOX', tls)


def _on_this_machine(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in LOCAL_HOSTS


def code_in_text(text: str) -> str | None:
    """The one distinct 6-digit number in a mail's text, else None (none, or several: not a code mail).

    Numbers inside longer runs of digits and inside links do not count.

    >>> code_in_text('Your Strava log in code is 042917. It expires in 10 minutes.')
    '042917'
    >>> code_in_text('Code: 042917 (again: 042917). Order 1234567, ZIP 94103.')
    '042917'
    >>> code_in_text('Track: https://click.strava.com/q?u=123456 Code 654321')
    '654321'
    >>> code_in_text('123456 or 654321?') is None, code_in_text('nothing here') is None
    (True, True)
    """
    found = set(CODE.findall(LINK.sub(' ', text)))
    return found.pop() if len(found) == 1 else None


class _TextOfHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag in BLOCK_TAGS:
            self.chunks.append('\n')

    def handle_endtag(self, tag):
        if tag in SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in BLOCK_TAGS:
            self.chunks.append('\n')

    def handle_data(self, data):
        if not self.skipping:
            self.chunks.append(data)


def strip_html(html: str) -> str:
    """The text a reader sees in an HTML mail: no tags, attributes, styles or scripts; entities decoded.

    >>> strip_html('<style>p {color: #123456}</style><p>Code:&nbsp;<b>04</b>2917</p><td width="600">x</td>')
    '\\nCode:\\xa0042917\\n\\nx\\n'
    """
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    return ''.join(parser.chunks)


def text_of(raw: bytes) -> str:
    """A mail's subject and the text of its text parts (HTML stripped), decoded whatever their encoding.

    >>> text_of(b'Subject: =?utf-8?q?Dein_Code?=\\r\\nContent-Type: text/html; charset=utf-8\\r\\n'
    ...         b'Content-Transfer-Encoding: base64\\r\\n\\r\\nPGI+MDQyOTE3PC9iPg==\\r\\n')
    'Dein Code\\n042917'
    """
    message = email.message_from_bytes(raw, policy=email.policy.default)
    texts = [str(message.get('subject', ''))]
    for part in message.walk():
        if part.get_content_maintype() != 'text' or part.is_attachment():
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError):  # an unknown charset or a broken encoding: read what can be read
            content = (part.get_payload(decode=True) or b'').decode('utf-8', 'replace')
        texts.append(strip_html(content) if part.get_content_subtype() == 'html' else content)
    return '\n'.join(texts)


def sent_by_strava(from_header: str) -> bool:
    """True when the From address is at strava.com or one of its subdomains.

    >>> sent_by_strava('Strava <no-reply@strava.com>'), sent_by_strava('"Strava" <noreply@mail.Strava.com>')
    (True, True)
    >>> sent_by_strava('strava.com <strava.com@phish.example>'), sent_by_strava('x@notstrava.com')
    (False, False)
    """
    _, address = email.utils.parseaddr(from_header)
    domain = address.rpartition('@')[2].lower().rstrip('.')
    return domain == SENDER_DOMAIN or domain.endswith('.' + SENDER_DOMAIN)


def arrived_in_time(arrived: float, asked_at: float, skew: float = CLOCK_SKEW_SECS) -> bool:
    """Whether a message that arrived at ``arrived`` (the mail server's clock) can answer an ask at ``asked_at``.

    An old code mail moved back into the mailbox gets a new UID but keeps its arrival time.

    >>> arrived_in_time(1000.0, 1030.0), arrived_in_time(1000.0, 1000.0 + CLOCK_SKEW_SECS + 1)
    (True, False)
    """
    return arrived >= asked_at - skew


class CodeMailbox:
    """One mailbox, opened read-only just before the code is asked for, then polled for the code mail."""

    def __init__(self, address: MailboxAddress, password: str, wait_secs: float = DEFAULT_WAIT_SECS,
                 timeout: float = IMAP_TIMEOUT_SECS):
        self.address, self._password, self.wait_secs, self.timeout = address, password, wait_secs, timeout
        self._imap: imaplib.IMAP4 | None = None
        self.message_count = 0
        self.uid_next = 0
        self.asked_at = 0.0
        self._looked_at: set[int] = set()

    def __repr__(self) -> str:  # never the password, even in a traceback
        return f'CodeMailbox({self.address})'

    def __enter__(self) -> CodeMailbox:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Log in and open the mailbox read-only; note its UIDNEXT and the time: mail older than this is ignored."""
        address = self.address
        try:
            if address.tls:
                self._imap = imaplib.IMAP4_SSL(address.host, address.port, ssl_context=ssl.create_default_context(),
                                               timeout=self.timeout)
            else:
                self._imap = imaplib.IMAP4(address.host, address.port, timeout=self.timeout)
        except (OSError, imaplib.IMAP4.error) as error:
            raise self._unreachable(error) from None
        try:
            self._imap.login(address.user, self._password)
        except imaplib.IMAP4.abort as error:
            raise self._unreachable(error) from None
        except imaplib.IMAP4.error as error:
            raise MailboxError(f'the mail server {address.host} refused the login of {address.user}: '
                               f'{self._answer(error)}; check the mailbox password (most providers want an app '
                               'password)') from None
        except UnicodeEncodeError:
            raise MailboxError(f'the mailbox password of {address.user} on {address.host} has characters IMAP\'s '
                               'LOGIN cannot send: use an app password') from None
        except OSError as error:
            raise self._unreachable(error) from None
        quoted = '"' + address.mailbox.replace('\\', '\\\\').replace('"', '\\"') + '"'
        try:
            status, data = self._imap.select(quoted, readonly=True)
        except (OSError, imaplib.IMAP4.error) as error:
            raise self._unreachable(error) from None
        if status != 'OK':
            raise MailboxError(f'the mail server {address.host} has no mailbox {address.mailbox!r} for '
                               f'{address.user}: name one that exists in the URL\'s path (INBOX by default)')
        self.message_count = int((data or [b'0'])[0] or 0)
        uid_next = self._imap.response('UIDNEXT')[1]
        self.uid_next = int(uid_next[0]) if uid_next and uid_next[0] else 0
        self.asked_at = time.time()

    def poll(self) -> str | None:
        """The code of the newest code mail that arrived since ``open()``, or None while there is none."""
        try:
            self._imap.noop()
            status, data = self._imap.uid('SEARCH', None, f'UID {max(self.uid_next, 1)}:*')
            found = (int(uid) for uid in (data[0] or b'').split()) if status == 'OK' and data else ()
            new = sorted((uid for uid in found if uid >= self.uid_next and uid not in self._looked_at),
                         reverse=True)[:MAX_NEW_MAILS]
            for uid in new:
                self._looked_at.add(uid)
                code = self._code_in(uid)
                if code:
                    return code
        except (OSError, imaplib.IMAP4.error) as error:
            raise self._unreachable(error) from None
        return None

    def close(self) -> None:
        if self._imap is None:
            return
        try:
            self._imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # the connection is going away either way
        self._imap = None

    def _code_in(self, uid: int) -> str | None:
        fetched = self._fetch(uid, '(INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM)])')
        if fetched is None:
            return None
        envelope, header = fetched
        arrived = imaplib.Internaldate2tuple(envelope)
        sender = email.message_from_bytes(header, policy=email.policy.default).get('from', '')
        if (arrived is None or not arrived_in_time(time.mktime(arrived), self.asked_at)
                or not sent_by_strava(str(sender))):
            return None
        fetched = self._fetch(uid, f'(BODY.PEEK[]<0.{MAX_MAIL_BYTES}>)')
        return code_in_text(text_of(fetched[1])) if fetched else None

    def _fetch(self, uid: int, items: str) -> tuple[bytes, bytes] | None:
        """The (envelope, literal) of one message, or None when it is gone.

        The answer can also hold the server's unsolicited news of other messages (``* 8 FETCH (FLAGS ())``):
        only a part that carries a literal is the one asked for.
        """
        status, data = self._imap.uid('FETCH', str(uid), items)
        return next((part for part in data or () if isinstance(part, tuple)), None) if status == 'OK' else None

    def _answer(self, error: Exception) -> str:
        """The mail server's own words, on one line, without the password should it echo it."""
        answer = error.args[0] if isinstance(error, imaplib.IMAP4.error) and error.args else str(error)
        answer = answer.decode('utf-8', 'replace') if isinstance(answer, bytes) else str(answer)
        if self._password:
            answer = answer.replace(self._password, '***')
        return ' '.join(answer.split())[:200] or type(error).__name__

    def _unreachable(self, error: Exception) -> MailboxError:
        address = self.address
        return MailboxError(f'the mail server {address.host}:{address.port} {UNREACHABLE} for {address.user} '
                            f'({type(error).__name__}: {self._answer(error)}); the login tries again later')
