"""The background worker that gets new cookies before the old ones expire, one refresh at a time.

Single flight comes from there being one worker thread: tile requests only wake it and wait, and
the cookies a browser pushes are judged by it too, between refreshes, never beside one.
A failed refresh waits (``backoff_min`` doubling up to ``backoff_max``) before the next try, and
a failure only the user can fix (wrong password, one-time code, captcha) waits for the user.
The worker survives anything a source or the disk does: it records a one-line reason and tries
again later, so that fixing the cause is enough, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .cookies import (
    REMEMBER_COOKIES,
    SESSION_NAMES,
    TILE_NAMES,
    cookies_expire_at,
    has_tile_cookies,
    logged_in,
    remember_expiry,
    session_value,
    when,
)
from .sources import QUICK_SOURCES, RefreshError, SessionRefresh, source_label
from .store import AccountState, CookieState, CookieStore, StoreError

log = logging.getLogger(__name__)
REJECTION_COOLDOWN = 60  # at most one refresh a minute because Strava refused cookies that looked valid
BROUGHT_BY_USER = ('import', 'browser')  # sources of cookies the user brought: each set's refusal is worth a refresh
MAX_PUSH_WAITERS = 4  # request threads that wait for the judgement of a push; more are answered "queued" at once
PUSH_MEMORY = 60  # seconds a push that kept nothing is answered again without asking Strava
FORCED_SPACING = 5  # seconds: forced refreshes (an admin's), however many are asked, start at most this often
FORCED_LOGIN_BACKOFF = 60  # seconds after a forced login of an account failed before another may be forced, doubling
SESSION_TRY_SPACING = (2, 16)  # seconds between two pushed sessions tried on Strava: doubling while Strava refuses
# them, at most 16 so that a real login's push is still judged within the push route's wait


@dataclass(frozen=True)
class PushOutcome:
    """What came of cookies a browser pushed: whether the server kept any, and one line saying what and why."""

    kept: bool
    result: str
    queued: bool = False


QUEUED = PushOutcome(False, 'queued: the server judges this push right after getting cookies or pausing between '
                            'sessions it tries on Strava', True)
SUPERSEDED = PushOutcome(False, 'not judged: a newer push from a browser came before its turn')
DROPPED = PushOutcome(False, 'not kept: cookies were imported meanwhile and are kept')
VISITOR = PushOutcome(False, "not kept: a visitor's session (no strava_remember_id: this browser is not logged in to "
                             'Strava); log in to Strava in this browser')


def longer_tile_cookies(pushed: list[dict], stored: CookieState) -> list[dict]:
    """The pushed tile cookies when they are complete and last longer than the stored ones that work, else none.

    >>> longer_tile_cookies([{'name': 'CloudFront-Policy', 'value': 'p'}], CookieState())
    []
    """
    tiles = [c for c in pushed if c['name'] in TILE_NAMES]
    until = cookies_expire_at(tiles)
    if has_tile_cookies(tiles) and until and until > (stored.expires_at if stored.tiles_valid() else 0):
        return tiles
    return []


def tries_session(pushed: list[dict], stored: CookieState) -> bool:
    """Whether judging pushed cookies asks Strava: they hold a logged-in session that is not the stored one.

    >>> remember = {'name': 'strava_remember_id', 'value': '42'}
    >>> tries_session([{'name': '_strava4_session', 'value': 'new'}, remember], CookieState())
    True
    >>> tries_session([{'name': '_strava4_session', 'value': 'new'}], CookieState())  # a visitor's
    False
    """
    session = session_value(pushed)
    return bool(session) and logged_in(pushed) and session != stored.session


@dataclass
class _Push:
    cookies: list[dict]
    key: tuple
    callbacks: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: PushOutcome | None = None


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
                 poll: float = 5, session: SessionRefresh | None = None):
        """``session`` tries the sessions browsers push, whether or not ``sources`` renew cookies from the session."""
        self.store, self.sources, self.verify, self.session = store, sources, verify, session
        self.refresh_before, self.backoff_min, self.backoff_max, self.poll = (
            refresh_before, backoff_min, backoff_max, poll)
        self.refreshing = False
        self.current_source: str | None = None
        self.refreshed_by: str | None = None  # the source (and masked account) of the last refresh that worked
        self.crash: str | None = None  # the last unexpected error of the worker, until a refresh gets through
        self.counters: Counter = Counter()  # ('refresh', source, result): ok, dropped, or a failure's reason
        self._condition = threading.Condition()
        self._forced = False
        self._forced_at = float('-inf')  # monotonic: when the last forced refresh started
        # account id: its forced logins that failed in a row, and when (monotonic) the next may be forced
        self._forced_logins: dict[str, tuple[int, float]] = {}
        self._rejection_refresh_at = float('-inf')
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._store_retry_at = 0.0  # after a refresh that could not be saved: not before then
        self._push: _Push | None = None  # waiting for its turn
        self._pushing: _Push | None = None  # being judged
        self._push_waiters = 0
        self._last_push: tuple[tuple, PushOutcome, float] | None = None  # key, outcome, when (monotonic)
        self._sessions_refused = 0  # pushed sessions Strava did not accept, in a row
        self._next_session_try = float('-inf')  # monotonic: no pushed session is tried on Strava before then

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
        Forced refreshes start at most every FORCED_SPACING seconds, and an account whose forced login failed
        is forced again only after a minute, then 2, 4 … (up to the backoff's maximum) while it fails: a script
        that forces refreshes in a loop never logs in in a loop.
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

    def take_push(self, cookies: list[dict], wait: float,
                  on_done: Callable[[PushOutcome], None] | None = None) -> PushOutcome:
        """Have the worker judge cookies a browser pushed; the outcome, or QUEUED when it is not there within ``wait``.

        The worker judges pushes between refreshes, so a push never runs beside a refresh or a login.
        Identical pushes that arrive together are judged once, and one that kept nothing is answered
        again from memory for a minute; a different push replaces one still waiting for its turn.
        ``on_done`` is called with the outcome once the push is judged, even after ``wait`` ran out.
        """
        key = tuple(sorted((c['name'], c['value']) for c in cookies))
        superseded = None
        with self._condition:
            last = self._last_push
            if last and last[0] == key and not last[1].kept and time.monotonic() - last[2] < PUSH_MEMORY:
                job = None
            else:
                job = next((j for j in (self._pushing, self._push) if j is not None and j.key == key), None)
                if job is None:
                    superseded, job = self._push, _Push(cookies, key)
                    self._push = job
                    self._condition.notify_all()
                if on_done:
                    job.callbacks.append(on_done)
                waits = self._push_waiters < MAX_PUSH_WAITERS
                self._push_waiters += waits
        if job is None:  # judged a moment ago
            if on_done:
                on_done(last[1])
            return last[1]
        if superseded:
            self._finish(superseded, SUPERSEDED)
        if waits:
            try:
                job.done.wait(wait)
            finally:
                with self._condition:
                    self._push_waiters -= 1
        return job.outcome or QUEUED

    def _finish(self, job: _Push, outcome: PushOutcome) -> None:
        with self._condition:
            job.outcome = outcome
            callbacks = list(job.callbacks)
            if self._pushing is job:
                self._pushing = None
                self._last_push = (job.key, outcome, time.monotonic())
        try:
            for callback in callbacks:  # before the answer: it may be asked about at once
                callback(outcome)
        finally:
            job.done.set()

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
        if self._push is not None:  # a pushed session is tried with one request
            return True
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
        if self._forced and self._forced_wait() <= 0:
            return True
        if self.waiting_for_user(state) or (state.next_login_at and now < state.next_login_at):
            return False
        if state.rejected_at is not None:  # the cool-down stops a loop of refreshes, not the user's new cookies
            return (state.source in BROUGHT_BY_USER
                    or time.monotonic() - self._rejection_refresh_at >= REJECTION_COOLDOWN)
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
            if (account is not None and not account.usable(time.time())
                    and not (forced and self._forced_login_wait(account) <= 0)):
                continue
            self._using(source.name)
            log.info('refresh started: %s', source_label(source))
            try:
                cookies = self._checked(source, list(start.cookies))
            except RefreshError as failure:
                log.warning('refresh failed: %s: %s', source_label(source), failure)
                self.counters['refresh', source.name, failure.reason] += 1
                error = failure
                logging_in = account is not None or failure.reason == 'session_expired'
                if account is not None:
                    self._record_account_failure(account, failure, start)
                    if forced:
                        self._forced_login_failed(account)
                if logging_in:
                    continue  # the next account logs in
                break
            new = self.store.save_cookies(cookies, source.name, based_on=start, account=account)
            if new is None:
                log.info('refresh by %s dropped: cookies were imported meanwhile and are kept', source.name)
                self.counters['refresh', source.name, 'dropped'] += 1
                return self.store.state, None
            if account is not None:
                self._forced_logins.pop(account.id, None)
            self.refreshed_by = source_label(source)
            self.counters['refresh', source.name, 'ok'] += 1
            log.info('refresh succeeded: %s; tile cookies valid until %s', self.refreshed_by, when(new.expires_at))
            return new, None
        if error is not None:
            self._record_failure(error, start, logging_in)
        return None, error

    def _checked(self, source, cookies: list[dict]) -> list[dict]:
        """New cookies from ``source``, loaded on a tile before they are trusted; RefreshError says why not."""
        fresh = source.fetch(cookies)
        if self.verify:
            self.verify(fresh)
        return fresh

    # -- pushed cookies ----------------------------------------------------------------------
    def _judge_push(self, pushed: list[dict]) -> PushOutcome:
        """Keep what a browser pushed only when it is better than what is stored, and say why.

        A session that differs from the stored one is tried first (new tile cookies from it, loaded on a
        tile), at once: the user acted, so no backoff or cool-down applies. A visitor's session is
        never kept. Tile cookies replace the stored ones only when they last longer.
        """
        start = self.store.state
        session = session_value(pushed)
        if session and not logged_in(pushed):
            return VISITOR
        if tries_session(pushed, start):
            return self._try_session(pushed, start)
        if session and start.last_error_reason == 'session_expired':
            return PushOutcome(False, 'not kept: Strava ended this session; log in to Strava in this browser again')
        return self._take_newer(pushed, start)

    def _try_session(self, pushed: list[dict], start: CookieState) -> PushOutcome:
        session_part = [c for c in pushed if c['name'] in SESSION_NAMES]
        if self.session is None:
            return PushOutcome(False, 'not kept: this server does not renew cookies from a session')
        log.info('trying the session a browser pushed')
        try:
            fresh = self._checked(self.session, session_part)
        except RefreshError as error:
            self._space_session_tries(accepted=False)
            if error.needs_user or error.reason == 'rejected':
                return PushOutcome(False, f'not kept, Strava did not accept this session: {error}')
            if start.tiles_valid() and start.last_error_reason != 'session_expired':
                return PushOutcome(False, f'not checked, the stored cookies still work: {error}')
            # Nothing that works is stored: keep the user's session rather than lose it, and try it again later.
            tiles = longer_tile_cookies(pushed, start) or [c for c in start.cookies if c['name'] in TILE_NAMES
                                                           and start.tiles_valid()]
            new = self.store.save_cookies(session_part + tiles, 'browser', based_on=start)
            if new is None:
                return DROPPED
            self._record_failure(error, new, logging_in=False)
            return PushOutcome(True, f'kept without a check, the server tries it again by itself: {error}')
        self._space_session_tries(accepted=True)
        new = self.store.save_cookies(fresh, 'browser', based_on=start)
        if new is None:
            return DROPPED
        return PushOutcome(True, f'kept: Strava accepted this session; its tile cookies are valid until '
                                 f'{when(new.expires_at)}')

    def _space_session_tries(self, accepted: bool) -> None:
        """A paired browser that pushes one session after another (a bug, or a stolen token) asks Strava at a
        slowing pace, never in a loop."""
        self._sessions_refused = 0 if accepted else self._sessions_refused + 1
        self._next_session_try = time.monotonic() + backoff_delay(self._sessions_refused, *SESSION_TRY_SPACING)

    def _push_due(self) -> bool:
        """A push waits for its turn; one whose session is tried on Strava also for the spacing of such tries."""
        return self._push is not None and (time.monotonic() >= self._next_session_try
                                           or not tries_session(self._push.cookies, self.store.state))

    def _take_newer(self, pushed: list[dict], start: CookieState) -> PushOutcome:
        """The stored session (or none) with the pushed tile cookies when they last longer, and newer remember
        cookies of the same session."""
        kept = list(start.cookies)
        news = []
        longer = longer_tile_cookies(pushed, start)
        if longer:
            kept = [c for c in kept if c['name'] not in TILE_NAMES] + longer
            news.append(f"the browser's tile cookies, which last longer (until {when(cookies_expire_at(longer))})")
        remember = [c for c in pushed if c['name'] in REMEMBER_COOKIES]
        if session_value(pushed) and remember_expiry(remember) > remember_expiry(start.cookies):
            kept = [c for c in kept if c['name'] not in REMEMBER_COOKIES] + remember
            news.append('the newer remember cookies')
        if not news:
            if session_value(pushed):
                return PushOutcome(False, 'unchanged: the server holds this session already')
            return PushOutcome(False, "not kept: the browser's tile cookies do not last longer than the stored ones")
        if longer and self.verify:
            try:
                self.verify(kept)
            except RefreshError as error:
                return PushOutcome(False, f"not kept, the browser's tile cookies do not work: {error}")
        new = self.store.save_cookies(kept, 'browser', based_on=start)
        return DROPPED if new is None else PushOutcome(True, f"kept: {' and '.join(news)}")

    def _account_of(self, source, state: CookieState) -> AccountState | None:
        account = getattr(source, 'account', None)
        if account is None:
            return None
        return replace(state.account(account.id), email=account.masked)

    def _forced_wait(self) -> float:
        """Seconds before a forced refresh may start; 0 or less: now."""
        return self._forced_at + FORCED_SPACING - time.monotonic()

    def _forced_login_wait(self, account: AccountState) -> float:
        """Seconds before a login of ``account`` may be forced; 0 or less: now."""
        return self._forced_logins.get(account.id, (0, float('-inf')))[1] - time.monotonic()

    def _forced_login_failed(self, account: AccountState) -> None:
        failures = self._forced_logins.get(account.id, (0, 0.0))[0] + 1
        delay = backoff_delay(failures, FORCED_LOGIN_BACKOFF, self.backoff_max)
        self._forced_logins[account.id] = (failures, time.monotonic() + delay)

    def forced_refresh_note(self) -> str:
        """What a forced refresh asked now will not do at once, in words for the admin; '' when it does all."""
        notes = []
        wait = self._forced_wait()
        if wait > 0:
            notes.append(f'it starts in {wait:.0f} s (forced refreshes start at most every {FORCED_SPACING} s)')
        for account in self.accounts():
            after = self._forced_login_wait(account)
            if after > 0 and not account.usable(time.time()):
                notes.append(f'the login of {account.email} failed when it was last forced: it is not forced again '
                             f'before {when(time.time() + after)}')
        return '; '.join(notes)

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
            if not self._push_due() and not self.due():
                self._condition.wait(self._sleep_time())
        self.store.reload_if_changed()
        with self._condition:
            push = self._push if self._push_due() else None
            if push is not None:
                self._push = None
            if push is None and not self.due():
                return
            self.refreshing = True
            if push is not None:
                self._pushing, self.current_source = push, 'session'
            else:
                forced = self._forced and self._forced_wait() <= 0
                if forced:
                    self._forced, self._forced_at = False, time.monotonic()
                if self.store.state.rejected_at is not None:
                    self._rejection_refresh_at = time.monotonic()
        try:
            if push is not None:
                self._judge_in_flight(push)
                return
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

    def _judge_in_flight(self, push: _Push) -> None:
        outcome = PushOutcome(False, 'not kept: the server failed unexpectedly; the log has the details')
        try:
            outcome = self._judge_push(push.cookies)
            self.counters['refresh', 'browser', 'kept' if outcome.kept else 'not_kept'] += 1
        except StoreError as error:
            outcome = PushOutcome(False, f'not kept: {error}')
        finally:
            self._finish(push, outcome)

    def _sleep_time(self) -> float:
        state = self.store.state
        sleep = self.poll
        if state.expires_at is not None and not self.store.problem:
            sleep = min(sleep, state.expires_at - self.refresh_before - time.time())
        if self._push is not None:  # waiting for the spacing of session tries
            sleep = min(sleep, self._next_session_try - time.monotonic())
        if self._forced:  # waiting for the spacing of forced refreshes
            sleep = min(sleep, self._forced_wait())
        return max(0.05, sleep)
