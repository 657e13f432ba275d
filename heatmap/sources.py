"""Where new cookies come from: the session cookie (one GET), or a login by the actor on Apify or locally.

Each source's ``fetch(cookies)`` returns a new cookie list or raises ``RefreshError`` whose
``reason`` says why. The reasons in ``NEEDS_USER`` mean trying again will not help; so does
``mailbox_failed``, unless the mail server could not be reached (its message then says
``mailbox.UNREACHABLE``, "cannot be reached").
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import requests

from actor.src.mailbox import UNREACHABLE
from actor.src.strava_cookies import without_empty_values

from .cookies import SESSION_NAMES, has_tile_cookies, session_value

ACTOR_DIR = Path(__file__).resolve().parent.parent / 'actor'
NEEDS_USER = {'bad_credentials', 'otp_required', 'captcha', 'blocked', 'session_expired', 'apify_token', 'apify_actor',
              'redirect_refused'}
QUICK_SOURCES = {'session'}  # one request, seconds at most: a tile request may wait for it
TEMPORARY = 'temporary: the server tries again later, nothing is needed from you'
STATUS_LINE = re.compile(r'\[Terminal status message\]: (.*)')
ANSI = re.compile(r'\x1b\[[0-9;]*m')


class RefreshError(Exception):
    """A source could not produce cookies; ``str()`` is a sentence for the status page, never a secret."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    @property
    def needs_user(self) -> bool:
        """True when trying again cannot help.

        >>> RefreshError('mailbox_failed', 'the mail server imap.x.org refused the login of me').needs_user
        True
        >>> RefreshError('mailbox_failed', f'the mail server imap.x.org:993 {UNREACHABLE} for me').needs_user
        False
        """
        if self.reason == 'mailbox_failed':
            return UNREACHABLE not in str(self)
        return self.reason in NEEDS_USER


def reason_of(status_message: str | None) -> str:
    """The reason code an actor status message starts with.

    >>> reason_of('bad_credentials: Strava says the email or password did not match')
    'bad_credentials'
    >>> reason_of('Actor timed out') == reason_of(None) == 'login_failed'
    True
    """
    code = (status_message or '').split(':', 1)[0]
    return code if re.fullmatch(r'[a-z_]+', code) else 'login_failed'


def source_label(source) -> str:
    """A source's name for log lines, with the account it logs in with, masked.

    >>> source_label(SessionRefresh('https://www.strava.com/maps', 10))
    'session'
    """
    account = getattr(source, 'account', None)
    return f'{source.name} ({account.masked})' if account else source.name


class SessionRefresh:
    """Fetch new tile cookies from the heatmap page with the long-lived ``_strava4_session`` cookie."""

    name = 'session'

    def __init__(self, maps_url: str, timeout: float):
        self.maps_url, self.timeout = maps_url, timeout

    def fetch(self, cookies: list[dict]) -> list[dict]:
        if session_value(cookies) is None:
            raise RefreshError('session_expired',
                               'no Strava session cookie is stored: import cookies or set up a login')
        sent = {c['name']: c['value'] for c in cookies if c['name'] in SESSION_NAMES and c['value']}
        try:
            response = requests.get(self.maps_url, cookies=sent, allow_redirects=False, timeout=self.timeout)
        except requests.Timeout:
            raise RefreshError('unreachable', f'the Strava heatmap page did not answer within {self.timeout:g} s; '
                               f'{TEMPORARY}') from None
        except requests.RequestException as error:
            raise RefreshError('unreachable', f'the Strava heatmap page could not be reached ({type(error).__name__}); '
                               f'{TEMPORARY}') from None
        fresh = without_empty_values(
            {'name': c.name, 'value': c.value or '', 'domain': c.domain or '.strava.com', 'path': c.path or '/',
             'expires': float(c.expires) if c.expires else -1, 'httpOnly': bool(c.has_nonstandard_attr('HttpOnly')),
             'secure': bool(c.secure), 'sameSite': 'Lax'} for c in response.cookies)
        status = response.status_code
        if status == 200 and has_tile_cookies(fresh):
            names = {c['name'] for c in fresh}
            return [c for c in cookies if c['name'] not in names] + fresh
        raise session_refresh_error(status, response.headers.get('Location', ''))


