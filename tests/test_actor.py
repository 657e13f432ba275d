"""The login actor, run as a real subprocess with a real Chromium against the fake Strava.

The fake's login page has the shapes docs/strava.md lists under "The login page"; each test
names the shape it sets up.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
import requests
from playwright.async_api import async_playwright

from actor.src.login import LoginFailure, launch_browser, log_in
from tests.actor_process import ACTOR_DIR
from tests.conftest import PASSWORD, ROOT
from tests.fake_strava import expiries

REASON_WITHIN_SECS = 20  # a reason the page or an answer gives, from Chromium running to the run's end


def login_input(strava, email='rider@example.com', password=PASSWORD, timeout_secs=30) -> dict:
    return {'email': email, 'password': password, 'loginUrl': f'{strava.url}/login',
            'heatmapUrl': f'{strava.url}/maps/global-heatmap', 'timeoutSecs': timeout_secs}


def cookie_header(cookies: list[dict]) -> str:
    return '; '.join(f"{c['name']}={c['value']}" for c in cookies)


@pytest.mark.parametrize('shape, knobs', [
    ('two_step', {}),  # hidden mobile copies first, the CTA, the reCAPTCHA badge, the banner, navigating on
    ('two_step', {'account_language': 'de'}),  # "Stattdessen Passwort verwenden" after the email step
    ('legacy', {'cookiebot': True}),  # Cookiebot's dialog, over the other banner, takes every click until answered
    ('legacy', {'earliest_expiry': '_strava_idcf'}),  # expiresAt is the earliest of the three, whichever it is
], ids=['two_step', 'german_after_email', 'both_cookie_banners', 'legacy'])
def test_login_returns_cookies_that_load_a_modern_tile(strava, run_actor, shape, knobs):
    strava.login_shape = shape
    for knob, value in knobs.items():
        setattr(strava, knob, value)
    run = run_actor(login_input(strava))

    assert run.returncode == 0, run.stderr
    assert strava.counters['login_ok'] == 1
    cookies = run.output['cookies']
    names = {c['name'] for c in cookies}
    assert {'_strava4_session', 'CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature',
            '_strava_idcf', '_strava_CloudFront-Expires', 'strava_remember_token'} <= names
    assert {c['name']: c['value'] for c in cookies}['strava_remember_id'] == '12345678'
    assert all(c['value'] for c in cookies), 'empty cookies must be dropped'
    assert run.output['expiresAt'] == expiries({c['name']: c['value'] for c in cookies})[strava.earliest_expiry]

    tile = requests.get(strava.tile_url(), headers={'Cookie': cookie_header(cookies)}, timeout=5)
    assert tile.status_code == 200
    assert tile.content.startswith(b'\x89PNG\r\n\x1a\n')
    assert 'Headless' not in strava.login_headers['User-Agent'], 'the user agent must not announce a headless browser'
    assert strava.login_headers['Accept-Language'].startswith('en'), 'the browser asks for English'


def test_twenty_logins_all_reach_the_heatmap_page(strava, chromium):
    """After a login the page navigates on by itself; the heatmap page must still open, every time."""
    strava.maps_latency = 0.2  # Strava's heatmap page takes a moment: long enough for the login page to move on

    async def quiet(message: str) -> None:
        pass

    async def twenty_logins() -> list[str]:
        async with async_playwright() as playwright:
            browser = await launch_browser(playwright)

            async def one() -> str:
                try:
                    await log_in(browser, 'rider@example.com', PASSWORD, f'{strava.url}/login',
                                 f'{strava.url}/maps/global-heatmap', 30, quiet)
                    return 'ok'
                except LoginFailure as failure:
                    return str(failure)
            try:
                return [outcome for _ in range(5) for outcome in await asyncio.gather(*(one() for _ in range(4)))]
            finally:
                await browser.close()

    outcomes = asyncio.run(twenty_logins())
    assert [outcome for outcome in outcomes if outcome != 'ok'] == []
    assert strava.counters['maps_ok'] == strava.counters['login_ok'] == 20


def test_dataset_holds_one_item_per_cookie(strava, run_actor):
    run = run_actor(login_input(strava))
    assert run.dataset_items == run.output['cookies']


@pytest.mark.parametrize('email, password, shape, knobs, reason', [
    ('rider@example.com', 'wrong horse', 'two_step', {}, 'bad_credentials'),
    ('rider@example.com', 'wrong horse', 'two_step', {'account_language': 'de'}, 'bad_credentials'),
    ('rider@example.com', 'wrong horse', 'legacy', {}, 'bad_credentials'),
    ('otp@example.com', PASSWORD, 'two_step', {}, 'otp_required'),
    ('otp@example.com', PASSWORD, 'two_step', {'account_language': 'de'}, 'otp_required'),
    ('robot@example.com', PASSWORD, 'two_step', {}, 'captcha'),
    ('robot@example.com', PASSWORD, 'legacy', {}, 'captcha'),
    ('rider@example.com', PASSWORD, 'two_step', {'recaptcha_checkbox': True}, 'captcha'),
    ('rider@example.com', PASSWORD, 'two_step', {'block_browsers': 'all'}, 'blocked'),
    ('rider@example.com', PASSWORD, 'changed', {}, 'page_changed'),
    ('rider@example.com', PASSWORD, 'two_step', {'maps_status': 503}, 'unreachable'),
], ids=['wrong_password', 'wrong_password_german', 'wrong_password_legacy', 'code_only', 'code_only_german',
        'captcha', 'captcha_legacy', 'captcha_checkbox', 'bot_protection', 'unknown_page', 'heatmap_page_down'])
def test_failed_login_ends_with_its_reason_code_within_seconds(strava, run_actor, email, password, shape, knobs,
                                                               reason):
    strava.login_shape = shape
    for knob, value in knobs.items():
        setattr(strava, knob, value)
    run = run_actor(login_input(strava, email, password, timeout_secs=60))

    assert run.returncode != 0
    assert run.status_message.startswith(f'{reason}: '), run.status_message
    took = run.seconds_after_browser_start
    assert took < REASON_WITHIN_SECS, f'{reason} took {took:.1f} s with Chromium running'
    assert run.output is None
    assert strava.counters['login_post'] <= 1, 'a failed login is never retried'


def test_page_that_never_answers_times_out_within_timeout_secs(strava, run_actor):
    strava.login_shape = 'hang'
    run = run_actor(login_input(strava, timeout_secs=8))

    assert run.returncode != 0
    assert run.status_message.startswith('timeout: ')
    assert run.seconds_after_browser_start < 8 + 10, 'the SDK shutdown is the only slack'


def test_password_appears_only_in_the_input(strava, run_actor):
    password = 'Pa$$word that must stay secret'
    strava.accounts['rider@example.com'].password = password
    ok = run_actor(login_input(strava, password=password))
    rejected = run_actor(login_input(strava, password=password + ' typo'))

    assert ok.returncode == 0 and rejected.returncode != 0
    for run in (ok, rejected):
        assert 'secret' not in run.stdout + run.stderr
        for path in run.storage.rglob('*'):
            if path.is_file() and path.name != 'INPUT.json':
                assert 'must stay secret' not in path.read_text(errors='replace'), path


def test_input_schema_is_the_console_form():
    schema = json.loads((ROOT / 'actor' / '.actor' / 'input_schema.json').read_text())
    actor = json.loads((ROOT / 'actor' / '.actor' / 'actor.json').read_text())
    assert actor['actorSpecification'] == 1 and actor['input'] == './input_schema.json'
    assert (ROOT / 'actor' / '.actor' / actor['dockerfile']).resolve() == (ROOT / 'actor' / 'Dockerfile').resolve()
    assert (ROOT / 'actor' / 'src' / '__init__.py').exists()
    assert set(schema['required']) == {'email'}, 'a password, a mailbox or both: the actor says which is missing'
    for name, field in schema['properties'].items():
        assert {'title', 'type', 'description', 'editor'} <= set(field), name
    assert schema['properties']['password']['isSecret'] is True
    assert schema['properties']['imapPassword']['isSecret'] is True
    assert 'imaps://USER@HOST[:PORT][/MAILBOX]' in schema['properties']['imapUrl']['description']


def test_missing_browser_is_named(strava, tmp_path):
    storage = tmp_path / 'storage' / 'key_value_stores' / 'default'
    storage.mkdir(parents=True)
    (storage / 'INPUT.json').write_text(json.dumps(login_input(strava)))
    env = {k: v for k, v in os.environ.items() if k != 'CHROMIUM_PATH'}
    env.update(APIFY_LOCAL_STORAGE_DIR=str(tmp_path / 'storage'), PATH=os.path.dirname(sys.executable),
               PLAYWRIGHT_BROWSERS_PATH=str(tmp_path / 'no-browsers'))
    done = subprocess.run([sys.executable, '-m', 'src'], cwd=ACTOR_DIR, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert 'browser_missing: no Chromium found' in done.stdout + done.stderr
    assert 'CHROMIUM_PATH' in done.stdout + done.stderr
    assert strava.counters['login_page'] == 0


def test_apify_cli_accepts_and_runs_the_actor(strava, chromium, apify_cli, tmp_path):
    actor = tmp_path / 'actor'
    shutil.copytree(ACTOR_DIR, actor, ignore=shutil.ignore_patterns('storage', '__pycache__'))
    env = {**os.environ, 'CHROMIUM_PATH': chromium, 'APIFY_CLI_DISABLE_TELEMETRY': '1', 'NO_COLOR': '1',
           'PATH': f'{os.path.dirname(sys.executable)}{os.pathsep}{os.environ["PATH"]}'}
    done = subprocess.run([str(apify_cli), 'run', '--input', json.dumps(login_input(strava))], cwd=actor, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    output = json.loads((actor / 'storage' / 'key_value_stores' / 'default' / 'OUTPUT').read_text())
    assert {c['name'] for c in output['cookies']} >= {'CloudFront-Policy', 'CloudFront-Signature'}
    assert PASSWORD not in done.stdout + done.stderr
