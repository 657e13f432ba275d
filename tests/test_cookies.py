"""Cookie exports from browsers and tools, and the import command that takes them."""

from __future__ import annotations

import base64
import json

import pytest

from actor.src.strava_cookies import decode_cloudfront_base64, jwt_expiry
from heatmap.cookies import (
    CookieExportError,
    athlete_of,
    cookies_expire_at,
    describe,
    parse_export,
    remember_expiry,
    session_value,
    tile_cookie_header,
    when,
)
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


def cookie(name, value, domain='.strava.com', path='/', expires=-1, http_only=False, secure=True):
    return {'name': name, 'value': value, 'domain': domain, 'path': path, 'expires': expires, 'httpOnly': http_only,
            'secure': secure, 'sameSite': 'Lax'}


def test_a_json_export_keeps_each_cookies_attributes_and_fills_in_those_it_leaves_out():
    export = [{'name': '_strava4_session', 'value': 's', 'domain': 'www.strava.com', 'path': '/x',
               'expirationDate': 1900000000.5, 'httpOnly': True, 'secure': False},
              {'name': 'CloudFront-Policy', 'value': 'p', 'expires': 1800000000, 'expirationDate': 1},
              {'name': 'CloudFront-Signature', 'value': 'g', 'expires': 'soon'},
              {'name': 'CloudFront-Key-Pair-Id', 'value': 'k'},
              {'name': 'other', 'value': 'o', 'domain': 'strava.com'}]
    assert parse_export('\ufeff' + json.dumps(export)) == [
        cookie('_strava4_session', 's', 'www.strava.com', '/x', 1900000000.5, True, False),
        cookie('CloudFront-Policy', 'p', expires=1800000000.0), cookie('CloudFront-Signature', 'g'),
        cookie('CloudFront-Key-Pair-Id', 'k'), cookie('other', 'o', 'strava.com')]
    assert parse_export('{"_strava4_session": "s", "strava_remember_id": 7, "x": [1]}') == [
        cookie('_strava4_session', 's'), cookie('strava_remember_id', '7')]


def test_cookies_of_other_sites_are_dropped_by_domain_unless_strava_names_them():
    export = [{'name': '_strava4_session', 'value': 's', 'domain': '127.0.0.1'},
              {'name': 'a', 'value': '1', 'domain': 'www.strava.com'},
              {'name': 'b', 'value': '2', 'domain': 'notstrava.com'},
              {'name': 'c', 'value': '3', 'domain': 'strava.com.example.org'}]
    assert [c['name'] for c in parse_export(json.dumps(export))] == ['_strava4_session', 'a']


def test_a_cookies_txt_line_without_its_empty_values_tab_is_read_and_its_attributes_kept():
    text = ('# HTTP Cookie File\n.strava.com\tTRUE\t/\tTRUE\t0\t_strava_cflt\n'
            'www.strava.com\tFALSE\t/maps\tFALSE\tnever\t_strava4_session\ts\n'
            '.example.com\tTRUE\t/\tFALSE\t0\tother\ta spaced value')
    assert parse_export(text) == [cookie('_strava4_session', 's', 'www.strava.com', '/maps', -1, False, False)]


@pytest.mark.parametrize('text', ['# Netscape HTTP Cookie File\n', '# HTTP Cookie File\n'])
def test_a_cookies_txt_with_no_cookies_says_it_holds_no_session(text):
    with pytest.raises(CookieExportError) as refused:
        parse_export(text)
    assert str(refused.value) == ('the export holds neither the _strava4_session cookie nor the three CloudFront '
                                  'cookies: export the cookies of strava.com while logged in')


def test_a_cookie_header_keeps_values_with_equals_signs_and_quotes_and_says_no_domain():
    assert parse_export('Xa=1; _strava4_session=abc==; CloudFront-Policy="p=X"') == [
        cookie('_strava4_session', 'abc==', ''), cookie('CloudFront-Policy', 'p=X', '')]


@pytest.mark.parametrize('header', ['Cookie: a b=1; _strava4_session=s', '=1; _strava4_session=s'])
def test_a_cookie_header_with_a_nameless_or_spaced_name_is_refused(header):
    with pytest.raises(CookieExportError, match='^a Cookie header is "name=value; name=value"'):
        parse_export(header)


@pytest.mark.parametrize('name, value, quoted', [
    ('_strava4_session', 'caf\u00e9', "'_strava4_session'"),
    ('caf\u00e9' + 'x' * 50, 's', repr('caf?' + 'x' * 36)),
])
def test_a_cookie_a_header_cannot_carry_is_refused_naming_it_in_ascii(name, value, quoted):
    export = json.dumps([{'name': '_strava4_session', 'value': 's'}, {'name': name, 'value': value}])
    with pytest.raises(CookieExportError) as refused:
        parse_export(export)
    assert str(refused.value) == (f'the cookie {quoted} holds characters a Cookie header cannot carry (only printable '
                                  'ASCII without ";"): the export is damaged; export the cookies again')


def test_the_session_athlete_and_remember_expiry_are_read_from_their_own_cookies():
    cookies = [{'name': 'CloudFront-Policy', 'value': '42'}, {'name': 'strava_remember_id', 'value': 'abc'},
               {'name': '_strava4_session', 'value': 's'}, {'name': 'strava_remember_token', 'value': 'junk'}]
    assert session_value(cookies) == 's' and session_value([]) is None
    assert athlete_of(cookies) is None
    assert remember_expiry(cookies) == 0 and remember_expiry([]) == 0
    assert tile_cookie_header(cookies, with_session=True) == 'CloudFront-Policy=42; _strava4_session=s'


def test_describe_counts_the_cloudfront_cookies_and_says_how_long_they_last():
    trio = [{'name': name, 'value': 'v'} for name in ('CloudFront-Key-Pair-Id', 'CloudFront-Signature',
                                                       'CloudFront-Policy')]
    expires = [{'name': '_strava_CloudFront-Expires', 'value': '1700000000000'}]
    assert describe(trio + expires, now=1700000000 - 5400) == \
        'session cookie: no; CloudFront cookies: all 3; tile cookies expire: 2023-11-14 22:13 UTC (in 1.5 h)'
    assert describe(trio[1:] + expires, now=1700000000) == \
        'session cookie: no; CloudFront cookies: 2 of 3; tile cookies expire: 2023-11-14 22:13 UTC (already expired)'
    assert describe(expires, now=1700000000 - 0.5).endswith('(in 0.0 h)')
    assert describe(expires, now=1700000000 - 36180).endswith('(in 10.1 h)')
    assert describe(expires).endswith('(already expired)')  # now is the clock's


def test_cloudfront_base64_and_jwt_payloads_of_any_length_are_read():
    for claims in ({'exp': 1700000000}, {'exp': 1700000000, 'a': 'x'}, {'exp': 1700000000, 'a': 'xy'}):
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip('=')
        assert jwt_expiry(f'h.{payload}.s') == 1700000000
    for data in (b'\xfb\xff\xbf>', b'\xfb\xff\xbf>?', b'\xfb\xff\xbf>??'):
        standard = base64.b64encode(data).decode()
        assert decode_cloudfront_base64(standard.replace('+', '-').replace('=', '_').replace('/', '~')) == data
