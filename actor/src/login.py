"""Log in to Strava in a headless Chromium and collect the heatmap cookies.

Handles the legacy one-page form and today's two-step form (email, then "Use password instead",
then the password), both cookie banners, and tells apart the ways a login fails, from what the
page shows and from Strava's own answers to the login requests. Every failure is a
``LoginFailure`` whose ``reason`` is one of ``REASONS``; no message ever carries the password.

When Strava asks for the code it emails instead (the account can only log in with a code, or no
password is configured) and the account's mailbox is given, the code is read from the mailbox
(``mailbox.CodeMailbox``, read-only) and typed in; the mailbox is opened just before the code is
asked for, so that only mail that arrives after the ask counts. The code is never reported.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Response,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from .mailbox import SENDER_DOMAIN, CodeMailbox, MailboxError
from .strava_cookies import SESSION_COOKIE, has_tile_cookies, without_empty_values

REASONS = ('bad_credentials', 'otp_required', 'captcha', 'blocked', 'page_changed', 'timeout', 'unreachable',
           'browser_missing', 'code_not_received', 'code_rejected', 'mailbox_failed')

# Each cookie banner: what shows it, the button that refuses, the button that accepts.
COOKIE_BANNERS = (
    ('#CybotCookiebotDialog', '#CybotCookiebotDialogBodyButtonDecline',
     '#CybotCookiebotDialogBodyLevelButtonLevelOptinAllowAll'),
    ('button[data-cy=deny-cookies], button[data-cy=accept-cookies]', 'button[data-cy=deny-cookies]',
     'button[data-cy=accept-cookies]'),
)
LEGACY_EMAIL, LEGACY_PASSWORD, LEGACY_SUBMIT = 'input#email', 'input#password', 'button#login-button'
EMAIL = '[data-cy=email], #desktop-email'
PASSWORD = '[data-cy=password], #desktop-password'
SUBMIT = 'button[type=submit]'
USE_PASSWORD_CTA = '[data-testid=use-password-cta] button'
USE_PASSWORD = re.compile(r'use (your )?password|password instead', re.IGNORECASE)
LOGIN_ERROR = ('[data-cy=login-error], .alert-message',
               re.compile(r'did not match|incorrect|invalid (email|password)', re.IGNORECASE))
ONE_TIME_CODE = ('input[autocomplete=one-time-code], input[data-cy=otp]',
                 re.compile(r'one-time code|verification code|code we (sent|emailed)', re.IGNORECASE))
CODE_ERROR = '[role=alert]'  # what the code screen says when it refuses a code, in the account's language
# reCAPTCHA v3's badge and its hidden challenge frame sit on every login page: only a shown challenge counts, or
# v2's "I'm not a robot" box (its widget, or its anchor frame, which the badge shows only in its invisible size).
CAPTCHA = ('iframe[src*="recaptcha/api2/bframe"], .g-recaptcha, '
           'iframe[src*="recaptcha/api2/anchor"]:not([src*="size=invisible"])')
REQUEST_OTP_PATH, SESSION_PATH, LOGIN_PATH = '/login/request_otp', '/session', '/login'
BLOCKED_RESOURCES = {'image', 'font', 'media'}
# AutomationControlled off: navigator.webdriver stays false, as in a browser a person drives.
BROWSER_FLAGS = ['--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--no-first-run', '--disable-quic', '--disable-gpu', '--disable-blink-features=AutomationControlled']
POLL_SECS = 0.2
POLL_CODE_SECS = 2.0  # how often the mailbox is asked for the code mail

Report = Callable[[str], Awaitable[None]]


class LoginFailure(Exception):
    """A login that cannot succeed by trying again right away; ``str()`` is ``"<reason>: <sentence>"``."""

    def __init__(self, reason: str, sentence: str):
        assert reason in REASONS, reason
        super().__init__(f'{reason}: {sentence}')
        self.reason = reason


def system_chromium(bundled_path: str) -> str | None:
    """Which Chromium to launch: None for Playwright's own (when installed), else the system's.

    >>> system_chromium('/nonexistent/chrome') in (None, os.environ.get('CHROMIUM_PATH'), shutil.which('chromium'))
    True
    """
    if bundled_path and os.path.exists(bundled_path):
        return None
    for candidate in (os.environ.get('CHROMIUM_PATH'), shutil.which('chromium'), shutil.which('chromium-browser'),
                      shutil.which('google-chrome')):
        if candidate and os.path.exists(candidate):
            return candidate
    raise LoginFailure('browser_missing', 'no Chromium found: run `playwright install chromium`, set CHROMIUM_PATH, '
                       'or install the `chromium` package so it is on the PATH')


def desktop_user_agent(browser_version: str) -> str:
    """The user agent of the same Chromium on a Linux desktop: headless Chromium says ``HeadlessChrome``.

    >>> desktop_user_agent('150.0.7871.100')
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36'
    """
    major = browser_version.split('.')[0]
    return f'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36'


def refusal_in_answer(method: str, url: str, status: int, answer: object = None,
                      location: str = '') -> LoginFailure | None:
    """What Strava's answer to one of the login requests says, when it refuses the login.

    >>> refusal_in_answer('POST', 'https://www.strava.com/login/request_otp', 403).reason
    'blocked'
    >>> refusal_in_answer('POST', 'https://www.strava.com/login/request_otp', 200, {'use_password': False}).reason
    'otp_required'
    >>> refusal_in_answer('POST', 'https://www.strava.com/login/request_otp', 200, {'use_password': True}) is None
    True
    >>> refusal_in_answer('POST', 'https://www.strava.com/session', 401).reason
    'bad_credentials'
    >>> refusal_in_answer('POST', 'https://www.strava.com/session', 302, location='https://www.strava.com/login').reason
    'bad_credentials'
    >>> refusal_in_answer('POST', 'https://www.strava.com/session', 302, location='/dashboard') is None
    True
    """
    path = urlsplit(url).path.rstrip('/')
    if method != 'POST':
        return None
    if path.endswith(REQUEST_OTP_PATH):
        if status == 403:
            return LoginFailure('blocked', "Strava's bot protection refused this browser at the email step: "
                                'import cookies from your own browser, or try again in a few hours')
        if isinstance(answer, dict) and answer.get('use_password') is False:
            return LoginFailure('otp_required', 'this account can only log in with a one-time code sent by email')
    if path.endswith(SESSION_PATH):
        back_to_login = 300 <= status < 400 and urlsplit(location).path.rstrip('/').endswith(LOGIN_PATH)
        if status in (401, 403) or back_to_login:
            return LoginFailure('bad_credentials', 'Strava refused the email or password')
    return None


class StravaAnswers:
    """Watches Strava's answers to the login requests and keeps the first refusal among them."""

    def __init__(self) -> None:
        self.refusal: LoginFailure | None = None

    async def note(self, response: Response) -> None:
        if self.refusal is not None:
            return
        answer = None
        if response.ok and response.request.method == 'POST' and urlsplit(response.url).path.endswith(REQUEST_OTP_PATH):
            try:
                answer = await response.json()
            except (PlaywrightError, ValueError):
                pass  # no JSON: the status and the page still tell
        self.refusal = refusal_in_answer(response.request.method, response.url, response.status, answer,
                                         response.headers.get('location', ''))

    def raise_if_refused(self) -> None:
        if self.refusal is not None:
            raise self.refusal

    def expect_code(self) -> None:
        """Asking for the emailed code is no refusal once the code is read from the mailbox."""
        if self.refusal is not None and self.refusal.reason == 'otp_required':
            self.refusal = None


