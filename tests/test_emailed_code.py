"""Logins with the code Strava emails, read from the account's mailbox on a real IMAP server (pymap).

The fake Strava mails a fresh code to the test's own mailbox whenever an account reaches a code
screen. The mailbox must end as it began plus Strava's mails: every message there and unread, and
the login's own IMAP connection sent only commands that read.
"""

from __future__ import annotations

import email.message
import email.policy
import json
import time

import pytest
import requests

from tests.conftest import PASSWORD, free_port, redirector_env, run_cli
from tests.fake_strava import code_mail
from tests.mail_server import Mailbox, MailServer
from tests.test_actor import REASON_WITHIN_SECS, cookie_header, login_input
from tests.test_tiles import heat_tile, import_cookies

LOGIN_WITH_CODE_SECS = 30  # a login with the mailed code, from Chromium running to the run's end
READING = ('CAPABILITY', 'LOGIN', 'EXAMINE', 'NOOP', 'UID SEARCH', 'UID FETCH', 'LOGOUT')


def old_code_mail(mailbox: Mailbox, seconds_ago: float = 5) -> None:
    """A code mail of an earlier login, arrived so recently that only its place in the mailbox tells it is old."""
    mailbox.append(code_mail('rider@example.com', '111111', 'en'), arrived=time.time() - seconds_ago)


def assert_only_read(mail_server: MailServer, mailbox: Mailbox, since: int, messages: int) -> None:
    """Every message is still there and unread, and the login's connection sent only reading commands."""
    flags = mailbox.flags()
    assert len(flags) == messages and not [f for f in flags.values() if '\\Seen' in f], flags
    commands = mail_server.commands_of_the_login(since)
    assert any(c.startswith('EXAMINE') for c in commands), commands
    assert all(c.startswith(READING) for c in commands), commands
    assert not [c for c in commands if 'BODY[' in c and 'BODY.PEEK[' not in c], commands


def login_page_opened(server, strava) -> float:
    """When the server's login had Chromium running (the fake served it the login page): where a time limit starts,
    as a busy machine stretches Chromium's start most."""
    server.wait_until(lambda: strava.counters['login_page'], timeout=90, interval=0.05)
    return time.monotonic()


def with_mailbox(strava, mailbox: Mailbox, email: str, password: str | None, wait_secs: int = 20, **shape) -> dict:
    for knob, value in shape.items():
        setattr(strava, knob, value)
    actor_input = {**login_input(strava, email, password or ''), 'imapUrl': mailbox.url,
                   'imapPassword': mailbox.password, 'imapWaitSecs': wait_secs}
    if not password:
        del actor_input['password']
    return actor_input


@pytest.mark.parametrize('email, password, shape', [
    ('otp@example.com', None, {}),  # the code is the only way in, and no password is configured
    ('rider@example.com', None, {'account_language': 'de'}),  # a password is offered, but there is none to give
    ('otp@example.com', PASSWORD, {'login_shape': 'legacy'}),  # the one-page form asks for the code after the password
], ids=['code_only', 'no_password_german', 'one_page_form'])
def test_the_actor_logs_in_with_the_mailed_code_and_only_reads_the_mailbox(strava, code_mailbox, mail_server,
                                                                          run_actor, email, password, shape):
    old_code_mail(code_mailbox)
    mark = mail_server.log_mark()
    run = run_actor(with_mailbox(strava, code_mailbox, email, password, **shape))

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.seconds_after_browser_start <= LOGIN_WITH_CODE_SECS, f'{run.seconds_after_browser_start:.1f} s'
    assert strava.counters['verify_otp'] == strava.counters['login_ok'] == 1, 'the new code, typed once'
    tile = requests.get(strava.tile_url(), headers={'Cookie': cookie_header(run.output['cookies'])}, timeout=5)
    assert tile.status_code == 200
    assert strava.counters['codes_asked'] == 1, f'one login asks for one code: {dict(strava.counters)}'
    assert_only_read(mail_server, code_mailbox, mark, messages=2)
    code = strava.codes_sent[-1]
    for text in [run.stdout + run.stderr] + [p.read_text(errors='replace') for p in run.storage.rglob('*')
                                             if p.is_file() and p.name != 'INPUT.json']:
        assert code not in text and code_mailbox.password not in text


