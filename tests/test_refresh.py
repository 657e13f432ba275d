"""Getting new cookies: before expiry, once however many tiles wait, by session, Apify or a local login."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from actor.src.mailbox import UNREACHABLE
from heatmap.status import iso
from tests.conftest import PASSWORD, REFRESH_POLL, WATCH, redirector_env, run_cli, stays
from tests.fake_strava import EXPIRY_COOKIES, expiries
from tests.test_tiles import heat_tile, import_cookies


def fetch_all(server, paths: list[str], workers: int = 200) -> list[int]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda path: server.get(path, timeout=60).status_code, paths))


def fetch_all_at_once(server, paths: list[str]) -> list[int]:
    """The statuses of ``paths`` asked all at once: every request sent from one thread before any answer is read,
    so that no client thread starved of the interpreter lock sends its head after the server's head deadline."""
    host, port = server.url.removeprefix('http://').split(':')
    connections = []
    for path in paths:
        connection = socket.create_connection((host, int(port)), timeout=60)
        connection.sendall(f'GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n'.encode())
        connections.append(connection)
    statuses = []
    for connection in connections:
        with connection, connection.makefile('rb') as answer:
            statuses.append(int(answer.readline().split()[1]))
    return statuses


def distinct_tiles(count: int, start: int = 4400) -> list[str]:
    return [f'/tiles/all/hot/14/{start + i}/5372.png' for i in range(count)]


def no_second_refresh(server, strava, counter: str = 'maps_ok') -> None:
    """Exactly one refresh so far, and none more in a watch of many of the worker's looks (HEATMAP_REFRESH_POLL);
    then the positive control: cookies that come due now, which only the worker's look notices (an expired set
    imported by the command line, behind the server's back), are refreshed within a watch as long."""
    stays(lambda: strava.counters[counter], 1, what=f'the refreshes (the fake\'s {counter})')
    strava.maps_latency = 0
    import_cookies(strava, server.data_dir, lifetime=-60, force=True)
    server.wait_until(lambda: strava.counters['maps_ok'] >= 2, timeout=WATCH, interval=0.05)


def test_expired_cookies_under_200_concurrent_requests_trigger_exactly_one_refresh(start_redirector, strava,
                                                                                   tmp_path):
    import_cookies(strava, tmp_path / 'data', lifetime=-60)
    strava.maps_latency = 1.5  # the 200 requests arrive while the refresh is still under way
    server = start_redirector(HEATMAP_THREADS=32, HEATMAP_REFRESH_POLL=REFRESH_POLL)

    statuses = fetch_all_at_once(server, distinct_tiles(200))

    assert statuses == [200] * 200
    assert strava.counters['tiles_denied'] == 0
    assert server.health()['cookies']['source'] == 'session'
    no_second_refresh(server, strava, 'maps')


def test_cookies_expiring_during_load_are_renewed_once_without_a_failed_tile(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data', lifetime=6)
    server = start_redirector(HEATMAP_REFRESH_BEFORE=3, HEATMAP_THREADS=32, HEATMAP_REFRESH_POLL=REFRESH_POLL)
    statuses = []
    for wave in range(8):  # ~8 s of load across the refresh and the old cookies' expiry
        statuses += fetch_all(server, distinct_tiles(25, start=4400 + wave * 25), workers=25)
        time.sleep(1)

    assert statuses == [200] * 200
    assert strava.counters['tiles_denied'] == 0
    no_second_refresh(server, strava)


def test_cookies_strava_revokes_early_are_renewed_within_the_request(start_redirector, strava, tmp_path, revoked):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_REFRESH_POLL=REFRESH_POLL)
    strava.counters.clear()
    revoked()  # Strava rotated its keys: the stored cookies stop working
    z, x, y = heat_tile()
    first = server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    assert first.status_code == 200, first.text
    assert server.health()['cookies']['source'] == 'session'
    no_second_refresh(server, strava)


def stored(data_dir) -> dict:
    return json.loads((data_dir / 'cookies.json').read_text())['state']['1']