async def fetch_cookies(email: str, password: str, login_url: str, heatmap_url: str, timeout_secs: float,
                        report: Report, mailbox: CodeMailbox | None = None) -> list[dict]:
    """Log in and return the cookies the heatmap page sets, as Playwright cookie dicts without empty values.

    ``timeout_secs`` bounds the time on Strava's pages; waiting for the emailed code comes on top of it.
    """
    step = ['starting the browser']

    async def say(message: str) -> None:
        step[0] = message
        await report(message)

    budget = timeout_secs + (mailbox.wait_secs if mailbox else 0)
    try:
        return await asyncio.wait_for(
            _launch_and_log_in(email, password, login_url, heatmap_url, timeout_secs, say, mailbox), budget)
    except (asyncio.TimeoutError, PlaywrightTimeoutError):
        raise LoginFailure('timeout', f'Strava did not answer within {budget:g} s while {step[0].lower()}') from None


async def _launch_and_log_in(email, password, login_url, heatmap_url, timeout_secs, say: Report,
                             mailbox: CodeMailbox | None) -> list[dict]:
    async with async_playwright() as playwright:
        await say('Starting the browser')
        browser = await launch_browser(playwright)
        try:
            return await log_in(browser, email, password, login_url, heatmap_url, timeout_secs, say, mailbox)
        finally:
            await browser.close()