def test_a_one_page_form_asks_for_the_password_a_mailbox_cannot_replace(strava, code_mailbox, run_actor):
    run = run_actor(with_mailbox(strava, code_mailbox, 'rider@example.com', None, login_shape='legacy'))
    assert run.returncode != 0 and run.seconds_after_browser_start < REASON_WITHIN_SECS
    assert run.status_message.startswith('bad_credentials: the one-page login form asks for a password'), \
        run.status_message
    assert strava.counters['login_post'] == 0


def test_a_mail_that_is_not_the_code_mail_is_passed_over(strava, code_mailbox, mail_server):
    """Read straight from the mailbox: only the newest Strava mail since the ask with one 6-digit number counts."""
    from actor.src.mailbox import CodeMailbox, parse_imap_url

    old_code_mail(code_mailbox)  # before the ask: a lower UID
    with CodeMailbox(parse_imap_url(code_mailbox.url), code_mailbox.password) as reader:
        assert reader.poll() is None
        code_mailbox.append(code_mail('rider@example.com', '222222', 'de'))
        code_mailbox.append(code_mail('rider@example.com', '333333', 'en'), arrived=time.time() - 600)  # moved in
        code_mailbox.append(plain_mail('Bank <alerts@bank.example>', 'Your TAN is 444444'))
        code_mailbox.append(plain_mail('"strava.com" <strava.com@phish.example>', 'Code 555555'))
        code_mailbox.append(plain_mail('Strava <no-reply@strava.com>', 'Codes 666666 and 777777'))
        assert reader.poll() == '222222'
        assert reader.poll() is None, 'each mail is read once'
    assert [flags for flags in code_mailbox.flags().values() if '\\Seen' in flags] == []


def plain_mail(sender: str, text: str) -> bytes:
    mail = email.message.EmailMessage()
    mail['From'], mail['Subject'] = sender, 'Hello'
    mail.set_content(text)
    return bytes(mail)


def mailbox_settings(mailbox: Mailbox, tmp_path, password: str | None = None, url: str | None = None) -> dict:
    """STRAVA_IMAP_URL and the mailbox password in a file only its owner reads, as the README advises."""
    secret = tmp_path / 'imap-password'
    secret.write_text((password or mailbox.password) + '\n')
    secret.chmod(0o600)
    return {'STRAVA_IMAP_URL': url or mailbox.url, 'STRAVA_IMAP_PASSWORD_FILE': secret}


def assert_kept_secret(server, strava, tmp_path, secrets: list[str], **settings) -> str:
    """Neither the page, /healthz, `status`, the log nor the data directory shows a secret; returns `status`'s text."""
    status = run_cli('status', env=redirector_env(strava, server.data_dir, **settings))
    files = [p.read_text(errors='replace') for p in server.data_dir.rglob('*') if p.is_file() and p.suffix == '.json']
    for text in [server.get('/').text, server.get('/healthz').text, status.stdout + status.stderr, server.logs(),
                 *files]:
        for secret in secrets:
            assert secret not in text
    return status.stdout


