"""Log in to Strava in a headless Chromium and collect the heatmap cookies.

Handles the legacy one-page form and today's two-step form, a cookie-consent banner, and tells
apart the ways a login fails. Every failure is a ``LoginFailure`` whose ``reason`` is one of
``REASONS``; no message ever carries the password.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable

from playwright.async_api import BrowserContext, Page, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from .strava_cookies import SESSION_COOKIE, has_tile_cookies, without_empty_values

REASONS = ('bad_credentials', 'otp_required', 'captcha', 'page_changed', 'timeout', 'unreachable', 'browser_missing')

BANNER_BUTTON = 'button[data-cy=deny-cookies]'
LEGACY_EMAIL, LEGACY_PASSWORD, LEGACY_SUBMIT = 'input#email', 'input#password', 'button#login-button'
TWO_STEP_EMAIL = '[data-cy=email], #desktop-email'
TWO_STEP_PASSWORD = '[data-cy=password]'
ANY_FORM = f'{LEGACY_EMAIL}, {TWO_STEP_EMAIL}'
USE_PASSWORD = re.compile(r'use (your )?password', re.IGNORECASE)
VISIBLE_SUBMIT = 'button[type=submit]:visible'
LOGIN_ERROR = ('[data-cy=login-error], .alert-message',
               re.compile(r'did not match|incorrect password|invalid (email|password)', re.IGNORECASE))
ONE_TIME_CODE = ('input[autocomplete=one-time-code]', re.compile(r'one-time code|verification code', re.IGNORECASE))
CAPTCHA = '.g-recaptcha, iframe[src*=recaptcha], iframe[title*=reCAPTCHA], iframe[src*=hcaptcha], [data-cy=captcha]'
BLOCKED_RESOURCES = {'image', 'font', 'media'}
BROWSER_FLAGS = ['--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--no-first-run', '--disable-quic', '--disable-gpu']

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


async def fetch_cookies(email: str, password: str, login_url: str, heatmap_url: str, timeout_secs: float,
                        report: Report) -> list[dict]:
    """Log in and return the cookies the heatmap page sets, as Playwright cookie dicts without empty values."""
    step = ['starting the browser']

    async def say(message: str) -> None:
        step[0] = message
        await report(message)

    try:
        return await asyncio.wait_for(_log_in(email, password, login_url, heatmap_url, timeout_secs, say),
                                      timeout_secs)
    except (asyncio.TimeoutError, PlaywrightTimeoutError):
        raise LoginFailure('timeout',
                           f'Strava did not answer within {timeout_secs:g} s while {step[0].lower()}') from None


async def _log_in(email, password, login_url, heatmap_url, timeout_secs, say: Report) -> list[dict]:
    async with async_playwright() as playwright:
        await say('Starting the browser')
        browser = await playwright.chromium.launch(
            headless=True, executable_path=system_chromium(playwright.chromium.executable_path), args=BROWSER_FLAGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(timeout_secs * 1000)
            await context.route('**/*', _skip_heavy_resources)
            page = await context.new_page()
            await say('Opening the login page')
            await _goto(page, login_url)
            anonymous_sessions = await _session_values(context)
            await _fill_login_form(page, email, password, timeout_secs, say)
            await say('Waiting for Strava to accept the login')
            await _wait_for_new_session(page, context, anonymous_sessions)
            await say('Opening the heatmap page for the tile cookies')
            await _goto(page, heatmap_url)
            cookies = without_empty_values(await context.cookies())
            if not has_tile_cookies(cookies):
                raise LoginFailure('page_changed',
                                   'the heatmap page set no CloudFront cookies after a successful login')
            return cookies
        finally:
            await browser.close()


async def _skip_heavy_resources(route) -> None:
    if route.request.resource_type in BLOCKED_RESOURCES:
        await route.abort()
    else:
        await route.continue_()


async def _goto(page: Page, url: str) -> None:
    try:
        await page.goto(url, wait_until='domcontentloaded')
    except PlaywrightTimeoutError:
        raise
    except PlaywrightError as error:
        raise LoginFailure('unreachable', f'could not open {url}: {str(error).splitlines()[0]}') from None


async def _visible(page: Page, selector: str) -> bool:
    try:
        return await page.locator(selector).first.is_visible()
    except PlaywrightError:
        return False


async def _wait_for_any(page: Page, selector: str, seconds: float) -> bool:
    try:
        await page.locator(selector).first.wait_for(state='visible', timeout=seconds * 1000)
        return True
    except PlaywrightError:
        return False


async def _fill_login_form(page: Page, email: str, password: str, timeout_secs: float, say: Report) -> None:
    form_wait = max(3.0, min(10.0, timeout_secs / 3))
    if not await _wait_for_any(page, f'{BANNER_BUTTON}, {ANY_FORM}', form_wait):
        raise LoginFailure('page_changed', 'the login page shows no email field we know (step: email)')
    if await _visible(page, BANNER_BUTTON):
        await say('Dismissing the cookie banner')
        await page.locator(BANNER_BUTTON).first.click()
        if not await _wait_for_any(page, ANY_FORM, form_wait):
            raise LoginFailure('page_changed', 'the login page shows no email field we know (step: email)')
    if await _visible(page, LEGACY_PASSWORD):
        await say('Filling in the one-page login form')
        await page.locator(LEGACY_EMAIL).fill(email)
        await page.locator(LEGACY_PASSWORD).fill(password)
        await page.locator(LEGACY_SUBMIT).click()
        return
    await say('Filling in the email step of the login form')
    await page.locator(TWO_STEP_EMAIL).first.fill(email)
    await page.locator(VISIBLE_SUBMIT).first.click()
    use_password = page.get_by_role('button', name=USE_PASSWORD).or_(page.get_by_role('link', name=USE_PASSWORD))
    if not await _wait_for_any(page, TWO_STEP_PASSWORD, 0.5):
        try:
            await use_password.first.wait_for(state='visible', timeout=form_wait * 1000)
        except PlaywrightError:
            await _raise_if_refused(page)
            raise LoginFailure('page_changed', 'after the email step there is no "Use password instead" '
                               'and no password field (step: password)') from None
        await say('Choosing to log in with the password')
        await use_password.first.click()
    if not await _wait_for_any(page, TWO_STEP_PASSWORD, form_wait):
        raise LoginFailure('page_changed', 'the password step shows no password field we know (step: password)')
    await say('Filling in the password step of the login form')
    await page.locator(TWO_STEP_PASSWORD).first.fill(password)
    await page.locator(VISIBLE_SUBMIT).first.click()


async def _shows(page: Page, css: str, text: re.Pattern) -> bool:
    try:
        return await page.locator(css).or_(page.get_by_text(text)).first.is_visible()
    except PlaywrightError:
        return False


async def _raise_if_refused(page: Page) -> None:
    """Turn what the page shows after a submit into the matching ``LoginFailure``, if it shows one."""
    if await _shows(page, *LOGIN_ERROR):
        raise LoginFailure('bad_credentials', 'Strava says the email or password did not match')
    if await _visible(page, CAPTCHA):
        raise LoginFailure('captcha', 'Strava asked to solve a captcha')
    if await _shows(page, *ONE_TIME_CODE):
        raise LoginFailure('otp_required', 'Strava asked for a one-time code sent by email')


async def _session_values(context: BrowserContext) -> set[str]:
    return {c['value'] for c in await context.cookies() if c['name'] == SESSION_COOKIE and c['value']}


async def _wait_for_new_session(page: Page, context: BrowserContext, anonymous_sessions: set[str]) -> None:
    """Real Strava gives visitors a session cookie too: only a new value means the login worked."""
    while not (await _session_values(context) - anonymous_sessions):
        await _raise_if_refused(page)
        await asyncio.sleep(0.2)
