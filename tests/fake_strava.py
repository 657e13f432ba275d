"""A fake Strava that speaks HTTP like the real one, in the ways this project depends on.

One host and port serves the login pages (the legacy one-page form and today's two-step form,
rendered by JavaScript after load), the session and heatmap pages that set cookies in Strava's
real formats, the cookie-protected modern tiles, the legacy query-signed tiles and the public
low-zoom tiles. Knobs change its behaviour; counters tell a test what it was asked.

Run it as a demo server::

    python -m tests.fake_strava --port 8001 --cookie-lifetime 3600

and log in as ``rider@example.com`` with password ``correct horse``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.http_fake import ServedInThread

KEY_PAIR_ID = 'APKAFAKESTRAVAKEYPAIR'
SIGNING_SECRET = secrets.token_bytes(32)
HEAT_RGB = {
    'hot': (255, 80, 0), 'blue': (0, 120, 255), 'purple': (160, 0, 255), 'gray': (128, 128, 128),
    'bluered': (200, 0, 80), 'orange': (255, 160, 0), 'mobileblue': (0, 90, 200),
}
ERROR_TEXT = 'The username or password did not match. Please try again.'


# --- formats ---------------------------------------------------------------------------------

def cloudfront_base64(data: bytes) -> str:
    """CloudFront's base64: ``+``→``-``, ``=``→``_``, ``/``→``~``."""
    return base64.b64encode(data).decode().replace('+', '-').replace('=', '_').replace('/', '~')


def sign(policy: str) -> str:
    return cloudfront_base64(hmac.new(SIGNING_SECRET, policy.encode(), hashlib.sha256).digest())


def make_policy(expires: int) -> str:
    statement = {'Resource': 'https://*.strava.com/*', 'Condition': {'DateLessThan': {'AWS:EpochTime': expires}}}
    return cloudfront_base64(json.dumps({'Statement': [statement]}, separators=(',', ':')).encode())


