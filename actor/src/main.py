"""Log in to Strava and hand back the cookies that unlock the global heatmap's detailed tiles.

Output: one dataset item per cookie (Playwright's cookie dict) and the key-value record
``OUTPUT`` = ``{"cookies": [...], "expiresAt": <epoch seconds>}``. A failed login ends the run
with a status message that starts with a reason code (``bad_credentials``, ``otp_required``,
``captcha``, ``blocked``, ``page_changed``, ``timeout``, ``code_not_received``, ...).

An account that logs in with the code Strava emails needs its mailbox: ``imapUrl`` and
``imapPassword``; the mailbox is only ever read.
"""

from __future__ import annotations

import time

from apify import Actor

from .login import LoginFailure, fetch_cookies
from .mailbox import DEFAULT_WAIT_SECS, CodeMailbox, parse_imap_url
from .strava_cookies import cookies_expire_at

DEFAULT_LOGIN_URL = 'https://www.strava.com/login'
DEFAULT_HEATMAP_URL = 'https://www.strava.com/maps/global-heatmap'
DEFAULT_TIMEOUT_SECS = 120


def mailbox_of(actor_input: dict) -> CodeMailbox | None:
    """The mailbox the input names, if any; a ValueError says what is wrong with the input.

    >>> mailbox_of({'imapUrl': 'imaps://me@imap.example.org', 'imapPassword': 'p', 'imapWaitSecs': 30})
    CodeMailbox(INBOX of me on imap.example.org)
    >>> mailbox_of({'imapUrl': 'imaps://me@imap.example.org'})
    Traceback (most recent call last):
    ValueError: "imapUrl" needs "imapPassword", the mailbox's password
    """
    url, password = (actor_input.get('imapUrl') or '').strip(), actor_input.get('imapPassword') or ''
    if not url and not password:
        return None
    if not url or not password:
        raise ValueError('"imapUrl" needs "imapPassword", the mailbox\'s password' if url else
                         '"imapPassword" needs "imapUrl", the mailbox it opens')
    return CodeMailbox(parse_imap_url(url, 'imapUrl', 'imapPassword'), password,
                       float(actor_input.get('imapWaitSecs') or DEFAULT_WAIT_SECS))


async def main() -> None:
    async with Actor:
        actor_input = await Actor.get_input() or {}
        email = (actor_input.get('email') or '').strip()
        password = actor_input.get('password') or ''
        try:
            mailbox = mailbox_of(actor_input)
        except ValueError as error:
            await Actor.fail(status_message=f'bad_input: {error}')
            return
        if not email or not (password or mailbox):
            await Actor.fail(status_message='bad_input: the input needs "email", and "password" or the mailbox '
                                            '("imapUrl", "imapPassword") or both')
            return
        started = time.monotonic()
        try:
            cookies = await fetch_cookies(
                email, password,
                login_url=actor_input.get('loginUrl') or DEFAULT_LOGIN_URL,
                heatmap_url=actor_input.get('heatmapUrl') or DEFAULT_HEATMAP_URL,
                timeout_secs=float(actor_input.get('timeoutSecs') or DEFAULT_TIMEOUT_SECS),
                report=Actor.set_status_message, mailbox=mailbox,
            )
        except LoginFailure as failure:
            await Actor.fail(status_message=str(failure))
            return
        except Exception as error:  # noqa: BLE001 - reported without a traceback, which could quote the form
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            for secret in (password, actor_input.get('imapPassword')):
                message = message.replace(secret, '***') if secret else message
            await Actor.fail(status_message=f'page_changed: unexpected {type(error).__name__}: {message}')
            return
        expires_at = cookies_expire_at(cookies)
        await Actor.push_data(cookies)
        await Actor.set_value('OUTPUT', {'cookies': cookies, 'expiresAt': expires_at})
        valid_until = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expires_at)) if expires_at else 'unknown'
        await Actor.set_status_message(f'Logged in: {len(cookies)} cookies, valid until {valid_until} '
                                       f'({time.monotonic() - started:.1f} s)', is_terminal=True)
