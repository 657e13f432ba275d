"""The background worker that gets new cookies before the old ones expire, one refresh at a time.

Single flight comes from there being one worker thread: tile requests only wake it and wait.
A failed refresh waits (``backoff_min`` doubling up to ``backoff_max``) before the next try, and
a failure only the user can fix (wrong password, one-time code, captcha) waits for the user.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .sources import NEEDS_USER, RefreshError
from .store import CookieState, CookieStore

log = logging.getLogger(__name__)
REJECTION_COOLDOWN = 60


def backoff_delay(failures: int, minimum: float, maximum: float) -> float:
    """Seconds to wait after the n-th failure in a row: doubling from ``minimum``, capped at ``maximum``.

    >>> [backoff_delay(n, 300, 3600) for n in (1, 2, 3, 4, 5)]
    [300, 600, 1200, 2400, 3600]
    """
    return min(minimum * 2 ** (max(failures, 1) - 1), maximum)


def when(epoch: float | None) -> str:
    """An epoch as a short UTC time for log lines.

    >>> when(1700000000)
    '2023-11-14 22:13 UTC'
    """
    return time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(epoch)) if epoch else 'unknown'


class Refresher:
    def __init__(self, store: CookieStore, sources: list, verify: Callable[[list[dict]], None] | None,
                 refresh_before: float = 3600, backoff_min: float = 300, backoff_max: float = 6 * 3600,
                 poll: float = 5):
        self.store, self.sources, self.verify = store, sources, verify
        self.refresh_before, self.backoff_min, self.backoff_max, self.poll = (
            refresh_before, backoff_min, backoff_max, poll)
        self.refreshing = False
        self._condition = threading.Condition()
        self._forced = False
        self._rejected = False
        self._rejected_at = 0.0
        self._generation = 0

    # -- asked by others ---------------------------------------------------------------------
    def start(self) -> Refresher:
        threading.Thread(target=self._run, daemon=True, name='cookie-refresher').start()
        return self

    def request(self, force: bool = False) -> None:
        """Wake the worker; ``force`` also overrides the backoff and a wait for the user."""
        with self._condition:
            self._forced = self._forced or force
            self._condition.notify_all()

    def cookies_rejected(self, status: int) -> None:
        """Upstream refused cookies that should be valid: refresh, at most once a minute."""
        with self._condition:
            now = time.monotonic()
            if now - self._rejected_at < REJECTION_COOLDOWN:
                return
            self._rejected_at, self._rejected = now, True
            log.warning('Strava refused the stored cookies (%d): refreshing', status)
            self._condition.notify_all()

    def wait_for_cookies(self, timeout: float) -> None:
        """Wake the worker if a refresh is due and wait up to ``timeout`` for it to finish."""
        with self._condition:
            if not (self.refreshing or self.due()):
                return
            generation = self._generation
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._generation > generation or self.store.state.tiles_valid(),
                                     timeout)

    def waiting_for_user(self, state: CookieState | None = None) -> bool:
        state = state or self.store.state
        return state.failures > 0 and state.last_error_reason in NEEDS_USER

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        state = self.store.state
        if not self._applicable(state):
            return False
        if self._forced:
            return True
        if self.waiting_for_user(state) or (state.next_login_at and now < state.next_login_at):
            return False
        return self._rejected or state.expires_at is None or state.expires_at - now <= self.refresh_before

    def unavailable_reason(self) -> str:
        """One line for a 503: why there are no usable cookies and what happens next."""
        state = self.store.state
        if self.refreshing:
            return 'getting new Strava cookies, retry in 60 s'
        if state.last_error:
            return f'no valid Strava cookies: {state.last_error} (see /)'
        if not state.cookies:
            return 'no Strava cookies yet: import them or configure a login (see /)'
        return 'the Strava cookies have expired and nothing is configured to renew them: import new ones (see /)'

    # -- the worker --------------------------------------------------------------------------
    def _applicable(self, state: CookieState) -> list:
        return [s for s in self.sources if s.name != 'session' or state.session]

    def refresh_now(self) -> CookieState | None:
        """Try each source in order; store the first cookie set that works, else record the failure."""
        state = self.store.state
        errors: list[RefreshError] = []
        for source in self._applicable(state):
            log.info('refresh started: %s', source.name)
            try:
                cookies = source.fetch(list(state.cookies))
                if self.verify:
                    self.verify(cookies)
            except RefreshError as error:
                log.warning('refresh failed: %s: %s', source.name, error)
                errors.append(error)
                continue
            new = self.store.save_cookies(cookies, source.name)
            log.info('refresh succeeded: %s; tile cookies valid until %s', source.name, when(new.expires_at))
            return new
        if errors:
            last = errors[-1]
            delay = 0 if last.needs_user else backoff_delay(state.failures + 1, self.backoff_min, self.backoff_max)
            self.store.record_failure(str(last), last.reason, time.time() + delay if delay else None)
            log.warning('no new cookies: %s', 'waiting for the user' if last.needs_user
                        else f'next try at {when(time.time() + delay)}')
        return None

    def _run(self) -> None:
        while True:
            with self._condition:
                if not self.due():
                    self._condition.wait(self._sleep_time())
            self.store.reload_if_changed()
            if not self.due():
                continue
            with self._condition:
                self.refreshing = True
            try:
                self.refresh_now()
            except Exception as error:  # noqa: BLE001 - the worker must survive anything a source does
                log.error('refresh crashed: %s (a bug: please report it)', type(error).__name__)
            finally:
                with self._condition:
                    self.refreshing = self._forced = self._rejected = False
                    self._generation += 1
                    self._condition.notify_all()

    def _sleep_time(self) -> float:
        state = self.store.state
        if state.expires_at is None:
            return self.poll
        return max(0.05, min(self.poll, state.expires_at - self.refresh_before - time.time()))
