"""Cookies pushed by the user's own browser, and imports after Strava refused the stored cookies."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, sync_playwright

from actor.src.login import BROWSER_FLAGS
from tests.conftest import PASSWORD, ROOT, free_port, redirector_env, run_cli
from tests.test_cli import one_line_error
from tests.test_tiles import heat_tile, import_cookies

ADMIN = 'admin-token'


def refused_and_session_ended(server, strava, revoked) -> dict:
    """Strava ends the session and revokes the tile cookies; the server finds out on the next tile.

    Returns the tile cookies the user's browser still holds from before: time-valid, but refused now.
    """
    held = strava.tile_cookies()
    revoked()
    strava.end_all_sessions()
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 503
    server.wait_until(lambda: 'session has expired' in (server.health()['reason'] or ''), timeout=20)
    return held


@pytest.mark.parametrize('way', ['import-cookies', 'admin', 'browser'])
def test_an_import_after_strava_refused_the_cookies_brings_tiles_back_at_once(way, start_redirector, strava, tmp_path,
                                                                              revoked):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ADMIN_TOKEN=ADMIN)
    token = pair(strava, server)
    held = refused_and_session_ended(server, strava, revoked)
    # The user logs in again in the browser, which still holds yesterday's (now refused) tile cookies.
    export = strava.cookie_export(tiles=held)

    if way == 'import-cookies':
        done = run_cli('import-cookies', '-', env=redirector_env(strava, server.data_dir), stdin=export)
        assert done.returncode == 0, done.stderr
    elif way == 'admin':
        answer = requests.post(server.url + '/admin/cookies', data=export, timeout=10,
                               headers={'Authorization': f'Bearer {ADMIN}'})
        assert answer.status_code == 200, answer.text
    else:
        answer = push(server, token, json.loads(export))
        assert answer.json()['kept'] is True, answer.text

    z, x, y = heat_tile(start=4450)
    server.wait_until(lambda: server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200,
                      timeout=30)  # half the minute of rejection cool-down: the import ends it
    assert server.health()['ok'], 'with tile cookies from the new session'


# -- pushes over HTTP, as the extension sends them -----------------------------------------------

def browser_api(cookies: dict[str, str], domain: str = '.strava.com') -> list[dict]:
    """Cookies as the browser's cookie API (``chrome.cookies.getAll``) gives them."""
    return [{'domain': domain, 'expirationDate': time.time() + 30 * 86400, 'hostOnly': not domain.startswith('.'),
             'httpOnly': name.startswith('_strava4'), 'name': name, 'path': '/',
             'sameSite': 'no_restriction' if name.startswith('CloudFront') else 'unspecified', 'secure': True,
             'session': False, 'storeId': '0', 'value': value} for name, value in cookies.items()]


def logged_in_browser(strava, session: str | None = None, tiles: dict | None = None) -> list[dict]:
    """What a browser logged in to the fake holds of the cookies the extension sends."""
    cookies = {'_strava4_session': session or strava.new_session(),
               **strava.remember_cookies(strava.accounts['rider@example.com']), **(tiles or {})}
    return browser_api(cookies)