async def launch_browser(playwright: Playwright) -> Browser:
    """Playwright's own headless Chromium when installed, else the system's."""
    return await playwright.chromium.launch(
        headless=True, executable_path=system_chromium(playwright.chromium.executable_path), args=BROWSER_FLAGS)


async def log_in(browser: Browser, email: str, password: str, login_url: str, heatmap_url: str, timeout_secs: float,
                 say: Report, mailbox: CodeMailbox | None = None) -> list[dict]:
    """One login in a fresh context of ``browser``; returns the cookies of that context after the heatmap page.

    With a ``mailbox``, a login that meets the code screen reads the emailed code from it and types it.
    """
    context = await browser.new_context(user_agent=desktop_user_agent(browser.version), locale='en-US')
    code_mail = EmailedCode(mailbox, needed=not password) if mailbox else None
    try:
        context.set_default_timeout(timeout_secs * 1000)
        await context.route('**/*', _skip_heavy_resources)
        answers = StravaAnswers()
        context.on('response', answers.note)
        page = await context.new_page()
        await _answer_cookie_banners(page, say)
        await say('Opening the login page')
        await _goto(page, login_url)
        anonymous_sessions = await _session_values(context)
        step_secs = max(3.0, min(8.0, timeout_secs / 3))
        try:
            await _fill_login_form(page, answers, email, password, step_secs, say, code_mail)
            await say('Waiting for Strava to accept the login')
            await _wait_for_new_session(page, answers, context, anonymous_sessions)
        except LoginFailure as failure:
            if failure.reason != 'otp_required' or code_mail is None:
                raise
            answers.expect_code()
            await code_mail.type_code(page, step_secs, say)
            await say('Waiting for Strava to accept the code')
            await _wait_for_new_session(page, answers, context, anonymous_sessions, code_typed=True)
        await say('Opening the heatmap page for the tile cookies')
        # The login page goes on to the dashboard and onboarding by itself, and a navigation of ours in that page
        # would be aborted by it (net::ERR_ABORTED). A page of its own shares the cookie jar, and no navigation of
        # another page can abort it.
        heatmap = await _goto(await context.new_page(), heatmap_url)
        if heatmap is not None and heatmap.status >= 400:
            raise LoginFailure('unreachable', f'the heatmap page answered HTTP {heatmap.status} after a successful '
                               'login: Strava is busy or down, try again later')
        cookies = without_empty_values(await context.cookies())
        if not has_tile_cookies(cookies):
            raise LoginFailure('page_changed', 'the heatmap page set no CloudFront cookies after a successful login')
        return cookies
    finally:
        await context.close()
        if code_mail:
            await asyncio.to_thread(code_mail.mailbox.close)


