"""Where new cookies come from: the session cookie (one GET), or a login by the actor on Apify or locally.

Each source's ``fetch(cookies)`` returns a new cookie list or raises ``RefreshError`` whose
``reason`` says why. The reasons in ``NEEDS_USER`` mean trying again will not help.
"""

from __future__ import annotations

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

import requests

from actor.src.strava_cookies import without_empty_values

from .cookies import SESSION_COOKIE, has_tile_cookies, session_value

ACTOR_DIR = Path(__file__).resolve().parent.parent / 'actor'
NEEDS_USER = {'bad_credentials', 'otp_required', 'captcha', 'session_expired', 'apify_token', 'apify_actor'}
STATUS_LINE = re.compile(r'\[Terminal status message\]: (.*)')
ANSI = re.compile(r'\x1b\[[0-9;]*m')


class RefreshError(Exception):
    """A source could not produce cookies; ``str()`` is a sentence for the status page, never a secret."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    @property
    def needs_user(self) -> bool:
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


class SessionRefresh:
    """Fetch new tile cookies from the heatmap page with the long-lived ``_strava4_session`` cookie."""

    name = 'session'

    def __init__(self, maps_url: str, timeout: float):
        self.maps_url, self.timeout = maps_url, timeout

    def fetch(self, cookies: list[dict]) -> list[dict]:
        session = session_value(cookies)
        if session is None:
            raise RefreshError('session_expired',
                               'no Strava session cookie is stored: import cookies or set up a login')
        try:
            response = requests.get(self.maps_url, cookies={SESSION_COOKIE: session}, allow_redirects=False,
                                     timeout=self.timeout)
        except requests.RequestException as error:
            raise RefreshError('unreachable', f'the Strava heatmap page did not answer ({type(error).__name__})') \
                from None
        fresh = [{'name': c.name, 'value': c.value or '', 'domain': c.domain or '.strava.com', 'path': c.path or '/',
                  'expires': float(c.expires) if c.expires else -1,
                  'httpOnly': bool(c.has_nonstandard_attr('HttpOnly')),
                  'secure': bool(c.secure), 'sameSite': 'Lax'} for c in response.cookies]
        fresh = without_empty_values(fresh)
        if not has_tile_cookies(fresh):
            raise RefreshError('session_expired', 'the Strava session has expired (the heatmap page answered '
                               f'{response.status_code} without tile cookies): a new login is needed')
        names = {c['name'] for c in fresh}
        kept = [c for c in cookies if c['name'] not in names]
        return kept + fresh


class ApifyLogin:
    """Run the login actor on the Apify platform through apify-client and read its dataset."""

    name = 'apify'

    def __init__(self, token: str, actor: str, api_url: str | None, actor_input: dict, timeout: float,
                 api_timeout: float = 30):
        self.token, self.actor, self.api_url = token, actor, api_url
        self.actor_input, self.timeout, self.api_timeout = actor_input, timeout, api_timeout

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


class LocalLogin:
    """Run the same actor code here, as a subprocess with its own local storage."""

    name = 'local'

    def __init__(self, actor_input: dict, timeout: float):
        self.actor_input, self.timeout = actor_input, timeout

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