def make_jwt(claims: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(',', ':')).encode()).rstrip(b'=').decode()
    body = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    signature = hmac.new(SIGNING_SECRET, body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def policy_epoch(policy: str) -> int:
    raw = base64.b64decode(policy.replace('-', '+').replace('_', '=').replace('~', '/'))
    return json.loads(raw)['Statement'][0]['Condition']['DateLessThan']['AWS:EpochTime']


def signed_set_is_valid(key_pair_id: str | None, policy: str | None, signature: str | None) -> bool:
    if not (key_pair_id and policy and signature) or key_pair_id != KEY_PAIR_ID:
        return False
    if not hmac.compare_digest(sign(policy), signature):
        return False
    try:
        return policy_epoch(policy) > time.time()
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def has_heat(z: int, x: int, y: int) -> bool:
    """Where the fake has heat; elsewhere its tiles answer 404 as Strava's do."""
    return (x * 7 + y * 13 + z) % 10 != 0


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


_IDAT_CACHE: dict[tuple[int, str], bytes] = {}


def tile_png(size: int, color: str, label: str) -> bytes:
    """A real RGBA PNG of ``size`` px with a diagonal heat line and a tEXt chunk naming the tile."""
    key = (size, color)
    if key not in _IDAT_CACHE:
        red, green, blue = HEAT_RGB.get(color, (255, 255, 255))
        rows = []
        for row in range(size):
            pixels = bytearray(size * 4)
            for col in range(max(0, row - 2), min(size, row + 3)):
                pixels[col * 4:col * 4 + 4] = bytes((red, green, blue, 220))
            rows.append(b'\x00' + bytes(pixels))
        _IDAT_CACHE[key] = _png_chunk(b'IDAT', zlib.compress(b''.join(rows), 6))
    header = _png_chunk(b'IHDR', struct.pack('>IIBBBBB', size, size, 8, 6, 0, 0, 0))
    text = _png_chunk(b'tEXt', b'Tile\x00' + label.encode())
    return b'\x89PNG\r\n\x1a\n' + header + text + _IDAT_CACHE[key] + _png_chunk(b'IEND', b'')


# --- pages -----------------------------------------------------------------------------------

BANNER = """
<div id="cookie-banner" style="position:fixed;inset:0;z-index:1000;background:rgba(0,0,0,.5)">
  <div style="background:#fff;margin:30vh auto;padding:1em;width:20em">
    <p>We use cookies.</p>
    <button data-cy="accept-cookies" onclick="document.getElementById('cookie-banner').remove()">Accept</button>
    <button data-cy="deny-cookies" onclick="document.getElementById('cookie-banner').remove()">Reject</button>
  </div>
</div>"""

LEGACY_FORM = """
<form id="login_form" action="/session" method="post">
  <input type="hidden" name="authenticity_token" value="{csrf}">
  {error}
  <input id="email" name="email" type="email" placeholder="Your Email">
  <input id="password" name="password" type="password" placeholder="Password">
  <button id="login-button" type="submit">Log In</button>
</form>"""

TWO_STEP_SCRIPT = """
<div id="root">Loading…</div>
<script>
window.addEventListener('load', () => setTimeout(() => {
  const root = document.getElementById('root');
  const csrf = document.querySelector('meta[name=csrf-token]').content;
  root.innerHTML = `{error}
    <form id="email-step"><input id="desktop-email" data-cy="email" type="email" name="email">
    <button type="submit" data-cy="login-button">Continue</button></form>`;
  document.getElementById('email-step').addEventListener('submit', (event) => {
    event.preventDefault();
    const email = document.getElementById('desktop-email').value;
    root.innerHTML = `<p>Enter the code we sent to your email</p>
      <input data-cy="otp-code" inputmode="numeric">
      <button id="use-password" type="button">Use password instead</button>`;
    document.getElementById('use-password').addEventListener('click', () => {
      root.innerHTML = `<form id="password-step" method="post" action="/session">
        <input type="hidden" name="authenticity_token">
        <input type="hidden" name="email">
        <input data-cy="password" type="password" name="password">
        <button type="submit" data-cy="login-button">Log In</button></form>`;
      const form = document.getElementById('password-step');
      form.authenticity_token.value = csrf;
      form.email.value = email;
    });
  });
}, 300));
</script>"""

OTP_PAGE = """<h1>Check your email</h1><p>Enter the 6-digit one-time code we emailed you.</p>
<form method="post" action="/session/otp"><input name="otp" autocomplete="one-time-code" data-cy="otp-code">
<button type="submit">Verify</button></form>"""

CAPTCHA_PAGE = """<h1>Log In</h1><p>Please confirm you are not a robot.</p>
<div class="g-recaptcha" data-sitekey="fake"><iframe title="reCAPTCHA" src="about:blank"></iframe></div>"""

CHANGED_PAGE = """<h1>Welcome back</h1><p>Sign in with your passkey on the Strava app.</p>"""


def page(body: str, csrf: str = '') -> bytes:
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta name="csrf-token" content="{csrf}">'
            f'<title>Log In | Strava</title></head><body>{body}</body></html>').encode()


# --- the server ------------------------------------------------------------------------------

@dataclass
class Account:
    password: str
    outcome: str = 'ok'  # ok | otp | captcha