class EmailedCode:
    """Strava's emailed code for one login: the mailbox is opened just before the code is asked for, then polled.

    ``needed``: the account has no password, so a mailbox that cannot be opened ends the login at once; with a
    password, the login goes on and the mailbox's failure counts only if Strava insists on the code.
    """

    def __init__(self, mailbox: CodeMailbox, needed: bool):
        self.mailbox, self.needed = mailbox, needed
        self.opened = False
        self.failure: LoginFailure | None = None

    async def note_mailbox(self) -> None:
        """Open the mailbox, noting what is in it already: to run just before Strava is asked for a code."""
        self.opened = True
        try:
            await asyncio.to_thread(self.mailbox.open)
        except MailboxError as error:
            self.failure = LoginFailure('mailbox_failed', str(error))
            if self.needed:
                raise self.failure from None

    async def type_code(self, page: Page, step_secs: float, say: Report) -> None:
        if not self.opened:  # a code screen after a step that was not expected to ask for one
            await self.note_mailbox()
        if self.failure:
            raise self.failure
        field = _shown(page, ONE_TIME_CODE[0])
        try:
            await field.wait_for(timeout=step_secs * 1000)
        except PlaywrightTimeoutError:
            raise LoginFailure('page_changed', 'the code screen shows no code field we know (step: code)') from None
        code = await self._wait_for_code(say)
        await say('Typing the emailed code')
        try:  # a Playwright error could quote what was typed: it is not passed on
            await field.press_sequentially(code)
            await _shown(page, SUBMIT).click()
        except PlaywrightError:
            raise LoginFailure('page_changed', 'the code screen took no code or has no button to send it '
                               '(step: code)') from None

    async def _wait_for_code(self, say: Report) -> str:
        mailbox = self.mailbox
        await say(f'Waiting up to {mailbox.wait_secs:g} s for the code Strava emails to {mailbox.address}')
        loop = asyncio.get_running_loop()
        deadline = loop.time() + mailbox.wait_secs
        while True:
            try:
                code = await asyncio.to_thread(mailbox.poll)
            except MailboxError as error:
                raise LoginFailure('mailbox_failed', str(error)) from None
            if code:
                return code
            if loop.time() >= deadline:
                raise LoginFailure('code_not_received', f'no mail from a {SENDER_DOMAIN} sender with a 6-digit code '
                                   f'reached {mailbox.address} within {mailbox.wait_secs:g} s of asking for it')
            await asyncio.sleep(min(POLL_CODE_SECS, max(0.0, deadline - loop.time())))


async def _skip_heavy_resources(route) -> None:
    if route.request.resource_type in BLOCKED_RESOURCES:
        await route.abort()
    else:
        await route.continue_()


async def _answer_cookie_banners(page: Page, say: Report) -> None:
    """A banner can cover the form at any moment: Playwright runs these answers before an action it would block."""
    for banner, refuse, accept in COOKIE_BANNERS:
        await page.add_locator_handler(_shown(page, banner), _banner_answer(page, refuse, accept, say))


def _banner_answer(page: Page, refuse: str, accept: str, say: Report) -> Callable[[], Awaitable[None]]:
    """Refuse when the banner offers it, else accept: either way the banner goes and the form is free.

    The click is dispatched to the button itself, as a page script's ``button.click()`` would: a mouse click
    could land on the other banner, when both show at once.
    """
    async def answer() -> None:
        await say('Answering the cookie banner')
        refusing = _shown(page, refuse)
        await (refusing if await _visible(refusing) else _shown(page, f'{refuse}, {accept}')).dispatch_event('click')
    return answer


async def _goto(page: Page, url: str) -> Response | None:
    try:
        return await page.goto(url, wait_until='domcontentloaded')
    except PlaywrightTimeoutError:
        raise
    except PlaywrightError as error:
        raise LoginFailure('unreachable', f'could not open {url}: {str(error).splitlines()[0]}') from None


def _shown(page: Page, css: str) -> Locator:
    """The first visible element of ``css``: the real page has a hidden mobile copy of each field first."""
    return page.locator(css).filter(visible=True).first


def _use_password_button(page: Page) -> Locator:
    """By its test id (its words follow the account's language), or failing that by its English name."""
    return page.locator(USE_PASSWORD_CTA).or_(page.get_by_role('button', name=USE_PASSWORD)).filter(visible=True).first


async def _visible(locator: Locator) -> bool:
    try:
        return await locator.filter(visible=True).count() > 0
    except PlaywrightError:
        return False


