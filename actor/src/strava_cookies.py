"""Strava's tile cookies and when they expire, computed without asking Strava.

Standard library only: the actor and the redirector both use this module.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping

SESSION_COOKIE = '_strava4_session'
CLOUDFRONT_TRIO = ('CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature')
IDCF_COOKIE = '_strava_idcf'
EXPIRES_COOKIE = '_strava_CloudFront-Expires'


def decode_cloudfront_base64(text: str) -> bytes:
    """Decode CloudFront's URL-safe base64, which uses ``-`` for ``+``, ``_`` for ``=`` and ``~`` for ``/``.

    >>> decode_cloudfront_base64('eyJhIjoxfQ__')
    b'{"a":1}'
    """
    standard = text.replace('-', '+').replace('_', '=').replace('~', '/')
    return base64.b64decode(standard + '=' * (-len(standard) % 4))


def policy_expiry(policy: str) -> int | None:
    """The ``DateLessThan`` epoch of a CloudFront policy cookie, or None if it has none.

    >>> policy_expiry('eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly8qLnN0cmF2YS5jb20vKiIsIkNvbmRpdGlvbiI6'
    ...               'eyJEYXRlTGVzc1RoYW4iOnsiQVdTOkVwb2NoVGltZSI6MTcwMDAwMDAwMH19fV19')
    1700000000
    """
    try:
        statements = json.loads(decode_cloudfront_base64(policy))['Statement']
        return min(int(s['Condition']['DateLessThan']['AWS:EpochTime']) for s in statements)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def jwt_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT, read without checking its signature.

    >>> jwt_expiry('eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2ln')
    1700000000
    """
    try:
        payload = token.split('.')[1]
        return int(json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))['exp'])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def millis_expiry(value: str) -> int | None:
    """``_strava_CloudFront-Expires`` holds epoch milliseconds.

    >>> millis_expiry('1700000000000')
    1700000000
    """
    try:
        return int(value) // 1000
    except ValueError:
        return None


_EXPIRY_READERS = {
    'CloudFront-Policy': policy_expiry,
    IDCF_COOKIE: jwt_expiry,
    EXPIRES_COOKIE: millis_expiry,
}


def cookies_expire_at(cookies: Iterable[Mapping]) -> int | None:
    """When the tile cookies stop working: the smallest expiry any of them states (epoch seconds).

    >>> cookies_expire_at([{'name': '_strava_CloudFront-Expires', 'value': '1700000500000'},
    ...                    {'name': '_strava_idcf', 'value': 'x.eyJleHAiOjE3MDAwMDAwMDB9.y'}])
    1700000000
    >>> cookies_expire_at([{'name': '_strava4_session', 'value': 'abc'}]) is None
    True
    """
    expiries = []
    for cookie in cookies:
        reader = _EXPIRY_READERS.get(cookie.get('name'))
        if reader and cookie.get('value'):
            expiry = reader(cookie['value'])
            if expiry is not None:
                expiries.append(expiry)
    return min(expiries) if expiries else None


def without_empty_values(cookies: Iterable[Mapping]) -> list[dict]:
    """Strava sometimes sends cookies with an empty value; sent back, they break every tile.

    >>> without_empty_values([{'name': 'a', 'value': ''}, {'name': 'b', 'value': '1'}])
    [{'name': 'b', 'value': '1'}]
    """
    return [dict(c) for c in cookies if c.get('value')]


def has_tile_cookies(cookies: Iterable[Mapping]) -> bool:
    """True when all three CloudFront cookies are present with a value.

    >>> has_tile_cookies([{'name': n, 'value': 'v'} for n in CLOUDFRONT_TRIO])
    True
    """
    names = {c.get('name') for c in cookies if c.get('value')}
    return all(name in names for name in CLOUDFRONT_TRIO)