@pytest.mark.parametrize('earliest', EXPIRY_COOKIES)
def test_the_cookie_that_expires_first_sets_the_expiry_and_the_refresh_whichever_it_is(start_redirector, strava,
                                                                                       tmp_path, earliest):
    strava.earliest_expiry, strava.policy_statements = earliest, 3  # the policy's earliest date in its last statement
    export = strava.cookie_export(2000)  # the earliest expiry in 2000 s, the other two 300 and 600 s later
    imported = expiries({c['name']: c['value'] for c in json.loads(export)})
    done = run_cli('import-cookies', '-', env=redirector_env(strava, tmp_path / 'data'), stdin=export)
    assert done.returncode == 0, done.stderr
    assert stored(tmp_path / 'data')['expires_at'] == imported[earliest]

    server = start_redirector(HEATMAP_REFRESH_BEFORE=2150, HEATMAP_REFRESH_POLL=REFRESH_POLL)  # due by it alone
    server.wait_until(lambda: server.health()['cookies']['source'] == 'session', timeout=WATCH, interval=0.05)
    renewed = expiries({c['name']: c['value'] for c in stored(server.data_dir)['cookies']})
    assert min(renewed, key=renewed.get) == earliest
    assert server.health()['cookies']['expires_at'] == iso(renewed[earliest])
    assert strava.counters['maps_ok'] == 1


def test_dead_session_logs_in_through_apify_and_tiles_work(start_redirector, strava, apify, tmp_path):
    import_cookies(strava, tmp_path / 'data', lifetime=-60)
    strava.end_all_sessions()
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD)

    server.wait_until(lambda: server.health()['cookies']['valid'], timeout=90)
    health = server.health()
    assert health['cookies']['source'] == 'apify'
    assert apify.counters['runs'] == 1
    assert strava.counters['login_ok'] == 1
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200


BACKOFF = 1  # HEATMAP_BACKOFF_MIN of the tests of what a failed login waits for: retries come 1, 3, 7 s after
WINDOW = 4 * BACKOFF  # how long they watch: a failure that may be retried is retried twice within it
# How a login ends, as the Apify run's status message says (the actor's words), or the setting Apify refuses.
WAITS_FOR_THE_USER = {
    'captcha': 'captcha: Strava asked to solve a captcha (a reCAPTCHA challenge)',
    'blocked': "blocked: Strava's bot protection refused this browser (403 on /login/request_otp)",
    'bad_credentials': 'bad_credentials: Strava says the email or password is incorrect',
    'otp_required': 'otp_required: this account can only log in with the code Strava emails',
    'session_expired': 'session_expired: Strava ended the session during the login',
    'redirect_refused': 'redirect_refused: Strava refuses query-signed tile URLs',
    'mailbox_failed': 'mailbox_failed: the mail server 127.0.0.1 refused the login of rider: [AUTHENTICATIONFAILED]',
    'apify_token': {'APIFY_TOKEN': 'apify_api_NOT_THE_TOKEN'},
    'apify_actor': {'APIFY_ACTOR': 'me~no-such-actor'},
    'code_rejected': 'code_rejected: Strava refused the code read from the mailbox',  # the second time in a row
}
TEMPORARY = {
    'timeout': 'timeout: Strava did not answer within 120 s',
    'unreachable': 'unreachable: the Strava heatmap page answered 503',
    'page_changed': 'page_changed: no password field after the email step',
    'code_not_received': 'code_not_received: no mail from a strava.com sender with a 6-digit code within 120 s',
    'mailbox_failed': f'mailbox_failed: the mail server 127.0.0.1:993 {UNREACHABLE} for rider (ConnectionRefusedError)',
    'browser_missing': 'browser_missing: Chromium did not start',
    'login_failed': 'Actor crashed',  # a status message without a reason code
}


def logins_started(server) -> int:
    return server.logs().count('refresh started: apify (r***@example.com)')


@pytest.mark.parametrize('reason, ending, waits', [
    *((reason, ending, True) for reason, ending in WAITS_FOR_THE_USER.items()),
    *((reason, ending, False) for reason, ending in TEMPORARY.items()),
], ids=[*(f'{r}_waits' for r in WAITS_FOR_THE_USER), *(f'{r}_is_retried' for r in TEMPORARY)])
def test_a_failed_login_waits_for_the_user_only_when_its_reason_says_trying_again_cannot_help(
        start_redirector, strava, apify, reason, ending, waits):
    settings = dict(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token, APIFY_ACTOR=apify.actor_id,
                    STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD, HEATMAP_BACKOFF_MIN=BACKOFF,
                    HEATMAP_REFRESH_POLL=REFRESH_POLL)
    if isinstance(ending, dict):
        settings.update(ending)  # Apify's API refuses the run
    else:
        apify.script = lambda run_input: ('FAILED', ending, [])
    server = start_redirector(**settings)
    tries = 2 if reason == 'code_rejected' else 1  # a refused code is tried once more: the mail may have been wrong
    server.wait_until(lambda: logins_started(server) == tries and server.health()['accounts'][0]['last_error'],
                      interval=0.05)

    if waits:
        stays(lambda: logins_started(server), tries, WINDOW, 'the logins started')
        assert apify.counters['runs'] == (0 if isinstance(ending, dict) else tries)
        state = f'waiting for you ({reason})'
    else:  # the positive control: the same watch sees the retries a temporary failure gets
        server.wait_until(lambda: logins_started(server) >= 3, timeout=WINDOW, interval=0.05)
        state = 'next try after '
    health = server.wait_until(lambda: server.health()['accounts'][0]['state'].startswith(state) and server.health())
    assert health['ok'] is False
    if not isinstance(ending, dict):
        assert health['accounts'][0]['last_error'] == f'Apify run FAILED: {ending}'
    status = run_cli('status', env=redirector_env(strava, server.data_dir, **settings))
    assert f'account r***@example.com: {state}' in status.stdout, status.stdout
    assert ('Automatic logins are paused' in server.get('/').text) is waits