async def _refusal_on_page(page: Page, code_typed: bool = False) -> LoginFailure | None:
    """The refusal the page shows, if it shows one; once the emailed code is typed, an error is about the code."""
    error_css, error_text = LOGIN_ERROR
    shown_error = page.locator(error_css).or_(page.get_by_text(error_text))
    if code_typed:
        if await _visible(shown_error.or_(page.locator(CODE_ERROR))):
            return LoginFailure('code_rejected', 'Strava refused the code read from the mailbox')
    elif await _visible(shown_error):
        return LoginFailure('bad_credentials', 'Strava says the email or password did not match')
    if await _visible(page.locator(CAPTCHA)):
        return LoginFailure('captcha', 'Strava asked to solve a captcha')
    code_css, code_text = ONE_TIME_CODE
    if (not code_typed and await _visible(page.locator(code_css).or_(page.get_by_text(code_text)))
            and not await _visible(_use_password_button(page))):
        return LoginFailure('otp_required', 'Strava asked for a one-time code sent by email')
    return None


async def _wait_until_shown(page: Page, answers: StravaAnswers, wanted: Locator, seconds: float,
                            missing: str) -> None:
    """Wait for ``wanted``; a refusal Strava answers or shows meanwhile ends the wait as that refusal."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        answers.raise_if_refused()
        if await _visible(wanted):
            return
        refusal = await _refusal_on_page(page)
        if refusal:
            raise refusal
        if asyncio.get_running_loop().time() > deadline:
            raise LoginFailure('page_changed', missing)
        await asyncio.sleep(POLL_SECS)


async def _fill_login_form(page: Page, answers: StravaAnswers, email: str, password: str, step_secs: float,
                           say: Report, code_mail: EmailedCode | None = None) -> None:
    """Fill in the form; ``code_mail`` notes its mailbox just before the click that may make Strava email a code.

    An account without a password meets the code screen: that ends the form as ``otp_required``.
    """
    await _wait_until_shown(page, answers, _shown(page, f'{LEGACY_EMAIL}, {EMAIL}'), step_secs,
                            'the login page shows no email field we know (step: email)')
    if await _visible(page.locator(LEGACY_PASSWORD)):
        if not password:
            raise LoginFailure('bad_credentials', 'the one-page login form asks for a password, and this account '
                               'has only a mailbox: add its password')
        await say('Filling in the one-page login form')
        await _shown(page, LEGACY_EMAIL).fill(email)
        await _shown(page, LEGACY_PASSWORD).fill(password)
        if code_mail:
            await code_mail.note_mailbox()
        await _shown(page, LEGACY_SUBMIT).click()
        return
    await say('Filling in the email step of the login form')
    await _shown(page, EMAIL).fill(email)
    if code_mail:
        await code_mail.note_mailbox()
    await _shown(page, SUBMIT).click()
    password_field = _shown(page, PASSWORD)
    await _wait_until_shown(page, answers, password_field.or_(_use_password_button(page)), step_secs,
                            'after the email step there is no "Use password instead" and no password field '
                            '(step: password)')
    if not password:
        raise LoginFailure('otp_required', 'Strava offers the emailed code, and this account has no password')
    if not await _visible(password_field):
        await say('Choosing to log in with the password')
        await _use_password_button(page).click()
        await _wait_until_shown(page, answers, password_field, step_secs,
                                'the password step shows no password field we know (step: password)')
    await say('Filling in the password step of the login form')
    await password_field.fill(password)
    await _shown(page, SUBMIT).click()


async def _session_values(context: BrowserContext) -> set[str]:
    return {c['value'] for c in await context.cookies() if c['name'] == SESSION_COOKIE and c['value']}


async def _wait_for_new_session(page: Page, answers: StravaAnswers, context: BrowserContext,
                                anonymous_sessions: set[str], code_typed: bool = False) -> None:
    """Real Strava gives visitors a session cookie too: only a new value means the login worked."""
    while not (await _session_values(context) - anonymous_sessions):
        answers.raise_if_refused()
        refusal = await _refusal_on_page(page, code_typed)
        if refusal:
            raise refusal
        await asyncio.sleep(POLL_SECS)
