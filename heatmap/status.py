"""What the server reports about itself: ``/healthz`` and the facts and advice the status page shows."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from .browsers import Browser
from .keys import Usage
from .store import AccountState, CookieState

ADVICE = {
    'bad_credentials': 'Strava said the email or password is wrong: fix STRAVA_PASSWORD, then {retry}. Automatic '
                       'logins wait for you meanwhile.',
    'otp_required': 'Strava asked for the one-time code it emails: give the server read access to the account\'s '
                    'mailbox (STRAVA_IMAP_URL and STRAVA_IMAP_PASSWORD, README "Logging in with an emailed code") '
                    'so that it reads the code itself, then {retry}; or log in once in a browser and import its '
                    'cookies (`{cli} import-cookies export.json`).',
    'code_not_received': "Strava's code mail did not reach the mailbox in time: check that Strava's mail arrives in "
                         'the mailbox STRAVA_IMAP_URL names (a filter may move it to another folder: name that one '
                         'in the URL), or raise STRAVA_IMAP_WAIT. The server tries again after a pause.',
    'code_rejected': 'Strava refused the code read from the mailbox (another mail may have been taken for the code '
                     'mail). The server tries once more by itself; after a second refusal automatic logins wait '
                     'for you: check what Strava sends to that mailbox, then {retry}.',
    'mailbox_failed': 'The mailbox with Strava\'s code could not be opened. If the mail server refused the login, '
                      'fix STRAVA_IMAP_PASSWORD (most providers want an app password) or the user or mailbox in '
                      'STRAVA_IMAP_URL, then {retry}; if it could not be reached, the server tries again after a '
                      'pause.',
    'captcha': 'Strava asked to solve a captcha: import the cookies from a browser (`{cli} import-cookies '
               'export.json`) and try a login again in a few days.',
    'blocked': "Strava's bot protection refused the login browser: import the cookies from a browser "
               '(`{cli} import-cookies export.json`), or {retry} in a few hours.',
    'session_expired': 'The Strava session has expired: log in to Strava again in a browser paired with this server '
                       '(its extension sends the new session), import the cookies from a browser (`{cli} '
                       'import-cookies export.json`), or set STRAVA_EMAIL and STRAVA_PASSWORD so that the server logs '
                       'in itself.',
    'page_changed': "Strava's pages changed in a way this server does not know: import the cookies from a browser "
                    'meanwhile (`{cli} import-cookies export.json`), and report the message above.',
    'apify_token': "Set APIFY_TOKEN to a token from Apify's console (Settings, Integrations), then {retry}.",
    'apify_actor': 'Set APIFY_ACTOR to your copy of the login actor, e.g. you~strava-heatmap-cookies, then {retry}.',
    'browser_missing': 'Install Chromium (apt-get install chromium) or set CHROMIUM_PATH, or use the Apify actor.',
    'redirect_refused': 'Set HEATMAP_MODE=proxy (the default) and restart: today\'s Strava only accepts cookies.',
}
RETRYING = 'The server tries again by itself after a pause; nothing is needed from you.'


def advice(reason: str | None, cli: str = 'python redirector.py', admin: bool = False) -> str:
    """What the user should do about a failure, in words they can follow as written.

    >>> advice('timeout')
    'The server tries again by itself after a pause; nothing is needed from you.'
    >>> '`.venv/bin/python redirector.py login`' in advice('bad_credentials', '.venv/bin/python redirector.py')
    True
    """
    retry = 'press "Refresh now" below' if admin else f'run `{cli} login`'  # a restart does not: it keeps waiting
    return ADVICE.get(reason or '', RETRYING).format(cli=cli, retry=retry)


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 in UTC.

    >>> iso(1700000000)
    '2023-11-14T22:13:20Z'
    """
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def account_report(account: AccountState) -> dict:
    """One login account as /healthz and the status page show it: masked email, state, last error.

    >>> account_report(AccountState('id', 'r***@example.com', 1, None, True, 'bad_credentials: …', 'bad_credentials'))
    {'email': 'r***@example.com', 'state': 'waiting for you (bad_credentials)', 'last_error': 'bad_credentials: …'}
    """
    if account.waiting_for_user:
        state = f'waiting for you ({account.last_error_reason})'
    elif account.next_login_at and account.next_login_at > time.time():
        state = f'next try after {iso(account.next_login_at)}'
    else:
        state = 'ready'
    return {'email': account.email, 'state': state, 'last_error': account.last_error}


def browser_report(browser: Browser) -> dict:
    """One paired browser as /healthz and the status page show it: its name, its last push and what came of it.

    >>> browser_report(Browser('laptop', 1600000000, 1700000000, 'unchanged: the session is stored'))
    {'name': 'laptop', 'last_push_at': '2023-11-14T22:13:20Z', 'last_result': 'unchanged: the session is stored'}
    """
    return {'name': browser.name, 'last_push_at': iso(browser.last_push_at), 'last_result': browser.last_result}


def member_report(member: Usage) -> dict:
    """One member as the admin's list shows them: their name and what they used, never their key.

    >>> member_report(Usage('anna', 1600000000, 120, 31, 1700000000))['last_seen']
    '2023-11-14T22:13:20Z'
    """
    return {'name': member.name, 'created_at': iso(member.created_at), 'served': member.served,
            'fetched': member.fetched, 'last_seen': iso(member.last_seen)}


def health(state: CookieState, refreshing: bool, problem: str | None = None, reason: str | None = None,
           now: float | None = None, accounts: list[AccountState] = (), warning: str | None = None,
           browsers: list[Browser] = ()) -> dict:
    """The ``/healthz`` document: ``ok`` only while detailed tiles can be served; else ``reason`` says why.

    ``problem`` is what breaks tiles even with valid-looking cookies (an unreadable store, redirect
    mode refused); ``reason`` is why there are no usable cookies; ``warning`` what is wrong while tiles
    are still served (the tile cache cannot be written).

    >>> health(CookieState(), refreshing=False, reason='no Strava cookies yet')['reason']
    'no Strava cookies yet'
    """
    valid = state.tiles_valid(time.time() if now is None else now)
    ok = valid and problem is None
    return {
        'ok': ok,
        'reason': None if ok else problem or reason or 'no valid Strava cookies',
        'warning': warning,
        'cookies': {'valid': valid, 'expires_at': iso(state.expires_at), 'source': state.source,
                    'refreshed_at': iso(state.refreshed_at), 'last_error': state.last_error},
        'refreshing': refreshing,
        'accounts': [account_report(account) for account in accounts],
        'browsers': [browser_report(browser) for browser in browsers],
    }
