"""Cookie exports from browsers and tools, and the import command that takes them."""

from __future__ import annotations

import json

import pytest

from heatmap.cookies import CookieExportError, parse_export
from tests.conftest import cookie_export, redirector_env, run_cli
from tests.fake_strava import FakeStrava, policy_epoch

FAKE = FakeStrava()  # only its cookie minting is used here; no server


def trio_and_session() -> dict:
    cookies = FAKE.tile_cookies(3600)
    cookies['_strava4_session'] = 'sess'
    return cookies


def test_cookie_editor_json_keeps_only_strava_cookies_with_values():
    export = json.loads(cookie_export(FAKE, 3600))
    export.append({'name': '_ga', 'value': 'GA1', 'domain': '.google.com'})
    cookies = parse_export(json.dumps(export))
    names = [c['name'] for c in cookies]
    assert '_ga' not in names and '_strava_cflt' not in names, 'foreign and empty cookies are dropped'
    assert {'_strava4_session', 'CloudFront-Policy', 'CloudFront-Signature', 'CloudFront-Key-Pair-Id'} <= set(names)


def test_netscape_cookies_txt():
    lines = ['# Netscape HTTP Cookie File']
    for name, value in trio_and_session().items():
        prefix = '#HttpOnly_' if name == '_strava4_session' else ''
        lines.append(f'{prefix}.strava.com\tTRUE\t/\tTRUE\t1900000000\t{name}\t{value}')
    lines.append('.example.com\tTRUE\t/\tFALSE\t0\tother\tx')
    cookies = parse_export('\n'.join(lines))
    assert {c['name'] for c in cookies} == set(trio_and_session()) - {'_strava_cflt'}
    assert next(c for c in cookies if c['name'] == '_strava4_session')['httpOnly'] is True


def test_raw_cookie_header():
    header = 'Cookie: ' + '; '.join(f'{k}={v}' for k, v in trio_and_session().items())
    cookies = parse_export(header)
    assert len(cookies) == 6


def test_actor_output_record_is_accepted():
    cookies = [{'name': k, 'value': v, 'domain': '127.0.0.1', 'path': '/'} for k, v in trio_and_session().items()]
    assert len(parse_export(json.dumps({'cookies': cookies, 'expiresAt': 1}))) == 6


@pytest.mark.parametrize('text, expected', [
    ('', 'empty'),
    ('[{"name": "a"', 'does not parse'),
    ('[1, 2]', '"name" and "value"'),
    ('Cookie: _ga=1; _gid=2', 'neither the _strava4_session'),
    ('just some words', 'name=value'),
    ('.strava.com\tTRUE\t/\tTRUE\n', '7 tab-separated fields'),
])
def test_broken_exports_say_what_was_expected(text, expected):
    with pytest.raises(CookieExportError, match=expected):
        parse_export(text)


def test_import_command_reports_what_it_found_and_refuses_junk(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data')
    done = run_cli('import-cookies', '-', env=env, stdin=cookie_export(strava, 7200))
    assert done.returncode == 0
    assert 'session cookie: yes; CloudFront cookies: all 3' in done.stdout
    assert 'in 2.0 h' in done.stdout or 'in 1.9 h' in done.stdout

    junk = run_cli('import-cookies', '-', env=env, stdin='Cookie: _ga=1')
    assert junk.returncode != 0
    assert 'neither the _strava4_session' in junk.stderr
    status = run_cli('status', env=env)
    assert 'cookies valid: yes' in status.stdout, 'a refused import loses nothing'


def test_expiry_is_the_smallest_of_policy_expires_and_jwt():
    cookies = parse_export(json.dumps([{'name': k, 'value': v} for k, v in trio_and_session().items()]))
    from heatmap.cookies import cookies_expire_at
    policy = next(c['value'] for c in cookies if c['name'] == 'CloudFront-Policy')
    assert cookies_expire_at(cookies) == policy_epoch(policy)


def test_an_export_with_more_cookies_than_a_browser_keeps_is_refused():
    export = json.dumps([{'name': '_strava4_session', 'value': 's', 'domain': '.strava.com'}] +
                        [{'name': f'c{i}', 'value': 'v', 'domain': '.strava.com'} for i in range(300)])
    with pytest.raises(CookieExportError, match=r'^the export holds 301 cookies of strava.com, more than the 200 a '
                                                 r'browser keeps for a site'):
        parse_export(export)
    within = json.dumps([{'name': '_strava4_session', 'value': 's', 'domain': '.strava.com'}] +
                        [{'name': f'c{i}', 'value': 'v', 'domain': '.strava.com'} for i in range(199)])
    assert len(parse_export(within)) == 200, 'as many as a browser keeps are taken'