def session_refresh_error(status: int, location: str) -> RefreshError:
    """What a heatmap-page answer without tile cookies means: a dead session, or Strava being busy for now.

    >>> session_refresh_error(302, 'https://www.strava.com/login').reason
    'session_expired'
    >>> session_refresh_error(429, '').reason, 'nothing is needed from you' in str(session_refresh_error(503, ''))
    ('strava_busy', True)
    """
    if status in (401, 403) or (300 <= status < 400 and '/login' in location):
        return RefreshError('session_expired', f'the Strava session has expired (the heatmap page answered {status}'
                            f'{" to the login page" if location else ""}): a new login is needed')
    if status == 429 or status >= 500:
        meaning = ' (too many requests)' if status == 429 else ''
        return RefreshError('strava_busy', f'Strava answered {status}{meaning} on the heatmap page; {TEMPORARY}')
    if 300 <= status < 400:
        return RefreshError('page_changed', f'the heatmap page sent the browser to {urlsplit(location).path or "?"} '
                            'instead of setting tile cookies: Strava may have changed; import cookies meanwhile')
    return RefreshError('page_changed', f'the heatmap page answered {status} without tile cookies: Strava may have '
                        'changed; import cookies meanwhile')


class ApifyLogin:
    """Run the login actor on the Apify platform through apify-client and read its dataset."""

    name = 'apify'

    def __init__(self, token: str, actor: str, api_url: str | None, actor_input: dict, timeout: float,
                 api_timeout: float = 30, account=None):
        self.token, self.actor, self.api_url = token, actor, api_url
        self.actor_input, self.timeout, self.api_timeout = actor_input, timeout, api_timeout
        self.account = account

    def _client(self, max_retries: int):
        from apify_client import ApifyClient

        options = {'api_url': self.api_url} if self.api_url else {}
        request = timedelta(seconds=self.api_timeout)
        return ApifyClient(self.token, max_retries=max_retries, min_delay_between_retries=timedelta(seconds=1),
                           timeout_short=request, timeout_medium=request, timeout_long=timedelta(seconds=90),
                           timeout_max=timedelta(seconds=90), **options)

    def check(self) -> str:
        """Ask Apify whether the token works and the actor exists, without running it."""
        with self._api_errors():
            found = self._client(max_retries=2).actor(self.actor).get()
        if found is None:
            raise self._missing_actor()
        return f'Apify accepts the token and has the actor {self.actor}'

    def fetch(self, cookies: list[dict]) -> list[dict]:
        with self._api_errors():
            # Never retry the start: a start that timed out may still have begun a login on Strava.
            started = self._client(max_retries=0).actor(self.actor).start(run_input=self.actor_input)
            client = self._client(max_retries=2)
            run = client.run(started.id).wait_for_finish(wait_duration=timedelta(seconds=self.timeout))
            status = str(getattr(run.status, 'value', run.status)) if run else 'RUNNING'
            if status in ('READY', 'RUNNING'):
                client.run(started.id).abort()
                raise RefreshError('timeout', f'the Apify run did not finish within {self.timeout:g} s')
            if status != 'SUCCEEDED':
                message = run.status_message or f'the Apify run ended {status}'
                raise RefreshError(reason_of(run.status_message), f'Apify run {status}: {message}')
            items = client.dataset(run.default_dataset_id).list_items().items
        return _login_result(items, 'the Apify run')

    def _missing_actor(self) -> RefreshError:
        return RefreshError('apify_actor', f'Apify has no actor {self.actor!r}: check APIFY_ACTOR')

    @contextmanager
    def _api_errors(self):
        """Turn what apify-client raises into a RefreshError naming the setting to fix."""
        from apify_client.errors import ApifyApiError

        try:
            yield
        except RefreshError:
            raise
        except ApifyApiError as error:
            if error.status_code == 401:
                raise RefreshError('apify_token', 'Apify refused the token: check APIFY_TOKEN') from None
            if error.status_code == 404:
                raise self._missing_actor() from None
            raise RefreshError('apify_error', f'the Apify API answered {error.status_code}') from None
        except Exception as error:  # noqa: BLE001 - the client does not wrap its transport's errors
            raise RefreshError('unreachable', f'the Apify API could not be reached ({type(error).__name__})') \
                from None


