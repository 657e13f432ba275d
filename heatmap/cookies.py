"""Cookie exports in, Strava's cookies out: parsing, filtering, and the header tiles are fetched with."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping

from actor.src.strava_cookies import (
    CLOUDFRONT_TRIO,
    EXPIRES_COOKIE,
    IDCF_COOKIE,
    SESSION_COOKIE,
    cookies_expire_at,
    has_tile_cookies,
    jwt_expiry,
    without_empty_values,
)

__all__ = ['CookieExportError', 'parse_export', 'session_value', 'tile_cookie_header', 'athlete_of', 'describe', 'when',
           'cookies_expire_at', 'has_tile_cookies', 'logged_in', 'remember_expiry', 'SESSION_COOKIE', 'SESSION_NAMES',
           'CLOUDFRONT_TRIO', 'STRAVA_NAMES', 'TILE_NAMES']

REMEMBER_COOKIES = ('strava_remember_id', 'strava_remember_token')  # set by a login beside the session; kept with it
SESSION_NAMES = (SESSION_COOKIE, *REMEMBER_COOKIES)  # what the heatmap page is asked with for new tile cookies
STRAVA_NAMES = {*SESSION_NAMES, IDCF_COOKIE, EXPIRES_COOKIE, *CLOUDFRONT_TRIO}
TILE_NAMES = (*CLOUDFRONT_TRIO, IDCF_COOKIE, EXPIRES_COOKIE)
MAX_COOKIES = 200  # browsers keep at most about 180 cookies a site
EXPECTED = ('a JSON array of cookies (Cookie-Editor, strava-cookie-exporter, Playwright, the actor\'s dataset), '
            'a Netscape cookies.txt, or a "Cookie:" header line')


class CookieExportError(ValueError):
    """An export we cannot use; the message says what was expected, never what was given."""


def _is_strava(cookie: Mapping) -> bool:
    """Strava's by name, or by domain when the export says which domain it came from."""
    domain = str(cookie.get('domain') or '').lstrip('.')
    return cookie.get('name') in STRAVA_NAMES or domain == 'strava.com' or domain.endswith('.strava.com')


def _cookie(name: str, value: str, domain: str = '.strava.com', path: str = '/', expires: float = -1,
            http_only: bool = False, secure: bool = True) -> dict:
    return {'name': name, 'value': value, 'domain': domain, 'path': path, 'expires': expires,
            'httpOnly': http_only, 'secure': secure, 'sameSite': 'Lax'}


