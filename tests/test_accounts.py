"""Several Strava accounts: when one needs its owner, the next logs in; one login at a time, each with its backoff."""

from __future__ import annotations

import json
import time

import pytest

from heatmap.status import iso
from tests.conftest import PASSWORD, REFRESH_POLL, redirector_env, run_cli, stays
from tests.fake_strava import Account
from tests.test_refresh import BACKOFF, WINDOW
from tests.test_tiles import heat_tile

THIRD_PASSWORD = 'third secret 3'


def accounts_file(tmp_path, lines: list[str], mode: int = 0o600):
    path = tmp_path / 'accounts.txt'
    path.write_text('# our club\n' + '\n'.join(lines) + '\n')
    path.chmod(mode)
    return path


@pytest.fixture
def three_accounts(strava, tmp_path):
    """One that can only log in with a code, one with a wrong password, one that works."""
    strava.accounts['third@example.com'] = Account(THIRD_PASSWORD, athlete_id='45678901')
    return accounts_file(tmp_path, [f'otp@example.com {PASSWORD}', 'rider@example.com wrong horse',
                                    f'third@example.com {THIRD_PASSWORD}'])


def test_the_third_account_logs_in_when_the_first_two_need_their_owners(start_redirector, strava, apify,
                                                                        three_accounts, tmp_path):
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_ACCOUNTS_FILE=three_accounts)
    server.wait_until(lambda: server.health()['ok'], timeout=120)

    assert apify.counters['runs'] == 3, 'exactly one login attempt per account'
    assert [run.input['email'] for run in apify.runs.values()] == ['otp@example.com', 'rider@example.com',
                                                                   'third@example.com']
    assert server.logs().count('refresh started: apify') == 3
    assert 'renewal: session, apify (o***@example.com), apify (r***@example.com), apify (t***@example.com)' \
        in server.logs(), 'the start-up line names each account it may log in with'
    assert 'refresh succeeded: apify (t***@example.com)' in server.logs()
    health = server.health()
    assert health['cookies']['source'] == 'apify'
    assert [(a['email'], a['state']) for a in health['accounts']] == [
        ('o***@example.com', 'waiting for you (otp_required)'),
        ('r***@example.com', 'waiting for you (bad_credentials)'),
        ('t***@example.com', 'ready')]
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200

    page = server.get('/').text
    status = run_cli('status', env=redirector_env(strava, server.data_dir, STRAVA_ACCOUNTS_FILE=three_accounts))
    assert 'account o***@example.com: waiting for you (otp_required)' in status.stdout
    assert 'r***@example.com: waiting for you (bad_credentials)' in page
    for text in (page, status.stdout + status.stderr, str(health), server.logs()):
        for secret in (PASSWORD, THIRD_PASSWORD, 'wrong horse', 'otp@example.com', 'third@example.com'):
            assert secret not in text


def test_no_account_is_tried_twice_within_its_backoff(start_redirector, strava, apify, tmp_path):
    attempts: list[tuple[str, float]] = []

    def timing_out(run_input):
        attempts.append((run_input['email'], time.monotonic()))
        return 'FAILED', 'timeout: Strava did not answer within 120 s', []
    apify.script = timing_out
    path = accounts_file(tmp_path, ['a@example.com pa', 'b@example.com pb'])
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_ACCOUNTS_FILE=path, HEATMAP_BACKOFF_MIN=3,
                              HEATMAP_REFRESH_POLL=REFRESH_POLL)
    emails = ('a@example.com', 'b@example.com')
    server.wait_until(lambda: all(len([e for e, _ in attempts if e == email]) >= 3 for email in emails), timeout=60)
    for email in emails:
        first, second, third = [t for e, t in attempts if e == email][:3]
        assert second - first >= 2.9 and third - second >= 5.8, ('the backoff is 3 s, then doubles', email)
    assert server.health()['accounts'][0]['state'].startswith('next try after')
    assert 'Automatic logins are paused' not in server.get('/').text