def test_wrong_password_runs_once_reports_and_waits_for_the_user(start_redirector, strava, apify, tmp_path):
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com',
                              STRAVA_PASSWORD='wrong horse', HEATMAP_ADMIN_TOKEN='admin-token', HEATMAP_BACKOFF_MIN=1)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=90)
    assert 'bad_credentials' in error

    for _ in range(3):
        tile = server.get('/tiles/all/hot/13/4400/2686.png')
        assert tile.status_code == 503 and 'bad_credentials' in tile.text
    assert apify.counters['runs'] == 1, 'no retry: the test above watches that it stays so'
    assert strava.counters['login_post'] == 1

    refresh = requests.post(server.url + '/admin/refresh', headers={'Authorization': 'Bearer admin-token'}, timeout=5)
    assert refresh.status_code == 202
    server.wait_until(lambda: apify.counters['runs'] == 2, timeout=30)
    server.wait_until(lambda: strava.counters['login_post'] == 2, timeout=30)  # the forced login ran
    server.wait_until(lambda: not server.health()['refreshing'], timeout=30)  # and ended before the next test


def force_refreshes(server, seconds: float) -> list[str]:
    """What ``POST /admin/refresh`` answers when a script asks it four times a second for ``seconds``."""
    answers = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        answer = requests.post(server.url + '/admin/refresh', headers={'Authorization': 'Bearer admin-token'},
                               timeout=5)
        assert answer.status_code == 202
        answers.append(answer.text)
        time.sleep(0.25)
    return answers


def test_forced_refreshes_in_a_loop_never_log_in_in_a_loop(start_redirector, strava, apify, tmp_path):
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com',
                              STRAVA_PASSWORD='wrong horse', HEATMAP_ADMIN_TOKEN='admin-token', HEATMAP_BACKOFF_MIN=1,
                              HEATMAP_REFRESH_POLL=REFRESH_POLL)
    server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=90)
    forced = force_refreshes(server, 0.1)  # the admin who fixed something: the wait for the user is overridden
    server.wait_until(lambda: apify.counters['runs'] == 2, timeout=30)
    assert 'not forced again' not in forced[0]
    server.wait_until(lambda: not server.health()['refreshing'], timeout=30)  # that login failed too

    logins = strava.counters['login_post']
    answers = force_refreshes(server, 3 * WATCH)  # the same again, from a script, many times
    assert apify.counters['runs'] == 2 and strava.counters['login_post'] == logins
    assert 'the login of r***@example.com failed when it was last forced: it is not forced again before' in answers[-1]


def test_forced_refreshes_in_a_loop_ask_strava_every_few_seconds_at_most(start_redirector, strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token', HEATMAP_REFRESH_POLL=REFRESH_POLL)
    strava.counters.clear()
    answers = force_refreshes(server, 12)
    server.wait_until(lambda: not server.health()['refreshing'], timeout=10, interval=0.05)
    assert 2 <= strava.counters['maps_ok'] <= 3, 'one at once, then one every 5 s (48 without the spacing)'
    assert any('forced refreshes start at most every 5 s' in answer for answer in answers)


def test_failed_apify_api_backs_off_without_a_second_run(start_redirector, strava, apify, tmp_path):
    apify.script = lambda run_input: ('FAILED', 'timeout: Strava did not answer within 120 s', [])
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD,
                              HEATMAP_BACKOFF_MIN=4, HEATMAP_REFRESH_POLL=REFRESH_POLL)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=30, interval=0.05)
    assert 'timeout' in error
    stays(lambda: apify.counters['runs'], 1, 2, 'the runs before the backoff ends')
    server.wait_until(lambda: apify.counters['runs'] == 2, timeout=15)  # and the second run after it