def pair(strava, server, name: str = 'laptop') -> str:
    done = run_cli('pair', name, env=redirector_env(strava, server.data_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def push(server, token: str, cookies, **kwargs) -> requests.Response:
    return requests.post(server.url + '/browser/cookies', json=cookies, timeout=60,
                         headers={'Authorization': f'Bearer {token}', **kwargs.pop('headers', {})}, **kwargs)


def stored(server) -> dict[str, str]:
    document = json.loads((server.data_dir / 'cookies.json').read_text())['state']['1']
    return {c['name']: c['value'] for c in document['cookies']}


@pytest.fixture
def working(start_redirector, strava, tmp_path):
    """A server with a working session and tile cookies (imported from another device), and a paired browser."""
    import_cookies(strava, tmp_path / 'data', lifetime=7200)
    server = start_redirector(HEATMAP_LOG_LEVEL='DEBUG')
    return server, pair(strava, server)


def test_a_pushed_session_is_tried_before_it_replaces_the_stored_one(working, strava):
    server, token = working
    before = stored(server)
    strava.counters.clear()

    dead = push(server, token, logged_in_browser(strava, session='ended-' + '0' * 34))
    assert dead.status_code == 200 and dead.headers['Access-Control-Allow-Origin'] == '*'
    assert dead.json()['kept'] is False and 'did not accept this session' in dead.json()['result']
    assert dead.json()['ok'] is True, 'the stored cookies still work'
    assert strava.counters['maps'] == 1 and stored(server) == before

    fresh = logged_in_browser(strava)
    kept = push(server, token, fresh)
    assert kept.json()['kept'] is True and kept.json()['result'].startswith('kept: Strava accepted this session')
    assert strava.counters['maps_ok'] == 1
    assert stored(server)['_strava4_session'] == fresh[0]['value']
    assert stored(server)['strava_remember_token'] == fresh[2]['value'], 'the remember cookies stay with the session'
    assert stored(server)['CloudFront-Policy'] != before['CloudFront-Policy'], 'new tile cookies from the session'
    assert server.health()['cookies']['source'] == 'browser'

    again = push(server, token, fresh)
    assert again.json() == {**again.json(), 'kept': False, 'result': 'unchanged: the server holds this session already'}
    assert strava.counters['maps'] == 2, 'the same session is not tried twice'
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200


def test_a_visitor_session_never_replaces_a_working_one(working, strava):
    server, token = working
    before = stored(server)
    strava.counters.clear()
    visitor = browser_api({'_strava4_session': 'a-visitor-' + '0' * 30})  # no strava_remember_id
    answer = push(server, token, visitor)
    assert answer.status_code == 200
    assert answer.json()['kept'] is False and "visitor's session" in answer.json()['result']
    assert 'log in to Strava in this browser' in answer.json()['result']
    assert stored(server) == before and strava.counters['maps'] == 0
    assert server.health()['browsers'][0]['last_result'] == answer.json()['result']


def test_pushed_tile_cookies_replace_the_stored_ones_only_when_they_last_longer(working, strava):
    server, token = working
    before = stored(server)
    session = {name: before[name] for name in ('_strava4_session', 'strava_remember_id', 'strava_remember_token')}
    expires = server.health()['cookies']['expires_at']

    shorter = push(server, token, browser_api({**session, **strava.tile_cookies(3600)}))
    assert shorter.json()['kept'] is False and stored(server) == before
    assert server.health()['cookies']['expires_at'] == expires

    longer_tiles = strava.tile_cookies(5 * 3600)
    unrelated = browser_api({'_ga': 'GA1.2.unrelated-value-1234'})
    longer = push(server, token, browser_api({**session, **longer_tiles}) + unrelated)
    assert longer.json()['kept'] is True and 'last longer' in longer.json()['result']
    assert stored(server)['CloudFront-Signature'] == longer_tiles['CloudFront-Signature']
    assert stored(server)['_strava4_session'] == session['_strava4_session']
    assert server.health()['cookies']['expires_at'] > expires
    assert '_ga' not in stored(server), 'only the cookies the server needs are kept'
    assert 'browser \'laptop\' sent cookies named _strava4_session' in server.logs()


def test_a_burst_of_identical_pushes_asks_strava_once(working, strava):
    server, token = working
    strava.maps_latency = 0.5  # the pushes arrive while the first one is being tried
    strava.counters.clear()
    fresh, dead = logged_in_browser(strava), logged_in_browser(strava, session='ended-' + '1' * 34)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda cookies: push(server, token, cookies), [fresh] * 12))
    assert {a.status_code for a in answers} <= {200, 202}, 'judged, or queued while a few wait for the judgement'
    assert any(a.status_code == 200 and a.json()['kept'] for a in answers)
    assert all(a.json()['result'].startswith('queued') for a in answers if a.status_code == 202)
    assert strava.counters['maps'] == 1
    assert stored(server)['_strava4_session'] == fresh[0]['value']
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda cookies: push(server, token, cookies), [dead] * 12))
    assert {a.json()['kept'] for a in answers} == {False}
    assert strava.counters['maps'] == 2, 'a session Strava refused is not tried again at once'