def _from_json(text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # a list nested ten thousand deep is no export either
        raise CookieExportError(f'this looks like JSON but does not parse; expected {EXPECTED}') from None
    if isinstance(data, dict):
        data = data.get('cookies', data)  # the actor's OUTPUT record, or {name: value}
    if isinstance(data, dict):
        return [_cookie(str(k), str(v)) for k, v in data.items() if isinstance(v, (str, int))]
    if not isinstance(data, list) or not all(isinstance(c, dict) and 'name' in c and 'value' in c for c in data):
        raise CookieExportError(f'expected a JSON array of objects with "name" and "value"; {EXPECTED}')
    cookies = []
    for c in data:
        expires = c.get('expires', c.get('expirationDate', -1))
        cookies.append(_cookie(str(c['name']), str(c['value']), str(c.get('domain') or '.strava.com'),
                               str(c.get('path') or '/'), float(expires) if isinstance(expires, (int, float)) else -1,
                               bool(c.get('httpOnly', False)), bool(c.get('secure', True))))
    return cookies


def _from_netscape(text: str) -> list[dict]:
    cookies = []
    for line in text.splitlines():
        http_only = line.startswith('#HttpOnly_')
        line = line.removeprefix('#HttpOnly_').rstrip('\r\n')
        if not line.strip() or line.startswith('#'):
            continue
        fields = line.split('\t')
        if len(fields) == 6:  # an empty value whose trailing tab an editor removed
            fields.append('')
        if len(fields) != 7:
            raise CookieExportError(f'a cookies.txt line needs 7 tab-separated fields, found {len(fields)}; '
                                    f'expected {EXPECTED}')
        domain, _, path, secure, expires, name, value = fields
        cookies.append(_cookie(name, value, domain, path, float(expires) if expires.isdigit() else -1,
                               http_only, secure.upper() == 'TRUE'))
    return cookies


def _from_header(text: str) -> list[dict]:
    line = text.strip()
    if line.lower().startswith('cookie:'):
        line = line[len('cookie:'):]
    cookies = []
    for pair in line.split(';'):
        name, sep, value = pair.strip().partition('=')
        if not sep or not name or any(ch.isspace() for ch in name):
            raise CookieExportError(f'a Cookie header is "name=value; name=value"; expected {EXPECTED}')
        cookies.append(_cookie(name, value.strip().strip('"'), domain=''))  # a header does not say where from
    return cookies


def parse_export(text: str) -> list[dict]:
    """Strava's non-empty cookies from any supported export, as Playwright-style cookie dicts.

    >>> [c['name'] for c in parse_export('Cookie: _strava4_session=abc; _ga=1; CloudFront-Policy=')]
    ['_strava4_session']
    >>> parse_export('')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    heatmap.cookies.CookieExportError: the export is empty; expected a JSON array of cookies ...
    """
    stripped = text.strip().lstrip('\ufeff')
    if not stripped:
        raise CookieExportError(f'the export is empty; expected {EXPECTED}')
    if stripped[0] in '[{':
        cookies = _from_json(stripped)
    elif '\t' in stripped or stripped.startswith('# Netscape') or stripped.startswith('# HTTP Cookie File'):
        cookies = _from_netscape(stripped)
    else:
        cookies = _from_header(stripped)
    strava = without_empty_values(c for c in cookies if _is_strava(c))
    if len(strava) > MAX_COOKIES:  # kept and looked through for every tile: no browser holds that many
        raise CookieExportError(f'the export holds {len(strava):,} cookies of strava.com, more than the {MAX_COOKIES} '
                                'a browser keeps for a site: export the cookies of strava.com again')
    for cookie in strava:
        if not is_header_safe(cookie['name']) or not is_header_safe(cookie['value']):
            raise CookieExportError(f"the cookie {cookie['name'].encode('ascii', 'replace').decode()[:40]!r} holds "
                                    'characters a Cookie header cannot carry (only printable ASCII without ";"): the '
                                    'export is damaged; export the cookies again')
    if not any(c['name'] == SESSION_COOKIE for c in strava) and not has_tile_cookies(strava):
        raise CookieExportError('the export holds neither the _strava4_session cookie nor the three CloudFront '
                                'cookies: export the cookies of strava.com while logged in')
    return strava


def is_header_safe(text: str) -> bool:
    """True when ``text`` can travel in a Cookie header: printable ASCII, no space, ``;`` or ``,``.

    >>> is_header_safe('eyJhbGciOi~_-'), is_header_safe('café'), is_header_safe('a;b')
    (True, False, False)
    """
    return text.isascii() and text.isprintable() and not any(ch in text for ch in ' ;,')


def session_value(cookies: Iterable[Mapping]) -> str | None:
    """The long-lived ``_strava4_session`` cookie's value, if the set has one.

    >>> session_value([{'name': '_strava4_session', 'value': 's'}, {'name': 'CloudFront-Policy', 'value': 'p'}])
    's'
    """
    return next((c['value'] for c in cookies if c['name'] == SESSION_COOKIE and c['value']), None)


def tile_cookie_header(cookies: Iterable[Mapping], with_session: bool = False) -> str:
    """The ``Cookie`` header for tile requests: the tile cookies only (the personal heatmap: and the session).

    >>> tile_cookie_header([{'name': '_strava4_session', 'value': 's'}, {'name': 'CloudFront-Policy', 'value': 'p'}])
    'CloudFront-Policy=p'
    """
    names = (*TILE_NAMES, SESSION_COOKIE) if with_session else TILE_NAMES
    return '; '.join(f"{c['name']}={c['value']}" for c in cookies if c['name'] in names)


def logged_in(cookies: Iterable[Mapping]) -> bool:
    """True when a login left its ``strava_remember_id``: Strava gives a visitor a session cookie but not that.

    >>> logged_in([{'name': '_strava4_session', 'value': 's'}])
    False
    >>> logged_in([{'name': '_strava4_session', 'value': 's'}, {'name': 'strava_remember_id', 'value': '1'}])
    True
    """
    return any(c['name'] == REMEMBER_COOKIES[0] and c['value'] for c in cookies)


def remember_expiry(cookies: Iterable[Mapping]) -> int:
    """When the ``strava_remember_token`` (a JWT of about 30 days) of a set expires; 0 without one.

    >>> remember_expiry([{'name': 'strava_remember_token', 'value': 'e30.eyJleHAiOjE3MDAwMDAwMDB9.c2ln'}])
    1700000000
    """
    return max((jwt_expiry(c['value']) or 0 for c in cookies if c['name'] == REMEMBER_COOKIES[1]), default=0)


def athlete_of(cookies: Iterable[Mapping]) -> str | None:
    """The athlete id a login leaves in ``strava_remember_id``.

    >>> athlete_of([{'name': 'strava_remember_id', 'value': '12345678'}]), athlete_of([])
    ('12345678', None)
    """
    return next((c['value'] for c in cookies if c['name'] == REMEMBER_COOKIES[0] and c['value'].isdigit()), None)


def when(epoch: float | None) -> str:
    """An epoch as a short UTC time for messages and log lines.

    >>> when(1700000000), when(None)
    ('2023-11-14 22:13 UTC', 'unknown')
    """
    return time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(epoch)) if epoch else 'unknown'


def describe(cookies: list[dict], now: float | None = None) -> str:
    """One line saying what an export holds, without any value.

    >>> describe([{'name': '_strava4_session', 'value': 's'}])
    'session cookie: yes; CloudFront cookies: none; tile cookies expire: unknown'
    """
    names = {c['name'] for c in cookies}
    trio = sum(name in names for name in CLOUDFRONT_TRIO)
    expires_at = cookies_expire_at(cookies)
    if expires_at is None:
        expiry = 'unknown'
    else:
        left = expires_at - (time.time() if now is None else now)
        expiry = f'{when(expires_at)} (in {left / 3600:.1f} h)' if left > 0 else f'{when(expires_at)} (already expired)'
    return (f"session cookie: {'yes' if SESSION_COOKIE in names else 'no'}; "
            f"CloudFront cookies: {'all 3' if trio == 3 else f'{trio} of 3' if trio else 'none'}; "
            f'tile cookies expire: {expiry}')