def test_unreachable_apify_api_is_reported_and_backs_off(start_redirector, strava):
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL='http://127.0.0.1:9', APIFY_TOKEN='t',
                              APIFY_ACTOR='me~actor', STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD,
                              HEATMAP_BACKOFF_MIN=4, HEATMAP_REFRESH_POLL=REFRESH_POLL)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=60, interval=0.05)
    assert 'could not be reached' in error
    server.wait_until(lambda: 'next try at' in server.logs())
    stays(lambda: server.logs().count('refresh started: apify'), 1, 2, 'the tries before the backoff ends')
    server.wait_until(lambda: server.logs().count('refresh started: apify') == 2, timeout=15)  # and one after it
    assert server.process.poll() is None


def test_wrong_apify_token_is_named(start_redirector, strava, apify):
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN='not-the-token',
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=30)
    assert 'APIFY_TOKEN' in error
    assert 'not-the-token' not in server.logs()


def test_local_login_runs_the_actor_here(start_redirector, strava, chromium, tmp_path):
    server = start_redirector(HEATMAP_AUTH='local', STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD,
                              CHROMIUM_PATH=chromium)
    server.wait_until(lambda: server.health()['cookies']['valid'], timeout=90)
    assert server.health()['cookies']['source'] == 'local'
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200


def test_login_command_prints_the_new_expiry(strava, chromium, tmp_path):
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com',
                         STRAVA_PASSWORD=PASSWORD, CHROMIUM_PATH=chromium)
    failed = run_cli('login', env=env)
    assert failed.returncode == 1 and 'otp_required' in failed.stderr

    env['STRAVA_EMAIL'] = 'rider@example.com'
    done = run_cli('login', env=env)
    assert done.returncode == 0, done.stderr
    assert 'logged in with local (r***@example.com): ' in done.stdout and 'tile cookies expire' in done.stdout


def test_secrets_never_reach_the_logs(start_redirector, strava, apify, tmp_path):
    password = 'Very-Secret-Password-42'
    strava.accounts['rider@example.com'].password = password
    export = import_cookies(strava, tmp_path / 'data', lifetime=-60)
    strava.end_all_sessions()
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=password,
                              HEATMAP_LOG_LEVEL='DEBUG')
    server.wait_until(lambda: server.health()['cookies']['valid'], timeout=90)
    z, x, y = heat_tile()
    server.get(f'/tiles/all/hot/{z}/{x}/{y}.png')
    stored = (server.data_dir / 'cookies.json').read_text()
    values = [c['value'] for c in __import__('json').loads(stored)['state']['1']['cookies'] if len(c['value']) > 8]
    everything = server.logs() + export.stdout + export.stderr + server.get('/').text + requests.get(
        server.url + '/healthz', timeout=5).text
    assert password not in everything
    assert apify.token not in everything
    assert values and not [v for v in values if v in everything]


def test_apify_api_that_times_out_is_not_retried_until_the_backoff_ends(start_redirector, strava, apify):
    apify.start_delay = 3  # the start request answers after the client gave up
    apify.script = lambda run_input: ('FAILED', 'timeout: Strava did not answer within 120 s', [])  # not looked at
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD,
                              HEATMAP_UPSTREAM_TIMEOUT=1, HEATMAP_BACKOFF_MIN=4, HEATMAP_REFRESH_POLL=REFRESH_POLL)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=30, interval=0.05)
    assert 'could not be reached' in error
    # apify-client would retry a second after the timeout: the fake counts a start when it arrives, so a retried
    # start would show within the watch; the backoff's own try, 4 s after the timeout, shows after it
    stays(lambda: apify.counters['starts'], 1, 2.5, 'the start requests before the backoff ends')
    server.wait_until(lambda: apify.counters['starts'] == 2, timeout=15)
    assert server.logs().count('refresh started: apify') == 2
    assert server.process.poll() is None


def test_run_that_never_finishes_is_aborted_and_reported(start_redirector, strava, apify):
    apify.script = lambda run_input: (time.sleep(60), ('SUCCEEDED', 'too late', []))[1]
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com', STRAVA_PASSWORD=PASSWORD,
                              HEATMAP_LOGIN_TIMEOUT=10, HEATMAP_BACKOFF_MIN=60)
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=40)
    assert 'did not finish within 10 s' in error
    assert [run.status for run in apify.runs.values()] == ['ABORTED'], server.logs()