@dataclass
class FakeStrava(ServedInThread):
    """The fake's state: accounts, knobs and counters. ``start()`` serves it on a free port."""

    login_shape: str = 'two_step'  # two_step | legacy | changed | hang
    banner: bool = True
    cookie_lifetime: int = 24 * 3600
    tile_latency: float = 0.0
    maps_latency: float = 0.0
    tile_status: int | None = None  # force every modern tile to answer this status
    tile_hang: bool = False
    tile_max_age: int = 7 * 24 * 3600
    send_empty_cookie: bool = True
    accounts: dict[str, Account] = field(default_factory=lambda: {
        'rider@example.com': Account('correct horse'),
        'otp@example.com': Account('correct horse', 'otp'),
        'robot@example.com': Account('correct horse', 'captcha'),
    })
    counters: Counter = field(default_factory=Counter)
    sessions: set[str] = field(default_factory=set)
    host: str = '127.0.0.1'
    port: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()

    # knobs and helpers for tests
    def reset(self) -> None:
        """Back to the default knobs, no sessions, zeroed counters; the server keeps running."""
        defaults = FakeStrava()
        for knob in ('login_shape', 'banner', 'cookie_lifetime', 'tile_latency', 'maps_latency', 'tile_status',
                     'tile_hang',
                     'tile_max_age', 'send_empty_cookie', 'accounts'):
            setattr(self, knob, getattr(defaults, knob))
        with self._lock:
            self.counters.clear()
            self.sessions.clear()

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def new_session(self) -> str:
        token = secrets.token_hex(20)
        with self._lock:
            self.sessions.add(token)
        return token

    def end_all_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    def tile_cookies(self, lifetime: int | None = None) -> dict[str, str]:
        """Fresh tile cookies as the heatmap page sets them, valid for ``lifetime`` seconds."""
        expires = int(time.time()) + (self.cookie_lifetime if lifetime is None else lifetime)
        policy = make_policy(expires)
        cookies = {
            'CloudFront-Key-Pair-Id': KEY_PAIR_ID,
            'CloudFront-Policy': policy,
            'CloudFront-Signature': sign(policy),
            '_strava_idcf': make_jwt({'sub': 'athlete-1', 'exp': expires + 600}),
            '_strava_CloudFront-Expires': str((expires + 300) * 1000),
        }
        if self.send_empty_cookie:
            cookies['_strava_cflt'] = ''
        return cookies

    def tile_url(self, activity='all', color='hot', z=13, x=4400, y=2686, suffix='') -> str:
        return f'{self.url}/identified/globalheat/{activity}/{color}/{z}/{x}/{y}{suffix}.png?v=19'