def test_a_code_only_account_logs_in_through_the_local_login(start_redirector, strava, code_mailbox, mail_server,
                                                             chromium, tmp_path):
    old_code_mail(code_mailbox)
    mark = mail_server.log_mark()
    settings = dict(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', CHROMIUM_PATH=chromium,
                    **mailbox_settings(code_mailbox, tmp_path))
    server = start_redirector(**settings)
    browsing = login_page_opened(server, strava)
    server.wait_until(lambda: server.health()['ok'], timeout=90)

    assert time.monotonic() - browsing <= LOGIN_WITH_CODE_SECS
    health = server.health()
    assert health['cookies']['source'] == 'local' and health['accounts'][0]['state'] == 'ready'
    assert strava.counters['verify_otp'] == strava.counters['login_ok'] == 1 and strava.counters['login_post'] == 0
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 200
    assert_only_read(mail_server, code_mailbox, mark, messages=2)
    assert_kept_secret(server, strava, tmp_path, [strava.codes_sent[-1], code_mailbox.password], **settings)


def test_a_code_only_account_logs_in_through_apify_with_the_mail_in_german(start_redirector, strava, apify,
                                                                           code_mailbox, mail_server, tmp_path):
    strava.account_language = 'de'
    accounts = tmp_path / 'accounts.json'
    accounts.write_text(json.dumps([{'email': 'otp@example.com', 'password': PASSWORD, 'imap_url': code_mailbox.url,
                                     'imap_password': code_mailbox.password}]))
    accounts.chmod(0o600)
    mark = mail_server.log_mark()
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_ACCOUNTS_FILE=accounts, STRAVA_IMAP_WAIT=45,
                              HEATMAP_LOGIN_TIMEOUT=60)
    server.wait_until(lambda: server.health()['ok'], timeout=90)

    [run] = apify.runs.values()
    assert {k: run.input[k] for k in ('imapUrl', 'imapPassword', 'imapWaitSecs', 'timeoutSecs')} == {
        'imapUrl': code_mailbox.url, 'imapPassword': code_mailbox.password, 'imapWaitSecs': 45, 'timeoutSecs': 60}
    assert 'Dein Anmeldecode' in mail_subjects(code_mailbox)
    assert strava.counters['verify_otp'] == 1 and strava.counters['login_post'] == 0, 'Strava offered no password'
    assert server.health()['cookies']['source'] == 'apify'
    assert_only_read(mail_server, code_mailbox, mark, messages=1)
    assert_kept_secret(server, strava, tmp_path, [strava.codes_sent[-1], code_mailbox.password],
                       STRAVA_ACCOUNTS_FILE=accounts)