def test_the_local_login_goes_on_to_the_next_account_too(start_redirector, strava, chromium, tmp_path):
    path = accounts_file(tmp_path, [f'rider@example.com {PASSWORD}'])
    started = time.time()
    server = start_redirector(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', STRAVA_PASSWORD=PASSWORD,
                              STRAVA_ACCOUNTS_FILE=path, CHROMIUM_PATH=chromium)
    server.wait_until(lambda: server.health()['ok'], timeout=90)
    assert strava.counters['login_ok'] == 1
    assert [a['state'] for a in server.health()['accounts']] == ['waiting for you (otp_required)', 'ready']
    saved = json.loads((server.data_dir / 'cookies.json').read_text())['state']['1']
    assert saved['source'] == 'local' and started < saved['refreshed_at'] < time.time(), 'the login just made'
    assert server.health()['cookies']['refreshed_at'] == iso(saved['refreshed_at'])


@pytest.mark.parametrize('content, mode, named', [
    ('a@example.com secret-pw', 0o644, 'which others can read (mode 644): it holds passwords; run `chmod 600'),
    ('a@example.com', 0o600, 'line 2: expected "email password"'),
    ('[{"password": "secret-pw"}]', 0o600, 'expected a JSON list'),
    ('# nobody\n', 0o600, 'holds no accounts'),
    ('[{"email": "a@example.com", "imap_url": "imaps://a@imap.example.com"}]', 0o600,
     'entry 1 (a***@example.com): "imap_url" and "imap_password" go together'),
    ('[{"email": "a@example.com", "imap_url": "imaps://a:secret-pw@imap.example.com", "imap_password": "x"}]', 0o600,
     'entry 1 (a***@example.com): "imap_url" must not hold the password: give it in "imap_password" instead'),
    ('[{"email": "a@example.com"}]', 0o600, 'needs a "password", or a mailbox ("imap_url", "imap_password"), or both'),
])
def test_an_accounts_file_that_cannot_be_used_is_one_line(strava, tmp_path, content, mode, named):
    path = tmp_path / 'accounts.txt'
    path.write_text('# club\n' + content if not content.startswith('[') else content)
    path.chmod(mode)
    done = run_cli('serve', env=redirector_env(strava, tmp_path / 'data', STRAVA_ACCOUNTS_FILE=path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and str(path) in lines[0], done.stderr
    assert 'secret-pw' not in done.stderr


@pytest.mark.parametrize('ending, waits', [
    ('otp_required: this account can only log in with a code', True),
    ('timeout: Strava did not answer within 120 s', False),  # the positive control of the watch: retried within it
], ids=['accounts_that_need_their_owner_wait', 'accounts_that_failed_for_now_are_retried'])
def test_accounts_that_wait_for_their_owner_are_tried_again_only_when_the_user_acts(start_redirector, strava, apify,
                                                                                     tmp_path, ending, waits):
    apify.script = lambda run_input: ('FAILED', ending, [])
    path = accounts_file(tmp_path, ['a@example.com pa', 'b@example.com pb'])
    settings = dict(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                    APIFY_ACTOR=apify.actor_id, STRAVA_ACCOUNTS_FILE=path, HEATMAP_BACKOFF_MIN=BACKOFF,
                    HEATMAP_REFRESH_POLL=REFRESH_POLL)
    server = start_redirector(**settings)
    server.wait_until(lambda: apify.counters['runs'] == 2 and server.health()['cookies']['last_error'], timeout=30,
                      interval=0.05)
    if not waits:
        server.wait_until(lambda: apify.counters['runs'] >= 4, timeout=WINDOW, interval=0.05)
        return
    stays(lambda: apify.counters['runs'], 2, WINDOW, 'the runs')  # past the backoff: nobody retries them
    assert 'Automatic logins are paused' in server.get('/').text

    done = run_cli('login', env=redirector_env(strava, server.data_dir, **settings))
    assert done.returncode == 1 and 'otp_required' in done.stderr
    assert apify.counters['runs'] == 4, 'the login command tries every account once'