TILE_PATH = re.compile(r'^/(identified/globalheat|tiles-auth|tiles)/(\w+)/(\w+)/(\d+)/(\d+)/(\d+)(@2x)?\.png$')


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStrava
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True
    server_version = 'FakeStrava/1.0'

    def log_message(self, format, *args):  # quiet: tests read counters, not logs
        pass

    # plumbing
    def _send(self, status: int, body: bytes = b'', content_type='text/html; charset=utf-8',
              headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _cookies(self) -> dict[str, str]:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get('Cookie', ''))
        except Exception:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get('Content-Length') or 0)
        fields = parse_qs(self.rfile.read(length).decode())
        return {name: values[0] for name, values in fields.items()}

    def _valid_session(self) -> bool:
        return self._cookies().get('_strava4_session') in self.fake.sessions

    # routes
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == '/login':
            return self._login_page()
        if url.path in ('/maps', '/maps/global-heatmap'):
            return self._heatmap_page()
        if url.path in ('/dashboard', '/'):
            return self._send(200, page('<h1>Dashboard</h1>'))
        if url.path == '/__fake/counters':
            return self._send(200, json.dumps(self.fake.counters).encode(), 'application/json')
        match = TILE_PATH.match(url.path)
        if match:
            return self._tile(match, query)
        self._send(404, b'not found', 'text/plain')

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path == '/session':
            return self._login_post()
        self._send(404, b'not found', 'text/plain')

    def _login_page(self, error: str = ''):
        fake = self.fake
        fake.count('login_page')
        if fake.login_shape == 'hang':
            time.sleep(120)
            return
        csrf = self._cookies().get('_csrf') or secrets.token_urlsafe(16)
        error_html = f'<div class="alert-message" data-cy="login-error">{error}</div>' if error else ''
        if fake.login_shape == 'legacy':
            body = LEGACY_FORM.format(csrf=csrf, error=error_html)
        elif fake.login_shape == 'two_step':
            body = TWO_STEP_SCRIPT.replace('{error}', error_html)
        else:
            body = CHANGED_PAGE
        if fake.banner and not error:
            body = BANNER + body
        self._send(200, page(body, csrf),
                   headers=[('Set-Cookie', f'_csrf={csrf}; Path=/; HttpOnly; SameSite=Lax')])

    def _login_post(self):
        fake = self.fake
        fake.count('login_post')
        form = self._form()
        csrf = self._cookies().get('_csrf')
        if not csrf or not hmac.compare_digest(csrf, form.get('authenticity_token', '')):
            return self._send(422, b'Invalid authenticity token', 'text/plain')
        account = fake.accounts.get(form.get('email', '').strip().lower())
        if account is None or not hmac.compare_digest(account.password, form.get('password', '')):
            fake.count('login_rejected')
            return self._login_page(error=ERROR_TEXT)
        if account.outcome == 'otp':
            return self._send(200, page(OTP_PAGE))
        if account.outcome == 'captcha':
            return self._send(200, page(CAPTCHA_PAGE))
        fake.count('login_ok')
        token = fake.new_session()
        expires = time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(time.time() + 90 * 86400))
        self._send(302, b'', headers=[
            ('Location', '/dashboard'),
            ('Set-Cookie', f'_strava4_session={token}; Path=/; Expires={expires}; HttpOnly; SameSite=Lax'),
        ])

    def _heatmap_page(self):
        fake = self.fake
        fake.count('maps')
        time.sleep(fake.maps_latency)
        if not self._valid_session():
            return self._send(302, b'', headers=[('Location', '/login')])
        fake.count('maps_ok')
        expires = time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(time.time() + fake.cookie_lifetime))
        headers = [('Set-Cookie', f'{name}={value}; Path=/; Expires={expires}; Secure; HttpOnly'
                    if name.startswith('CloudFront') else f'{name}={value}; Path=/; Expires={expires}')
                   for name, value in fake.tile_cookies().items()]
        self._send(200, page('<h1>Global Heatmap</h1><div id="map"></div>'), headers=headers)

    def _tile(self, match: re.Match, query: dict[str, str]):
        fake = self.fake
        kind, activity, color, z, x, y, retina = match.groups()
        z, x, y = int(z), int(x), int(y)
        if kind == 'tiles-auth':
            fake.count('legacy_tiles')
            params = [query.get(name) for name in ('Key-Pair-Id', 'Policy', 'Signature')]
            if not any(params):
                return self._send(401, b'<Error><Code>MissingKey</Code></Error>', 'text/xml')
            if not signed_set_is_valid(*params):
                return self._send(403, b'<Error><Code>AccessDenied</Code></Error>', 'text/xml')
        elif kind == 'tiles':
            fake.count('public_tiles')
            if z > 11:
                return self._send(403, b'<Error><Code>AccessDenied</Code></Error>', 'text/xml')
        else:
            fake.count('tiles')
            if fake.tile_latency:
                time.sleep(fake.tile_latency)
            if fake.tile_hang:
                time.sleep(60)
                return
            if fake.tile_status:
                return self._send(fake.tile_status, b'upstream trouble', 'text/plain')
            cookies = self._cookies()
            if not signed_set_is_valid(*(cookies.get(n) for n in
                                         ('CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature'))):
                fake.count('tiles_denied')
                return self._send(403, b'<Error><Code>AccessDenied</Code><Message>Access denied</Message></Error>',
                                  'text/xml')
        if not (0 <= x < 2 ** z and 0 <= y < 2 ** z) or not has_heat(z, x, y):
            return self._send(404, b'', 'text/plain')
        size = 1024 if retina else 256 if query.get('px') == '256' else 512
        label = f'{activity}/{color}/{z}/{x}/{y}@{size}'
        fake.count('tiles_ok')
        self._send(200, tile_png(size, color, label), 'image/png',
                   headers=[('Cache-Control', f'max-age={fake.tile_max_age}')])


FakeStrava.handler = _Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=8001)
    parser.add_argument('--login-shape', default='two_step', choices=['two_step', 'legacy', 'changed', 'hang'])
    parser.add_argument('--cookie-lifetime', type=int, default=24 * 3600, help='seconds the tile cookies last')
    parser.add_argument('--tile-latency', type=float, default=0.0, help='seconds added to every modern tile')
    args = parser.parse_args()
    fake = FakeStrava(port=args.port, login_shape=args.login_shape, cookie_lifetime=args.cookie_lifetime,
                      tile_latency=args.tile_latency)
    fake.serve_until_interrupted('fake Strava (log in as rider@example.com / correct horse; '
                                 'counters at /__fake/counters)')


if __name__ == '__main__':
    main()