def mail_subjects(mailbox: Mailbox) -> str:
    with mailbox.client() as imap:
        imap.select(f'"{mailbox.name}"', readonly=True)
        _, data = imap.uid('FETCH', '1:*', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
    return ' '.join(str(email.message_from_bytes(part[1], policy=email.policy.default)['subject'])
                    for part in data if isinstance(part, tuple))


@pytest.mark.parametrize('wrong, state, named', [
    ('password', 'waiting for you (mailbox_failed)', 'refused the login of demouser'),
    ('folder', 'waiting for you (mailbox_failed)', "has no mailbox 'Strava codes' for demouser"),
    ('port', 'next try after', 'cannot be reached for demouser'),
], ids=['wrong_password_waits_for_the_user', 'missing_folder_waits_for_the_user', 'unreachable_server_backs_off'])
def test_a_mailbox_that_cannot_be_opened_is_named_before_strava_is_asked(start_redirector, strava, code_mailbox,
                                                                         chromium, tmp_path, wrong, state, named):
    wrong_password = 'wrong mail password 7Xz' if wrong == 'password' else code_mailbox.password
    url = {'port': code_mailbox.url.replace(f':{code_mailbox.port}/', f':{free_port()}/'),
           'folder': code_mailbox.url.replace(code_mailbox.name, 'Strava%20codes')}.get(wrong)
    settings = dict(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', CHROMIUM_PATH=chromium,
                    **mailbox_settings(code_mailbox, tmp_path, wrong_password, url))
    server = start_redirector(**settings)
    browsing = login_page_opened(server, strava)
    account = server.wait_until(lambda: server.health()['accounts'][0]['last_error'] and server.health()['accounts'][0],
                                timeout=60)

    assert time.monotonic() - browsing < REASON_WITHIN_SECS
    assert account['state'].startswith(state) and 'mailbox_failed: ' in account['last_error']
    assert named in account['last_error'] and '127.0.0.1' in account['last_error']
    assert strava.counters['request_otp'] == 0, 'no code is asked for that could not be read'
    page = server.get('/').text
    assert 'app password' in page and ('Automatic logins are paused' in page) == (wrong != 'port')
    assert named in server.health()['reason']
    status = assert_kept_secret(server, strava, tmp_path, [wrong_password, code_mailbox.password], **settings)
    assert f"account o***@example.com: {account['state']}" in status


def test_no_code_mail_within_the_wait_names_the_mailbox_and_backs_off(start_redirector, strava, code_mailbox,
                                                                      chromium, tmp_path):
    strava.send_code_mail = False
    server = start_redirector(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', CHROMIUM_PATH=chromium,
                              STRAVA_IMAP_WAIT=3, **mailbox_settings(code_mailbox, tmp_path))
    account = server.wait_until(lambda: server.health()['accounts'][0]['last_error'] and server.health()['accounts'][0],
                                timeout=60)

    assert account['state'].startswith('next try after')
    error = account['last_error']
    assert 'code_not_received: no mail from a strava.com sender' in error
    assert f'reached {code_mailbox.name} of demouser on 127.0.0.1:{code_mailbox.port} within 3 s' in error
    assert 'raise STRAVA_IMAP_WAIT' in server.get('/').text


def test_a_refused_code_is_tried_once_more_then_waits_for_the_user(start_redirector, strava, code_mailbox, chromium,
                                                                   tmp_path):
    strava.refuse_codes = True
    server = start_redirector(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', CHROMIUM_PATH=chromium,
                              HEATMAP_BACKOFF_MIN=1, **mailbox_settings(code_mailbox, tmp_path))
    server.wait_until(lambda: server.health()['accounts'][0]['state'] == 'waiting for you (code_rejected)', timeout=90)
    server.wait_until(lambda: 'no new cookies: waiting for the user' in server.logs(), timeout=30)  # logged just after

    assert strava.counters['verify_otp'] == strava.counters['codes_refused'] == 2
    logs = server.logs()
    assert logs.count('local login failed: code_rejected: Strava refused the code read from the mailbox') == 2
    assert logs.index('no new cookies: next try at') < logs.index('no new cookies: waiting for the user')
    assert 'Automatic logins are paused' in server.get('/').text


def test_doctor_opens_the_mailbox_read_only_without_reading_a_message(strava, code_mailbox, mail_server, chromium,
                                                                      tmp_path):
    old_code_mail(code_mailbox)
    import_cookies(strava, tmp_path / 'data')
    mark = mail_server.log_mark()
    settings = dict(HEATMAP_AUTH='local', STRAVA_EMAIL='otp@example.com', CHROMIUM_PATH=chromium)
    done = run_cli('doctor', env=redirector_env(strava, tmp_path / 'data', **settings,
                                                **mailbox_settings(code_mailbox, tmp_path)))
    assert done.returncode == 0, done.stdout
    assert (f'ok    mailbox of o***@example.com: {code_mailbox.name} of demouser on 127.0.0.1:{code_mailbox.port} '
            'opens read-only (1 message; none was read)') in done.stdout
    assert [c.split()[0] for c in mail_server.commands_of_the_login(mark)] == ['CAPABILITY', 'LOGIN', 'EXAMINE',
                                                                               'LOGOUT']

    wrong = run_cli('doctor', env=redirector_env(strava, tmp_path / 'data', **settings,
                                                 **mailbox_settings(code_mailbox, tmp_path, 'wrong mail password')))
    assert wrong.returncode == 1
    assert 'FAIL  mailbox of o***@example.com: the mail server 127.0.0.1 refused the login of demouser' in wrong.stdout
    assert 'wrong mail password' not in wrong.stdout + wrong.stderr
