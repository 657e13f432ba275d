"""Cookie exports from browsers and tools, and the import command that takes them."""

from __future__ import annotations

import json

import pytest

from heatmap.cookies import CookieExportError, cookies_expire_at, parse_export, when
from tests.conftest import cookie_export, redirector_env, run_cli
from tests.fake_strava import EXPIRY_COOKIES, FakeStrava, expiries

FAKE = FakeStrava()  # only its cookie minting is used here; no server


def trio_and_session() -> dict:
    cookies = FAKE.tile_cookies(3600)
    cookies['_strava4_session'] = 'sess'
    return cookies


def as_dict(cookies: list[dict]) -> dict[str, str]:
    return {c['name']: c['value'] for c in cookies}


def test_cookie_editor_json_keeps_only_strava_cookies_with_values():
    export = json.loads(cookie_export(FAKE, 3600))
    export.append({'name': '_ga', 'value': 'GA1', 'domain': '.google.com'})
    cookies = parse_export(json.dumps(export))
    strava = {c['name']: c['value'] for c in export if c['name'] != '_ga'}
    assert strava.pop('_strava_cflt') == '', 'the fake sends the empty cookie Strava sends'
    assert as_dict(cookies) == strava, 'foreign and empty cookies are dropped, every other one kept as it was'
    assert sorted(strava) == ['CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature', '_strava4_session',
                              '_strava_CloudFront-Expires', '_strava_idcf', 'strava_remember_id',
                              'strava_remember_token']


def test_netscape_cookies_txt():
    lines = ['# Netscape HTTP Cookie File']
    for name, value in trio_and_session().items():
        prefix = '#HttpOnly_' if name == '_strava4_session' else ''
        lines.append(f'{prefix}.strava.com\tTRUE\t/\tTRUE\t1900000000\t{name}\t{value}')
    lines.append('.example.com\tTRUE\t/\tFALSE\t0\tother\tx')
    cookies = parse_export('\n'.join(lines))
    assert as_dict(cookies) == {k: v for k, v in trio_and_session().items() if v}
    assert {c['name'] for c in cookies if c['httpOnly']} == {'_strava4_session'}
    assert {(c['domain'], c['path'], c['expires'], c['secure']) for c in cookies} == {('.strava.com', '/', 1.9e9, True)}


def test_raw_cookie_header():
    header = 'Cookie: ' + '; '.join(f'{k}={v}' for k, v in trio_and_session().items())
    assert as_dict(parse_export(header)) == {k: v for k, v in trio_and_session().items() if v}


def test_actor_output_record_is_accepted():
    cookies = [{'name': k, 'value': v, 'domain': '127.0.0.1', 'path': '/'} for k, v in trio_and_session().items()]
    assert as_dict(parse_export(json.dumps({'cookies': cookies, 'expiresAt': 1}))) == \
        {k: v for k, v in trio_and_session().items() if v}


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
    export = cookie_export(strava, 7200)
    done = run_cli('import-cookies', '-', env=env, stdin=export)
    assert done.returncode == 0
    expiry = when(expiries({c['name']: c['value'] for c in json.loads(export)})['CloudFront-Policy'])
    assert f'session cookie: yes; CloudFront cookies: all 3; tile cookies expire: {expiry} (in 2.0 h)' in done.stdout

    junk = run_cli('import-cookies', '-', env=env, stdin='Cookie: _ga=1')
    assert junk.returncode != 0
    assert 'neither the _strava4_session' in junk.stderr
    status = run_cli('status', env=env)
    assert 'cookies valid: yes' in status.stdout, 'a refused import loses nothing'


@pytest.mark.parametrize('statements', [1, 3])
@pytest.mark.parametrize('earliest', EXPIRY_COOKIES)
def test_expiry_is_the_earliest_of_policy_expires_and_jwt_whichever_comes_first(earliest, statements):
    fake = FakeStrava(earliest_expiry=earliest, policy_statements=statements)
    minted = fake.tile_cookies(3600)
    stated = expiries(minted)
    assert sorted(stated.values()) == [stated[earliest], stated[earliest] + 300, stated[earliest] + 600]
    cookies = parse_export(json.dumps([{'name': k, 'value': v} for k, v in minted.items()]))
    assert cookies_expire_at(cookies) == stated[earliest]
    alone = [c for c in cookies if c['name'] == earliest]
    assert cookies_expire_at(alone) == stated[earliest], 'each of the three is read on its own'


def test_an_export_with_more_cookies_than_a_browser_keeps_is_refused():
    export = json.dumps([{'name': '_strava4_session', 'value': 's', 'domain': '.strava.com'}] +
                        [{'name': f'c{i}', 'value': 'v', 'domain': '.strava.com'} for i in range(300)])
    with pytest.raises(CookieExportError, match=r'^the export holds 301 cookies of strava.com, more than the 200 a '
                                                 r'browser keeps for a site'):
        parse_export(export)
    within = json.dumps([{'name': '_strava4_session', 'value': 's', 'domain': '.strava.com'}] +
                        [{'name': f'c{i}', 'value': 'v', 'domain': '.strava.com'} for i in range(199)])
    assert as_dict(parse_export(within)) == {'_strava4_session': 's', **{f'c{i}': 'v' for i in range(199)}}, \
        'as many as a browser keeps are taken'
