"""The background worker that gets new cookies before the old ones expire, one refresh at a time.

Single flight comes from there being one worker thread: tile requests only wake it and wait.
A failed refresh waits (``backoff_min`` doubling up to ``backoff_max``) before the next try, and
a failure only the user can fix (wrong password, one-time code, captcha) waits for the user.
The worker survives anything a source or the disk does: it records a one-line reason and tries
again later, so that fixing the cause is enough, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from .cookies import when
from .sources import QUICK_SOURCES, RefreshError, source_label
from .store import AccountState, CookieState, CookieStore, StoreError

log = logging.getLogger(__name__)
REJECTION_COOLDOWN = 60  # at most one refresh a minute because Strava refused cookies that looked valid


def waits_for_user(error: RefreshError, last_reason: str | None) -> bool:
    """Whether a failed login with an account waits for the user; ``last_reason`` is how its previous login ended.

    A refused code may come from a mail taken for the code mail: the next login tries once more, and a
    second refusal in a row waits for the user.

    >>> refused = RefreshError('code_rejected', 'Strava refused the code read from the mailbox')
    >>> waits_for_user(refused, None), waits_for_user(refused, 'code_rejected')
    (False, True)
    """
    return error.needs_user or (error.reason == 'code_rejected' and last_reason == 'code_rejected')


def backoff_delay(failures: int, minimum: float, maximum: float) -> float:
    """Seconds to wait after the n-th failure in a row: doubling from ``minimum``, capped at ``maximum``.

    >>> [backoff_delay(n, 300, 3600) for n in (1, 2, 3, 4, 5)]
    [300, 600, 1200, 2400, 3600]
    """
    return min(minimum * 2 ** (max(failures, 1) - 1), maximum)


class Refresher:
    def __init__(self, store: CookieStore, sources: list, verify: Callable[[list[dict]], None] | None,
                 refresh_before: float = 3600, backoff_min: float = 300, backoff_max: float = 6 * 3600,
                 poll: float = 5):
        self.store, self.sources, self.verify = store, sources, verify
        self.refresh_before, self.backoff_min, self.backoff_max, self.poll = (
            refresh_before, backoff_min, backoff_max, poll)
        self.refreshing = False
        self.current_source: str | None = None
        self.crash: str | None = None  # the last unexpected error of the worker, until a refresh gets through
        self._condition = threading.Condition()
        self._forced = False
        self._rejection_refresh_at = float('-inf')
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._store_retry_at = 0.0  # after a refresh that could not be saved: not before then

    # -- asked by others ---------------------------------------------------------------------
    def start(self) -> Refresher:
        self._thread = threading.Thread(target=self._run, daemon=True, name='cookie-refresher')
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request(self, force: bool = False) -> None:
        """Wake the worker; ``force`` also overrides the backoff and a wait for the user.

        A forced request that arrives during a refresh runs after it: it may carry a fix the running one missed.
        """
        with self._condition:
            self._forced = self._forced or force
            self._condition.notify_all()

    def cookies_rejected(self, used: CookieState, status: int) -> None:
        """Strava refused the cookies of ``used`` although they should be valid: mark them and refresh."""
        try:
            marked = self.store.mark_rejected(used)
        except StoreError:
            return  # the store's problem is already shown; nothing can be recorded meanwhile
        if marked:
            log.warning('Strava refused the stored cookies (%d) before their expiry: getting new ones', status)
            with self._condition:
                self._condition.notify_all()

    def wait_for_cookies(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a quick refresh (from the session cookie) that is running or due.

        A login takes a minute or more: nobody waits for one. True when valid cookies are there now.
        """
        with self._condition:
            if self.store.state.tiles_valid():
                return True
            if not self._quick_refresh_coming():
                return False
            generation = self._generation
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._generation > generation or self.store.state.tiles_valid()
                                     or not self._quick_refresh_coming(), timeout)
            return self.store.state.tiles_valid()

    def _quick_refresh_coming(self) -> bool:
        if self.refreshing:
            return self.current_source in QUICK_SOURCES
        if not self.due():
            return False
        applicable = self._applicable(self.store.state)
        return bool(applicable) and applicable[0].name in QUICK_SOURCES

    def accounts(self) -> list[AccountState]:
        """The login accounts in the order they are tried, with what the store knows of each."""
        state = self.store.state
        return [account for account in (self._account_of(source, state) for source in self.sources) if account]

    def waiting_for_user(self, state: CookieState | None = None) -> bool:
        return (state or self.store.state).waiting_for_user

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        state = self.store.state
        if self.store.problem or now < self._store_retry_at or not self._applicable(state):
            return False
        if self._forced:
            return True
        if self.waiting_for_user(state) or (state.next_login_at and now < state.next_login_at):
            return False
        if state.rejected_at is not None:
            return time.monotonic() - self._rejection_refresh_at >= REJECTION_COOLDOWN
        return state.expires_at is None or state.expires_at - now <= self.refresh_before

    def unavailable_reason(self) -> str:
        """One line for a 503: why there are no usable cookies and what happens next."""
        state = self.store.state
        if self.store.problem:
            return self.store.problem
        if self.refreshing:
            if self.current_source in QUICK_SOURCES:
                return 'getting new Strava cookies, retry in a few seconds'
            return 'logging in to Strava, retry in 60 s'
        if state.rejected_at is not None and not state.last_error:
            return 'Strava refused the cookies before their expiry; getting new ones'
        if state.last_error:
            return f'no valid Strava cookies: {state.last_error}'
        if not state.cookies:
            return 'no Strava cookies yet: import them or configure a login'
        if self._applicable(state):
            return 'the Strava cookies have expired; getting new ones'
        return 'the Strava cookies have expired and nothing is configured to renew them: import new ones'

    # -- the worker --------------------------------------------------------------------------
    def _applicable(self, state: CookieState) -> list:
        return [s for s in self.sources if s.name != 'session' or state.session]

    def _using(self, source_name: str | None) -> None:
        with self._condition:
            self.current_source = source_name
            self._condition.notify_all()

    def refresh_now(self, sources: list | None = None, forced: bool = False) -> tuple[CookieState | None,
                                                                                     RefreshError | None]:
        """Try each source in order, store the first cookie set that works, else record the failure.

        A dead session moves on to the logins; when Strava is busy (429, 5xx), a login would only add
        to it. Each login account is tried while it may (not waiting for the user, not in its backoff,
        unless ``forced``), one after the other. Returns the new state (None if there is none) and the
        error that ended the try.
        """
        start = self.store.state
        error: RefreshError | None = None
        logging_in = False  # the session is dead or absent: only a login can help
        for source in self._applicable(start) if sources is None else sources:
            account = self._account_of(source, start)
            if account is not None and not forced and not account.usable(time.time()):
                continue
            self._using(source.name)
            log.info('refresh started: %s', source_label(source))
            try:
                cookies = source.fetch(list(start.cookies))
                if self.verify:
                    self.verify(cookies)
            except RefreshError as failure:
                log.warning('refresh failed: %s: %s', source_label(source), failure)
                error = failure
                logging_in = account is not None or failure.reason == 'session_expired'
                if account is not None:
                    self._record_account_failure(account, failure, start)
                if logging_in:
                    continue  # the next account logs in
                break
            new = self.store.save_cookies(cookies, source.name, based_on=start, account=account)
            if new is None:
                log.info('refresh by %s dropped: cookies were imported meanwhile and are kept', source.name)
                return self.store.state, None
            log.info('refresh succeeded: %s; tile cookies valid until %s', source_label(source),
                     when(new.expires_at))
            return new, None
        if error is not None:
            self._record_failure(error, start, logging_in)
        return None, error

    def _account_of(self, source, state: CookieState) -> AccountState | None:
        account = getattr(source, 'account', None)
        if account is None:
            return None
        return replace(state.account(account.id), email=account.masked)

    def _record_account_failure(self, account: AccountState, error: RefreshError, start: CookieState) -> None:
        waiting = waits_for_user(error, account.last_error_reason)
        delay = 0 if waiting else backoff_delay(account.failures + 1, self.backoff_min, self.backoff_max)
        self.store.record_account_failure(account, str(error), error.reason, time.time() + delay if delay else None,
                                          waiting, based_on=start)

    def _record_failure(self, error: RefreshError, start: CookieState, logging_in: bool) -> None:
        """The state after a refresh that got nothing: when the next try may come, or that the user must act."""
        now = time.time()
        accounts = [self._account_of(s, self.store.state) for s in self.sources if getattr(s, 'account', None)]
        if accounts and logging_in:
            usable = [a for a in accounts if not a.waiting_for_user]
            waiting = not usable
            next_try = None if waiting else max(now, min(a.next_login_at or now for a in usable))
        else:
            waiting = error.needs_user
            next_try = None if waiting else now + backoff_delay(start.failures + 1, self.backoff_min,
                                                                self.backoff_max)
        if self.store.record_failure(str(error), error.reason, next_try, waiting, based_on=start) is None:
            log.info('refresh failure not recorded: cookies were imported meanwhile and are kept')

    def _run(self) -> None:
        while True:
            try:
                self._step()
            except Exception as error:  # noqa: BLE001 - the worker must survive anything
                self.crash = f'the cookie refresher failed unexpectedly ({type(error).__name__}); it tries again'
                log.error('%s in %g s (a bug: please report it with the DEBUG log)', self.crash, self.poll)
                log.debug('the refresher error', exc_info=True)  # a traceback names code, never a cookie value
                time.sleep(self.poll)
            else:
                self.crash = None

    def _step(self) -> None:
        with self._condition:
            if not self.due():
                self._condition.wait(self._sleep_time())
        self.store.reload_if_changed()
        with self._condition:
            if not self.due():
                return
            self.refreshing = True
            forced, self._forced = self._forced, False
            if self.store.state.rejected_at is not None:
                self._rejection_refresh_at = time.monotonic()
        try:
            new, error = self.refresh_now(forced=forced)
            if error is not None and new is None:
                state = self.store.state
                log.warning('no new cookies: %s', 'waiting for the user' if state.waiting_for_user
                            else f'next try at {when(state.next_login_at)}')
        except StoreError:  # the store logged it and shows it; retried once the file can be used again
            self._store_retry_at = time.time() + min(self.backoff_min, 60)
        finally:
            with self._condition:
                self.refreshing = False
                self.current_source = None
                self._generation += 1
                self._condition.notify_all()

    def _sleep_time(self) -> float:
        state = self.store.state
        if state.expires_at is None or self.store.problem:
            return self.poll
        return max(0.05, min(self.poll, state.expires_at - self.refresh_before - time.time()))
