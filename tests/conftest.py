"""Fixtures: the fakes start once per session; each test gets them back in their default state."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from actor.src.login import BROWSER_FLAGS, LoginFailure, system_chromium
from tests import fake_strava
from tests.actor_process import ActorRun, run_actor_process
from tests.fake_strava import FakeStrava
from tests.mail_server import Mailbox, MailServer

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = 'correct horse'
REFRESH_POLL = 0.2  # HEATMAP_REFRESH_POLL of the tests that count refreshes: the worker looks five times a second
WATCH = 20 * REFRESH_POLL  # how long those tests watch for what must not happen: twenty of the worker's looks


def stays(value, expected, seconds: float = WATCH, what: str = 'the count') -> None:
    """``value()`` is ``expected`` now and all through the next ``seconds`` (looked at every 50 ms).

    A watch proves nothing alone: each test that uses one also shows that the same watch sees the thing happen
    when it should (its positive control).
    """
    deadline = time.monotonic() + seconds
    while True:
        seen = value()
        assert seen == expected, f'{what} became {seen!r} within {seconds:g} s; it must stay {expected!r}'
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def find_chromium() -> str | None:
    """The system Chromium the actor itself would fall back to (CHROMIUM_PATH, then the PATH)."""
    try:
        return system_chromium('')
    except LoginFailure:
        return None


@pytest.fixture(scope='session')
def chromium() -> str:
    """Browser tests fail (never skip) without a browser: CI must install one."""
    path = find_chromium()
    if path is None:
        pytest.fail('no Chromium for the browser tests: install Debian\'s `chromium` (apt-get install chromium) '
                    'or set CHROMIUM_PATH', pytrace=False)
    return path


@pytest.fixture(scope='session')
def _strava_server():
    fake = FakeStrava().start()
    yield fake
    fake.stop()


@pytest.fixture
def strava(_strava_server) -> FakeStrava:
    _strava_server.reset()
    return _strava_server


@pytest.fixture
def revoked():
    """Strava rotates its signing key: every cookie set issued before stops working at once."""
    old_secret = fake_strava.SIGNING_SECRET

    def revoke():
        fake_strava.SIGNING_SECRET = os.urandom(32)
    yield revoke
    fake_strava.SIGNING_SECRET = old_secret


@pytest.fixture
def run_actor(tmp_path, chromium):
    """Run the actor as `python -m src` with its own local storage, as a user would."""
    def run(actor_input: dict, timeout: float = 120) -> ActorRun:
        return run_actor_process(actor_input, tmp_path / f'storage-{time.monotonic_ns()}', chromium, timeout)
    return run


@pytest.fixture(scope='session')
def _osm_server():
    from tests.fake_osm import FakeOSM
    fake = FakeOSM().start()
    yield fake
    fake.stop()


@pytest.fixture
def osm(_osm_server):
    """The fake OpenStreetMap: base map tiles and the place search of the /packs/ page."""
    _osm_server.reset()
    return _osm_server


@pytest.fixture(scope='session')
def _apify_server(chromium):
    from tests.fake_apify import FakeApify
    fake = FakeApify(chromium=chromium).start()
    yield fake
    fake.stop()


@pytest.fixture
def apify(_apify_server):
    _apify_server.reset()
    return _apify_server


@pytest.fixture(scope='session')
def mail_server(tmp_path_factory) -> MailServer:
    """A real IMAP server (pymap); the emailed-code tests fail, never skip, without it."""
    try:
        server = MailServer.start(free_port(), tmp_path_factory.mktemp('imap') / 'pymap.log')
    except RuntimeError as error:
        pytest.fail(f'the IMAP server for the emailed-code tests did not start: {error}', pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def code_mailbox(strava, mail_server) -> Mailbox:
    """A mailbox of this test's own, where the fake Strava sends its code mails."""
    strava.mailbox = mail_server.new_mailbox()
    return strava.mailbox