def test_a_browser_pushing_one_session_after_another_asks_strava_at_a_slowing_pace(working, strava):
    server, token = working
    strava.counters.clear()
    stop = threading.Event()

    def push_dead_sessions(worker: int) -> int:
        pushed = 0
        while not stop.is_set():
            push(server, token, logged_in_browser(strava, session=f'ended-{worker}-{pushed:032d}'))
            pushed += 1
        return pushed

    with ThreadPoolExecutor(4) as pool:
        pushers = [pool.submit(push_dead_sessions, worker) for worker in range(4)]
        time.sleep(12)
        stop.set()
        pushed = sum(pusher.result() for pusher in pushers)
    assert pushed > 100, 'the flood reached the server'
    # Tried at once, then 2, 4 and 8 s after each refusal: 3 tries in 12 s (a few hundred without spacing).
    assert 2 <= strava.counters['maps'] <= 4, strava.counters
    assert not stored(server)['_strava4_session'].startswith('ended-'), 'nothing refused was kept'

    fresh = logged_in_browser(strava)
    kept = push(server, token, fresh)  # a real login in the browser still gets through, after the spacing
    assert kept.status_code == 200 and kept.json()['kept'] is True, kept.text
    assert stored(server)['_strava4_session'] == fresh[0]['value']


def test_a_session_strava_cannot_check_now_is_kept_only_when_nothing_else_works(start_redirector, strava, tmp_path):
    server = start_redirector(HEATMAP_BACKOFF_MIN=2)
    token = pair(strava, server)
    strava.maps_status = 503
    cookies = logged_in_browser(strava)
    answer = push(server, token, cookies)
    assert answer.status_code == 200 and answer.json()['kept'] is True
    assert answer.json()['result'].startswith('kept without a check') and '503' in answer.json()['result']
    assert answer.json()['ok'] is False
    assert stored(server)['_strava4_session'] == cookies[0]['value']
    strava.maps_status = None
    server.wait_until(lambda: server.health()['ok'], timeout=30)  # the server tried it again by itself

    other = logged_in_browser(strava)
    strava.maps_status = 503
    answer = push(server, token, other)
    assert answer.json()['kept'] is False and answer.json()['result'].startswith('not checked')
    assert stored(server)['_strava4_session'] == cookies[0]['value'], 'what works stays'


