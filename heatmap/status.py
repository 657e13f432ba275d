"""What the server reports about itself: ``/healthz`` and the facts the status page shows."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from .store import CookieState


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
