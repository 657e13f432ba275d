"""What the server reports about itself: ``/healthz`` and the facts the status page shows."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from .store import CookieState

ADVICE = {
    'bad_credentials': 'Strava said the email or password is wrong: fix STRAVA_PASSWORD, then use "Refresh now" '
                       'or restart. Automatic logins wait for you meanwhile.',
    'otp_required': 'Strava asked for a one-time code: log in once in a browser and import the session cookie '
                    '(README, "Getting cookies").',
    'captcha': 'Strava asked to solve a captcha: import the cookies from a browser (README, "Getting cookies") '
               'and try a login again in a few days.',
    'session_expired': 'The Strava session has expired: import the cookies from a browser, or set STRAVA_EMAIL '
                       'and STRAVA_PASSWORD so that the server logs in itself.',
    'page_changed': "Strava's pages changed in a way the login does not know: import the cookies from a browser "
                    'meanwhile, and report the message above.',
    'apify_token': 'Set APIFY_TOKEN to a token from Apify\'s console (Settings, Integrations).',
    'apify_actor': 'Set APIFY_ACTOR to your copy of the login actor, e.g. you~strava-heatmap-cookies.',
    'browser_missing': 'Install Chromium (apt-get install chromium) or set CHROMIUM_PATH, or use the Apify actor.',
}
RETRYING = 'The server tries again by itself after a pause.'


def advice(reason: str | None) -> str:
    """What the user should do about a failure, in plain words.

    >>> advice('timeout')
    'The server tries again by itself after a pause.'
    """
    return ADVICE.get(reason or '', RETRYING)


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 in UTC.

    >>> iso(1700000000)
    '2023-11-14T22:13:20Z'
    """
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def health(state: CookieState, refreshing: bool, now: float | None = None) -> dict:
    """The ``/healthz`` document.

    >>> health(CookieState(), refreshing=False)['cookies']['valid']
    False
    """
    valid = state.tiles_valid(time.time() if now is None else now)
    return {
        'ok': valid,
        'cookies': {'valid': valid, 'expires_at': iso(state.expires_at), 'source': state.source,
                    'refreshed_at': iso(state.refreshed_at), 'last_error': state.last_error},
        'refreshing': refreshing,
    }