def login_stack_missing() -> str | None:
    """None when the local login's browser stack (Playwright, the Apify SDK) is installed, else one line saying how
    to install it: the server's own install leaves it out."""
    missing = [name for name in ('playwright', 'apify') if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f'a login on this machine needs {" and ".join(missing)}, which the server\'s install leaves out: run '
            f'`{sys.executable} -m pip install -r {ACTOR_DIR / "requirements.txt"}`, or log in with the Apify actor, '
            'or bring cookies from a browser')


class LocalLogin:
    """Run the same actor code here, as a subprocess with its own local storage."""

    name = 'local'

    def __init__(self, actor_input: dict, timeout: float, chromium_path: str = '', account=None):
        self.actor_input, self.timeout, self.chromium_path = actor_input, timeout, chromium_path
        self.account = account

    def check(self) -> str:
        """Start the browser the login would use, without opening Strava."""
        missing = login_stack_missing()
        if missing:
            raise RefreshError('browser_missing', missing)
        from playwright.sync_api import Error, sync_playwright

        from actor.src.login import BROWSER_FLAGS, LoginFailure, system_chromium

        path = self.chromium_path or None
        try:
            with sync_playwright() as playwright:
                path = path or system_chromium(playwright.chromium.executable_path)
                browser = playwright.chromium.launch(executable_path=path, args=BROWSER_FLAGS)
                version = browser.version
                browser.close()
        except LoginFailure as failure:
            raise RefreshError('browser_missing', str(failure).split(': ', 1)[-1]) from None
        except Error as error:
            raise RefreshError('browser_missing', f"Chromium ({path or 'Playwright’s own'}) does not start: "
                               f'{str(error).strip().splitlines()[0][:200]}') from None
        return f"Chromium {version} starts ({path or 'Playwright’s own'})"

    def fetch(self, cookies: list[dict]) -> list[dict]:
        storage = Path(tempfile.mkdtemp(prefix='heatmap-login-'))  # mode 0700
        try:
            record_dir = storage / 'key_value_stores' / 'default'
            record_dir.mkdir(parents=True)
            descriptor = os.open(record_dir / 'INPUT.json', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, 'w') as file:
                json.dump(self.actor_input, file)
            env = {**os.environ, 'APIFY_LOCAL_STORAGE_DIR': str(storage), 'NO_COLOR': '1',
                   'PYTHONPATH': str(ACTOR_DIR)}
            if self.chromium_path:
                env['CHROMIUM_PATH'] = self.chromium_path
            try:
                done = subprocess.run([sys.executable, '-m', 'src'], cwd=ACTOR_DIR, env=env, capture_output=True,
                                      text=True, timeout=self.timeout + 30)
            except subprocess.TimeoutExpired:
                raise RefreshError('timeout', f'the local login did not finish within {self.timeout:g} s') from None
            if done.returncode != 0:
                found = STATUS_LINE.findall(ANSI.sub('', done.stdout + done.stderr))
                message = found[-1].strip() if found else f'the local login exited with code {done.returncode}'
                raise RefreshError(reason_of(message), f'local login failed: {message}')
            output_path = record_dir / 'OUTPUT'
            output = json.loads(output_path.read_text()) if output_path.exists() else {}
            return _login_result(output.get('cookies', []), 'the local login')
        finally:
            shutil.rmtree(storage, ignore_errors=True)


def _login_result(items: list[dict], where: str) -> list[dict]:
    cookies = without_empty_values(c for c in items if isinstance(c, dict) and 'name' in c and 'value' in c)
    if not has_tile_cookies(cookies):
        raise RefreshError('page_changed', f'{where} succeeded but returned no CloudFront cookies')
    return cookies