def test_the_push_route_refuses_wrong_revoked_and_admin_tokens_and_bad_bodies(working, strava):
    server, token = working
    cookies = logged_in_browser(strava)
    wrong = push(server, 'not-the-token-' + token[:10], cookies)
    assert wrong.status_code == 403 and 'pair this browser again' in wrong.text
    assert wrong.headers['Access-Control-Allow-Origin'] == '*', 'the extension can read why'
    assert requests.post(server.url + '/browser/cookies', json=cookies, timeout=10).status_code == 403
    assert 'refused a browser push with a missing or wrong token from 127.0.0.1' in server.logs()

    for body in ('_strava4_session=abc', '{"_strava4_session": "abc"}', '[1, 2]', '[{"name": "x", "value": "y"}]'):
        bad = push(server, token, None, data=body, headers={'Content-Type': 'application/json'})
        assert bad.status_code == 400 and len(bad.text.strip().splitlines()) == 1, body
        assert bad.headers['Access-Control-Allow-Origin'] == '*'

    too_large = push(server, token, None, data=b'[' + b' ' * 2 ** 20 + b']')
    assert too_large.status_code == 413 and too_large.headers['Access-Control-Allow-Origin'] == '*'

    for path in ('/admin/cookies', '/admin/refresh'):  # a push token can only push
        assert requests.post(server.url + path, headers={'Authorization': f'Bearer {token}'}, timeout=10,
                             data=json.dumps(cookies)).status_code in (403, 404)

    preflight = requests.options(server.url + '/browser/cookies', timeout=10, headers={
        'Origin': 'chrome-extension://abcdefghijklmnop', 'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'authorization,content-type'})
    assert preflight.status_code == 204 and preflight.headers['Access-Control-Allow-Origin'] == '*'
    assert preflight.headers['Access-Control-Allow-Methods'] == 'POST'
    assert {h.strip().lower() for h in preflight.headers['Access-Control-Allow-Headers'].split(',')} == {
        'authorization', 'content-type'}
    for path in ('/healthz', '/admin/cookies', '/tiles/all/hot/13/4400/2686.png'):
        other = requests.options(server.url + path, timeout=10, headers={'Origin': 'https://example.org'})
        assert other.status_code == 405 and 'Access-Control-Allow-Origin' not in other.headers, path

    revoked = run_cli('pair', '--revoke', 'laptop', env=redirector_env(strava, server.data_dir))
    assert revoked.returncode == 0 and 'revoked' in revoked.stdout
    assert push(server, token, cookies).status_code == 403
    logs = server.logs()
    assert token not in logs and token[:12] not in logs


def test_pair_prints_the_token_last_stores_only_its_hash_and_says_each_mistake_in_one_line(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data')
    done = run_cli('pair', 'laptop', env=env)
    assert done.returncode == 0, done.stderr
    where, token = done.stdout.strip().splitlines()
    assert 'options page of the extension' in where and len(token) >= 40
    store = tmp_path / 'data' / 'browsers.json'
    assert token not in store.read_text() and hashlib.sha256(token.encode()).hexdigest() in store.read_text()
    assert oct(store.stat().st_mode & 0o777) == '0o600'

    listed = run_cli('pair', '--list', env=env)
    assert listed.returncode == 0 and listed.stdout.startswith('laptop: paired ') and 'no push yet' in listed.stdout
    again = run_cli('pair', 'laptop', env=env).stdout.strip().splitlines()
    assert 'no longer works' in again[0] and again[-1] != token
    assert 'browser laptop: paired' in run_cli('status', env=env).stdout

    one_line_error(run_cli('pair', env=env), 'NAME')
    one_line_error(run_cli('pair', 'rm -rf /; x', env=env), "a browser's name is 1 to 40 letters")
    one_line_error(run_cli('pair', 'phone', '--list', env=env), 'not both')
    one_line_error(run_cli('pair', '--revoke', 'desktop', env=env), "no browser named 'desktop'")
    assert run_cli('pair', '--revoke', 'laptop', env=env).returncode == 0
    assert 'no browser is paired' in run_cli('pair', '--list', env=env).stdout


# -- the extension in a real Chromium --------------------------------------------------------------

NEEDED = {'_strava4_session', 'strava_remember_id', 'strava_remember_token', 'CloudFront-Key-Pair-Id',
          'CloudFront-Policy', 'CloudFront-Signature', '_strava_idcf', '_strava_CloudFront-Expires'}
RECEIVED = re.compile(r"browser 'laptop' sent cookies named (.*)")


@dataclass
class ExtensionBrowser:
    """A Chromium with the extension loaded, its options page open."""

    context: BrowserContext
    extension_id: str
    options: Page | None = None

    def save_options(self, server: str, token: str, strava: str) -> str:
        """Fill in the options page and save; returns what it says then."""
        if self.options is None:
            self.options = self.context.new_page()
            self.options.goto(f'chrome-extension://{self.extension_id}/options.html')
        before = self.options.get_attribute('#state', 'data-at')
        self.options.fill('input[name=server]', server)
        self.options.fill('input[name=token]', token)
        self.options.fill('input[name=strava]', strava)
        self.options.click('button[type=submit]')
        self.options.wait_for_function('at => ![at, ""].includes(document.getElementById("state").dataset.at)',
                                       arg=before)
        return self.state()

    def state(self) -> str:
        return self.options.text_content('#state')

    def status(self) -> dict:
        return self.options.evaluate("chrome.storage.local.get('status').then(saved => saved.status)")

    def badge(self) -> str:
        return self.options.evaluate('chrome.action.getBadgeText({})')

    def cookies(self) -> dict[str, str]:
        return {c['name']: c['value'] for c in self.context.cookies()}

    def open_login_page(self, strava) -> Page:
        page = self.context.new_page()
        page.goto(strava.url + '/login')
        page.click('[data-cy=deny-cookies]')
        return page

    def log_in(self, page: Page) -> float:
        """Log in on the fake's two-step page; returns when the login was sent (monotonic)."""
        page.fill('#desktop-email', 'rider@example.com')
        page.click('.desktop button[type=submit]')
        page.click('.desktop [data-testid=use-password-cta] button')
        page.fill('#desktop-password', PASSWORD)
        sent = time.monotonic()
        page.click('.desktop button[type=submit]')
        page.wait_for_selector('text=Logged in')
        return sent

    def log_out(self, strava) -> None:
        page = self.context.new_page()
        page.goto(strava.url + '/onboarding')
        page.click('#log-out')
        page.wait_for_url('**/login')


@pytest.fixture
def extension_browser(chromium, tmp_path, strava):
    """Chromium with a copy of extension/ whose manifest also lets it read the fake Strava's cookies."""
    strava.block_browsers = 'none'  # the user's own browser is no robot
    strava.post_login_navigation = False
    copy = tmp_path / 'extension'
    shutil.copytree(ROOT / 'extension', copy)
    manifest = json.loads((copy / 'manifest.json').read_text())
    manifest['host_permissions'].append('http://127.0.0.1/*')
    (copy / 'manifest.json').write_text(json.dumps(manifest))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / 'profile', executable_path=chromium, headless=True,
            args=[f'--disable-extensions-except={copy}', f'--load-extension={copy}', *BROWSER_FLAGS])
        try:
            worker = context.service_workers[0] if context.service_workers else context.wait_for_event(
                'serviceworker', timeout=30_000)
            yield ExtensionBrowser(context, worker.url.split('/')[2])
        finally:
            context.close()


def elsewhere(server) -> str:
    """The server's address by a name the extension has no host permission for, as a real server's: CORS applies."""
    return server.url.replace('127.0.0.1', 'localhost')


def judged_after(browser: ExtensionBrowser, seen: str, kind: str):
    """A condition: the extension judged the cookies again since ``seen`` and came to ``kind``."""
    def condition():
        status = browser.status()
        return status['at'] != seen and status['kind'] == kind and status
    return condition


def test_a_login_in_the_paired_browser_serves_tiles_with_no_command_run(start_redirector, strava, extension_browser):
    server = start_redirector(HEATMAP_LOG_LEVEL='DEBUG')
    token = pair(strava, server)
    refused = extension_browser.save_options(elsewhere(server), token[::-1], strava.url)
    assert 'The server refused the push token: pair this browser again' in refused
    assert extension_browser.badge() == '!'
    nobody = f'http://localhost:{free_port()}'
    assert 'cannot be reached from this browser' in extension_browser.save_options(nobody, token, strava.url)
    assert extension_browser.badge() == '?'
    paired = extension_browser.save_options(elsewhere(server), token, strava.url)
    assert paired.startswith(f'Paired with {elsewhere(server)}.') and 'Not logged in to Strava' in paired
    assert server.health()['browsers'][0]['last_result'].startswith('nothing to judge')

    sent = extension_browser.log_in(extension_browser.open_login_page(strava))
    z, x, y = heat_tile()
    server.wait_until(lambda: server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200, timeout=60)
    print(f'from the login in the browser to the first tile served: {time.monotonic() - sent:.1f} s')
    assert time.monotonic() - sent < 60, 'pushed on the login, not by the hourly alarm'

    server.wait_until(lambda: 'The server has working Strava cookies' in extension_browser.state(), timeout=10)
    assert extension_browser.state().startswith(f'Paired with {elsewhere(server)}. Last push ')
    assert extension_browser.badge() == 'OK'
    listed = server.health()['browsers']
    assert [b['name'] for b in listed] == ['laptop'] and listed[0]['last_result'].startswith('kept: Strava accepted')
    assert 'laptop: last push' in server.get('/').text
    assert 'browser laptop: last push' in run_cli('status', env=redirector_env(strava, server.data_dir)).stdout

    held = extension_browser.cookies()
    assert {'sp', '_ga'} <= held.keys(), "the site's analytics cookies are in this browser"
    logs = server.logs()
    received = {name for line in RECEIVED.findall(logs) for name in line.split(', ')}
    assert received and received <= NEEDED, received
    files = b''.join(path.read_bytes() for path in server.data_dir.rglob('*') if path.is_file())
    for name in ('sp', '_ga'):
        assert held[name] not in logs and held[name].encode() not in files
    assert token not in logs and token.encode() not in files, 'the token is in no log and no file'
    assert hashlib.sha256(token.encode()).hexdigest() in (server.data_dir / 'browsers.json').read_text()


def test_a_visitor_session_or_a_logout_in_the_browser_never_replaces_a_working_session(start_redirector, strava,
                                                                                      extension_browser, tmp_path):
    import_cookies(strava, tmp_path / 'data')  # a working session from another device
    server = start_redirector(HEATMAP_LOG_LEVEL='DEBUG')
    extension_browser.save_options(elsewhere(server), pair(strava, server), strava.url)
    before = stored(server)

    seen = extension_browser.status()['at']
    login = extension_browser.open_login_page(strava)  # Strava gives this browser a visitor's session
    visitor = extension_browser.cookies()['_strava4_session']
    server.wait_until(judged_after(extension_browser, seen, 'logged-out'), timeout=30)
    assert stored(server) == before and not RECEIVED.search(server.logs()), 'nothing was sent'

    extension_browser.log_in(login)
    own = extension_browser.cookies()['_strava4_session']
    server.wait_until(lambda: stored(server)['_strava4_session'] == own, timeout=20)  # a session that works

    seen = extension_browser.status()['at']
    extension_browser.log_out(strava)
    server.wait_until(judged_after(extension_browser, seen, 'logged-out'), timeout=30)
    assert extension_browser.cookies()['_strava4_session'] not in (own, visitor), 'a new visitor session'
    assert stored(server)['_strava4_session'] == own
    assert server.health()['ok'] is True
    assert len(RECEIVED.findall(server.logs())) == 1, 'only the login was sent'
    assert visitor not in server.logs() + (server.data_dir / 'cookies.json').read_text()


def test_after_strava_ends_the_session_a_new_login_in_the_browser_brings_tiles_back(start_redirector, strava,
                                                                                   extension_browser, revoked):
    server = start_redirector()
    extension_browser.save_options(elsewhere(server), pair(strava, server), strava.url)
    extension_browser.log_in(extension_browser.open_login_page(strava))
    server.wait_until(lambda: server.health()['ok'], timeout=20)

    revoked()
    strava.end_all_sessions()  # Strava ends the session: the tile cookies it gave stop working too
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 503
    server.wait_until(lambda: 'session has expired' in (server.health()['reason'] or ''), timeout=20)
    assert 'log in to Strava again in a browser paired with this server' in server.get('/').text

    sent = extension_browser.log_in(extension_browser.open_login_page(strava))
    server.wait_until(lambda: server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200, timeout=60)
    assert time.monotonic() - sent < 60, 'pushed on the login, not by the hourly alarm'
    assert server.health()['ok'] and server.health()['cookies']['source'] == 'browser'
