"""Logins with the code Strava emails, read from the account's mailbox on a real IMAP server (pymap).

The fake Strava mails a fresh code to the test's own mailbox whenever an account reaches a code
screen. The mailbox must end as it began plus Strava's mails: every message there and unread, and
the login's own IMAP connection sent only commands that read.
"""

from __future__ import annotations

import email.message
import time

import pytest
import requests

from tests.conftest import PASSWORD
from tests.fake_strava import code_mail
from tests.mail_server import Mailbox, MailServer
from tests.test_actor import cookie_header, login_input

LOGIN_WITH_CODE_SECS = 30  # a login with the mailed code, Chromium's start included
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
    assert run.seconds <= LOGIN_WITH_CODE_SECS, f'{run.seconds:.1f} s'
    assert strava.counters['verify_otp'] == strava.counters['login_ok'] == 1, 'the new code, typed once'
    tile = requests.get(strava.tile_url(), headers={'Cookie': cookie_header(run.output['cookies'])}, timeout=5)
    assert tile.status_code == 200
    assert_only_read(mail_server, code_mailbox, mark, messages=2)
    code = strava.codes_sent[-1]
    for text in [run.stdout + run.stderr] + [p.read_text(errors='replace') for p in run.storage.rglob('*')
                                             if p.is_file() and p.name != 'INPUT.json']:
        assert code not in text and code_mailbox.password not in text


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