@contextmanager
def browser_page(chromium: str):
    """A page in a fresh headless Chromium, and the list its console errors and uncaught exceptions go to."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on('console', lambda message: message.type == 'error' and errors.append(message.text))
            page.on('pageerror', lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def cookie_export(strava: FakeStrava, lifetime: int | None = None, session: bool = True) -> str:
    """A Cookie-Editor style JSON export of a logged-in browser on the fake."""
    return strava.cookie_export(lifetime, session)


@dataclass
class Redirector:
    url: str
    process: subprocess.Popen
    data_dir: Path
    log_path: Path

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault('timeout', 30)
        kwargs.setdefault('allow_redirects', False)
        return requests.get(self.url + path, **kwargs)

    def health(self) -> dict:
        return self.get('/healthz').json()

    def wait_until(self, condition, timeout: float = 60, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f'condition not met within {timeout} s; server log:\n{self.logs()}')

    def logs(self) -> str:
        return self.log_path.read_text(errors='replace')

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def redirector_env(strava: FakeStrava, data_dir: Path, **settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HEATMAP_', 'STRAVA_', 'APIFY_'))}
    env.update({'HEATMAP_DATA_DIR': str(data_dir), 'HEATMAP_AUTH': 'session', 'NO_COLOR': '1',
                'HEATMAP_BASEMAP_URL': '', 'HEATMAP_PLACE_SEARCH_URL': '',  # no test asks the internet
                **strava.server_settings()})
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_cli(*args: str, env: dict, stdin: str | None = None, prefix: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, 'redirector.py', *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def start_redirector(tmp_path, strava):
    """Start `python redirector.py` against the fakes; the settings are environment variables."""
    started: list[Redirector] = []

    def start(data_dir: Path | None = None, expect_up: bool = True, prefix: tuple = (), cwd: Path = ROOT,
              **settings) -> Redirector:
        data_dir = data_dir or tmp_path / 'data'
        port = free_port()
        env = redirector_env(strava, data_dir, HEATMAP_PORT=port, **settings)
        log_path = tmp_path / f'redirector-{port}.log'
        with open(log_path, 'w') as log:
            process = subprocess.Popen([*prefix, sys.executable, 'redirector.py'], cwd=cwd, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        server = Redirector(f'http://127.0.0.1:{port}', process, data_dir, log_path)
        started.append(server)
        if expect_up:
            def up():
                if process.poll() is not None:
                    raise AssertionError(f'the server exited with {process.returncode}:\n{server.logs()}')
                try:
                    return requests.get(server.url + '/livez', timeout=1).ok
                except (requests.ConnectionError, requests.Timeout):  # bound, still making the app
                    return False
            server.wait_until(up, timeout=15, interval=0.05)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope='session')
def unprivileged() -> tuple:
    """A command prefix that runs a program without the power to ignore file permissions.

    Root reads every file whatever its mode; the faults a VPS meets (a cookies.json owned by root,
    a data directory owned by another user) only show without that power.
    """
    if os.geteuid() != 0:
        return ()
    if shutil.which('setpriv') is None:
        pytest.fail("the permission tests run as root and need util-linux's setpriv to drop root's file powers",
                    pytrace=False)
    caps = '-dac_override,-dac_read_search,-fowner,-chown'
    return ('setpriv', f'--bounding-set={caps}', f'--inh-caps={caps}')


@pytest.fixture(scope='session')
def josm_maps_xsd(tmp_path_factory) -> Path:
    """JOSM's own schema for imagery entries, taken from Debian's josm package rather than copied here."""
    if os.environ.get('JOSM_MAPS_XSD'):
        return Path(os.environ['JOSM_MAPS_XSD'])
    jar = Path('/usr/share/josm/josm.jar')
    work = tmp_path_factory.mktemp('josm')
    if not jar.exists():
        fetched = subprocess.run('apt-get download josm && dpkg-deb -x josm_*.deb unpacked', shell=True, cwd=work,
                                 capture_output=True, text=True, timeout=300)
        jar = work / 'unpacked' / 'usr' / 'share' / 'josm' / 'josm.jar'
        if fetched.returncode != 0 or not jar.exists():
            pytest.fail("JOSM's maps.xsd is needed: install Debian's josm package, let `apt-get download josm` reach "
                        f'the Debian mirror, or set JOSM_MAPS_XSD ({fetched.stderr.strip()[-200:]})', pytrace=False)
    with zipfile.ZipFile(jar) as archive:
        schema = work / 'maps.xsd'
        schema.write_bytes(archive.read('data/maps.xsd'))
    return schema


def npm_tool(tmp_path_factory, package: str, command: str, needed_by: str) -> Path:
    """Install an npm package into a folder of its own and return its command; fail (never skip) without npm."""
    prefix = tmp_path_factory.mktemp(package.split('@')[0])
    if shutil.which('npm') is None:
        pytest.fail(f'{needed_by} needs npm (Node.js) to install {package}', pytrace=False)
    done = subprocess.run(['npm', 'install', '--silent', '--no-audit', '--no-fund', '--prefix', str(prefix),
                           package], capture_output=True, text=True, timeout=600)
    tool = prefix / 'node_modules' / '.bin' / command
    if done.returncode != 0 or not tool.exists():
        pytest.fail(f'could not install {package} from npm: {done.stderr.strip()[-300:]}', pytrace=False)
    return tool


@pytest.fixture(scope='session')
def apify_cli(tmp_path_factory) -> Path:
    """Apify's own command-line tool (npm's apify-cli), which validates an actor as the console does."""
    return npm_tool(tmp_path_factory, 'apify-cli', 'apify', 'the Apify CLI test')


@pytest.fixture(scope='session')
def web_ext(tmp_path_factory) -> Path:
    """Mozilla's web-ext (npm), whose linter checks an extension as addons.mozilla.org does."""
    return npm_tool(tmp_path_factory, 'web-ext@10', 'web-ext', 'the extension lint test')


SERVER_FIXTURES = {'_strava_server', '_osm_server', '_apify_server', 'mail_server', 'chromium', 'start_redirector'}


def pytest_collection_modifyitems(items):
    """Mark the tests that start a fake or the redirector, so that ``-m 'not server'`` runs the unit tests alone."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.server)
