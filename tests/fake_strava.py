"""A fake Strava that speaks HTTP like the real one, in the ways this project depends on.

One host and port serves the login pages, the session and heatmap pages that set cookies in
Strava's real formats, the cookie-protected modern tiles, the legacy query-signed tiles and the
public low-zoom tiles. Knobs change its behaviour; counters tell a test what it was asked.

The default login page has the shapes public scripts and issue threads of 2025–2026 describe
(docs/strava.md, "The login page"): two steps rendered by JavaScript, every field twice
with the hidden mobile copy first, ``POST /login/request_otp`` deciding between a code and the
password, a "Use password instead" button found by ``data-testid`` whose words follow the
account's language, a reCAPTCHA v3 badge, a cookie banner, the remember cookies, and a page that
navigates on by itself after the login.

Like Strava, it gives a browser without one a visitor's ``_strava4_session`` on the login page (not
logged in: the heatmap page sends it to the login page) and analytics cookies (``sp``, ``_ga``) that
nothing here needs. The dashboard's "Log Out" button posts ``_method=delete`` to ``/session``, as
Rails' logout links do: Strava then forgets that session (a copy of it elsewhere stops working too,
as users who log in and out often observed), deletes the remember cookies and hands out a new
visitor's session. ``end_all_sessions()`` ends every session at once.

Every account that reaches a code screen (the two-step page after the email step, the one-page
form's code page) is emailed a fresh 6-digit code, as Strava does: when a ``mailbox`` is set, a
few hundred ms after the ask the code mail is APPENDed to it over IMAP, from
``no-reply@strava.com``, worded in the account's language (English or German; the product relies
on neither wording). The two-step code screen sends the code as JSON to
``POST /login/verify_otp`` (``{"email", "otp"}``, the CSRF header as ``request_otp``); the
one-page form's code page posts the form to ``POST /session/otp``. A right code logs in as
``POST /session`` does (session and remember cookies, a redirect the page follows); a wrong one
gets the account's language's error. Knobs: ``send_code_mail`` (False: the mail never comes),
``refuse_codes`` (even the right code is refused).

The tile cookies state three expiries, as Strava's do: the policy's ``DateLessThan``, ``_strava_CloudFront-Expires``
(epoch ms) and the ``exp`` of the ``_strava_idcf`` JWT. ``earliest_expiry`` picks which of them comes first (the
others state 5 and 10 minutes later) and ``policy_statements`` how many statements the policy lists; the fake, as
the server, takes a policy's earliest ``DateLessThan`` as the end of the whole set.

Run it as a demo server::

    python -m tests.fake_strava --port 8001 --cookie-lifetime 3600

and log in as ``rider@example.com`` with password ``correct horse``, or with the emailed code:
``--mailbox imap://demouser:demopass@127.0.0.1:1143/INBOX`` delivers the code mails to an IMAP
server (``pymap --port 1143 --no-tls dict --demo-data`` is one).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import email.message
import email.utils
import fnmatch
import hashlib
import hmac
import html
import imaplib
import json
import random
import re
import secrets
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, unquote, urlsplit

from tests.http_fake import FakeHandler, ServedInThread
from tests.mail_server import Mailbox

KEY_PAIR_ID = 'APKAFAKESTRAVAKEYPAIR'
SIGNING_SECRET = secrets.token_bytes(32)
HEAT_RGB = {
    'hot': (255, 80, 0), 'blue': (0, 120, 255), 'purple': (160, 0, 255), 'gray': (128, 128, 128),
    'bluered': (200, 0, 80), 'orange': (255, 160, 0), 'mobileblue': (0, 90, 200), 'grayscale': (250, 250, 250),
}
OPAQUE_BACKGROUND = {'grayscale': (90, 90, 90)}
ACTIVITIES = ('all', 'ride', 'run', 'water', 'winter')
SPORT_TYPES = (
    'Ride', 'Run', 'GravelRide', 'MountainBikeRide', 'EBikeRide', 'EMountainBikeRide', 'VirtualRide', 'Walk',
    'Hike', 'TrailRun', 'VirtualRun', 'NordicSki', 'BackcountrySki', 'AlpineSki', 'Snowboard', 'Snowshoe',
    'Kayaking', 'Canoeing', 'Rowing', 'StandUpPaddling', 'Surfing', 'Swim', 'InlineSkate', 'IceSkate', 'RollerSki',
    'Windsurf', 'Kitesurf', 'Sail', 'Velomobile', 'Handcycle', 'Wheelchair', 'Skateboard',
)
EXPIRY_COOKIES = ('CloudFront-Policy', '_strava_CloudFront-Expires', '_strava_idcf')  # the tile cookies with a date
POLICY_RESOURCES = {'identified': 'https://*content-*.strava.com/identified/*', 'legacy': 'https://*.strava.com/*'}
ERROR_TEXT = 'The username or password did not match. Please try again.'
# What the two-step page says after the email step, in the account's language.
TEXTS = {
    'en': {'code': 'Enter the code we sent to your email', 'cta': 'Use password instead', 'login': 'Log In',
           'refused': 'The email or password you entered is incorrect.', 'verify': 'Verify',
           'code_refused': 'That code is incorrect or has expired.'},
    'de': {'code': 'Gib den Code ein, den wir dir per E-Mail geschickt haben', 'cta': 'Stattdessen Passwort verwenden',
           'login': 'Einloggen', 'refused': 'Die E-Mail-Adresse oder das Passwort ist falsch.', 'verify': 'Bestätigen',
           'code_refused': 'Der Code ist falsch oder abgelaufen.'},
}
# The code mail, in the account's language; its links and footer carry numbers that are not the code.
MAIL_TEXTS = {
    'en': {'subject': 'Your Strava log in code', 'greeting': 'Hi there,',
           'lead': 'Enter this code to log in to Strava:', 'expiry': 'The code expires in 10 minutes.',
           'settings': 'Email settings'},
    'de': {'subject': 'Dein Anmeldecode für Strava', 'greeting': 'Hallo,',
           'lead': 'Gib diesen Code ein, um dich bei Strava anzumelden:', 'expiry': 'Der Code läuft in 10 Minuten ab.',
           'settings': 'E-Mail-Einstellungen'},
}
MAIL_FOOTER = 'Strava, Inc. · 208 Utah Street, Suite 400 · San Francisco, CA 94103'


# --- formats ---------------------------------------------------------------------------------

def cloudfront_base64(data: bytes) -> str:
    """CloudFront's base64: ``+``→``-``, ``=``→``_``, ``/``→``~``."""
    return base64.b64encode(data).decode().replace('+', '-').replace('=', '_').replace('/', '~')


def sign(policy: str) -> str:
    return cloudfront_base64(hmac.new(SIGNING_SECRET, policy.encode(), hashlib.sha256).digest())


def make_policy(expires: int, scope: str = 'identified', statements: int = 1) -> str:
    """A CloudFront custom policy whose earliest ``DateLessThan`` is ``expires``.

    CloudFront's policy holds a list of statements; with several, the earliest is the last, each one before it an
    hour later, so that a reader that takes the first statement's date gets it wrong.

    >>> [s['Condition']['DateLessThan']['AWS:EpochTime'] for s in _policy_statements(make_policy(100, statements=3))]
    [7300, 3700, 100]
    """
    listed = [{'Resource': POLICY_RESOURCES[scope],
               'Condition': {'DateLessThan': {'AWS:EpochTime': expires + 3600 * (statements - 1 - n)}}}
              for n in range(statements)]
    return cloudfront_base64(json.dumps({'Statement': listed}, separators=(',', ':')).encode())


def make_jwt(claims: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(',', ':')).encode()).rstrip(b'=').decode()
    body = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    signature = hmac.new(SIGNING_SECRET, body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _policy_statements(policy: str) -> list[dict]:
    raw = base64.b64decode(policy.replace('-', '+').replace('_', '=').replace('~', '/'))
    return json.loads(raw)['Statement']


def policy_epoch(policy: str) -> int:
    """When a policy stops working: the earliest ``DateLessThan`` of its statements."""
    return min(s['Condition']['DateLessThan']['AWS:EpochTime'] for s in _policy_statements(policy))


def expiries(cookies: dict[str, str]) -> dict[str, int]:
    """The expiry each of the three tile cookies that state one states, decoded here on the fake's side.

    >>> sorted(expiries(FakeStrava().tile_cookies(0)).items(), key=lambda item: item[1])[0][0]
    'CloudFront-Policy'
    """
    payload = cookies['_strava_idcf'].split('.')[1]
    return {'CloudFront-Policy': policy_epoch(cookies['CloudFront-Policy']),
            '_strava_CloudFront-Expires': int(cookies['_strava_CloudFront-Expires']) // 1000,
            '_strava_idcf': json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))['exp']}


def policy_covers(policy: str, path: str) -> bool:
    """Whether one of the policy's Resources covers a tile path (the fake serves every host, so only the path counts).

    >>> policy_covers(make_policy(0, 'identified'), '/tiles-auth/all/hot/12/1/2.png')
    False
    >>> policy_covers(make_policy(0, 'legacy'), '/tiles-auth/all/hot/12/1/2.png')
    True
    """
    return any(fnmatch.fnmatchcase(path, urlsplit(s['Resource']).path) for s in _policy_statements(policy))


def signed_set_is_valid(key_pair_id: str | None, policy: str | None, signature: str | None,
                        path: str | None) -> bool:
    """CloudFront's check of a signed cookie or query set; ``path`` None: whatever the policy's Resource."""
    if not (key_pair_id and policy and signature) or key_pair_id != KEY_PAIR_ID:
        return False
    if not hmac.compare_digest(sign(policy), signature):
        return False
    try:
        return policy_epoch(policy) > time.time() and (path is None or policy_covers(policy, path))
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def has_heat(z: int, x: int, y: int) -> bool:
    """Where the fake has heat; elsewhere its tiles answer 404 as Strava's do."""
    return (x * 7 + y * 13 + z) % 10 != 0


def known_activity(activity: str) -> bool:
    """Strava's activity groups and ``sport_<Type>`` for the sport types it knows.

    >>> [known_activity(a) for a in ('winter', 'sport_GravelRide', 'sport_Teleport')]
    [True, True, False]
    """
    return activity in ACTIVITIES or activity.removeprefix('sport_') in SPORT_TYPES


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


_IDAT_CACHE: dict[tuple[int, str], bytes] = {}


def tile_png(size: int, color: str, label: str) -> bytes:
    """A real RGBA PNG of ``size`` px with a diagonal heat line, a heat band along its top edge (so that
    no flip or transpose of the tile looks like the tile), and a tEXt chunk naming the tile.

    Transparent around the heat, except for the opaque colors (``grayscale``), which fill the tile.
    """
    key = (size, color)
    if key not in _IDAT_CACHE:
        red, green, blue = HEAT_RGB.get(color, (255, 255, 255))
        background = bytes((*OPAQUE_BACKGROUND[color], 255)) if color in OPAQUE_BACKGROUND else bytes(4)
        rows = []
        for row in range(size):
            pixels = bytearray(background * size)
            heat = bytes((red, green, blue, 255 if color in OPAQUE_BACKGROUND else 220))
            for col in range(max(0, row - 2), min(size, row + 3)) if row >= size // 64 else range(size):
                pixels[col * 4:col * 4 + 4] = heat
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

# Cookiebot loads after the page and lays a dialog over it that takes every click until answered.
COOKIEBOT = """
<div id="CybotCookiebotDialog" role="dialog" style="display:none;position:fixed;inset:0;z-index:2000;
     background:rgba(0,0,0,.6)">
  <div style="background:#fff;margin:40vh auto 0;padding:1em;width:24em">
    <p>This website uses cookies</p>
    <button id="CybotCookiebotDialogBodyButtonDecline">Deny</button>
    <button id="CybotCookiebotDialogBodyLevelButtonLevelOptinAllowAll">Allow all</button>
  </div>
</div>
<script>
window.addEventListener('load', () => setTimeout(() => {
  const dialog = document.getElementById('CybotCookiebotDialog');
  dialog.style.display = 'block';
  for (const button of dialog.querySelectorAll('button')) button.onclick = () => dialog.remove();
}, 150));
</script>"""

# reCAPTCHA v3 puts its badge on every page, and a challenge frame that stays hidden unless it challenges.
RECAPTCHA_BADGE = """
<div class="grecaptcha-badge" style="position:fixed;right:0;bottom:14px;width:256px;height:60px">
  <iframe title="reCAPTCHA" src="/recaptcha/api2/anchor?size=invisible" width="256" height="60"></iframe>
</div>
<div style="visibility:hidden;position:absolute;top:-10000px;opacity:0">
  <iframe title="recaptcha challenge expires in two minutes" src="/recaptcha/api2/bframe?k=fake"></iframe>
</div>"""

# reCAPTCHA v2's "I'm not a robot" box: its anchor frame is shown in the page, not in the badge.
RECAPTCHA_CHECKBOX = """
<div class="g-recaptcha" data-sitekey="fake-site-key">
  <iframe title="reCAPTCHA" src="/recaptcha/api2/anchor?k=fake&size=normal" width="304" height="78"></iframe>
</div>"""

RECAPTCHA_CHALLENGE = """
<div style="position:fixed;top:10%;left:30%;z-index:3000;background:#fff">
  <iframe title="recaptcha challenge expires in two minutes" src="/recaptcha/api2/bframe?k=fake"
          width="400" height="580"></iframe>
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
const TEXTS = {texts};
const CHALLENGE = {challenge};
const CHECKBOX = {checkbox};
const NAVIGATES_ON = {navigates_on};
const csrf = document.querySelector('meta[name=csrf-token]').content;
const root = document.getElementById('root');
// Every field exists twice: the hidden mobile copy first, then the visible desktop copy.
const twice = (part) => `<div class="mobile" style="display:none">${part('mobile')}</div>
  <div class="desktop">${part('desktop')}</div>`;
const alert = (text) => text ? `<div role="alert" class="error">${text}</div>` : '';

function emailStep(error) {
  root.innerHTML = alert(error) + twice((copy) => `<form class="email-step">
    <label>Email <input id="${copy}-email" data-cy="email" type="email" name="email"></label>
    <button type="submit">Log In</button></form>`);
  for (const form of root.querySelectorAll('form')) form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = form.email.value;
    const answer = await fetch('/login/request_otp', {method: 'POST',
      body: JSON.stringify({email, webdriver: navigator.webdriver}),
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
    if (!answer.ok) return emailStep('An unexpected error occurred. Please try again later.');
    const {use_password, locale, checkbox} = await answer.json();
    if (checkbox) return root.innerHTML = '<p>Please confirm you are not a robot.</p>' + CHECKBOX;
    codeStep(email, use_password, TEXTS[locale] || TEXTS.en);
  });
}

function codeStep(email, usePassword, text) {
  root.innerHTML = `<h2>${text.code}</h2>` + twice((copy) => `<form class="code-step">
    <input id="${copy}-otp" data-cy="otp" name="otp" inputmode="numeric" autocomplete="one-time-code">
    <button type="submit">${text.verify}</button></form>` +
    (usePassword ? `<div data-testid="use-password-cta"><button type="button">${text.cta}</button></div>` : ''));
  for (const button of root.querySelectorAll('[data-testid=use-password-cta] button')) {
    button.addEventListener('click', () => passwordStep(email, text));
  }
  for (const form of root.querySelectorAll('form.code-step')) form.addEventListener('submit', async (event) => {
    event.preventDefault();
    loggedInOrError(await fetch('/login/verify_otp', {method: 'POST',
      body: JSON.stringify({email, otp: form.otp.value}),
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}}));
  });
}

async function loggedInOrError(answer) {
  // Logged in: the request redirected to the dashboard, where the app goes a moment later.
  if (answer.redirected && NAVIGATES_ON) return setTimeout(() => location.assign(answer.url), Math.random() * 300);
  if (answer.redirected) return root.innerHTML = '<p>Logged in</p>';
  const {error, challenge} = await answer.json();
  root.insertAdjacentHTML('afterbegin', challenge ? CHALLENGE : alert(error));
}

function passwordStep(email, text) {
  root.innerHTML = twice((copy) => `<form method="post" action="/session">
    <input type="hidden" name="authenticity_token"><input type="hidden" name="email">
    <input id="${copy}-password" data-cy="password" type="password" name="password">
    <button type="submit">${text.login}</button></form>`);
  for (const form of root.querySelectorAll('form')) {
    form.authenticity_token.value = csrf;
    form.email.value = email;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      loggedInOrError(await fetch('/session', {method: 'POST', body: new URLSearchParams(new FormData(form))}));
    });
  }
}

window.addEventListener('load', () => setTimeout(() => emailStep(''), 300));
</script>"""

OTP_PAGE = """<h1>Check your email</h1>{error}<p>Enter the 6-digit one-time code we emailed you.</p>
<form method="post" action="/session/otp"><input type="hidden" name="email" value="{email}">
<input name="otp" autocomplete="one-time-code" data-cy="otp-code"><button type="submit">Verify</button></form>"""

CAPTCHA_PAGE = '<h1>Log In</h1><p>Please confirm you are not a robot.</p>' + RECAPTCHA_CHALLENGE

CHANGED_PAGE = """<h1>Welcome back</h1><p>Sign in with your passkey on the Strava app.</p>"""

# After a login the dashboard hands over to onboarding by itself, a moment after it loaded.
NAVIGATES_ON = "<script>setTimeout(() => location.assign('/onboarding'), {delay_ms});</script>"

LOG_OUT = """<form method="post" action="/session"><input type="hidden" name="_method" value="delete">
<button type="submit" id="log-out">Log Out</button></form>"""


def code_mail(to: str, code: str, language: str) -> bytes:
    """The code mail as Strava might send it: text and HTML, a footer and links with numbers that are not the code."""
    text = MAIL_TEXTS.get(language, MAIL_TEXTS['en'])
    settings_link = f'https://www.strava.com/settings/email_unsubscribe?u={secrets.randbelow(900000) + 100000}'
    mail = email.message.EmailMessage()
    mail['From'] = 'Strava <no-reply@strava.com>'
    mail['To'] = to
    mail['Subject'] = text['subject']
    mail['Date'] = email.utils.formatdate()
    mail['Message-ID'] = email.utils.make_msgid(domain='strava.com')
    mail.set_content(f"{text['greeting']}\n\n{text['lead']}\n\n    {code}\n\n{text['expiry']}\n\n"
                     f"{text['settings']}: {settings_link}\n{MAIL_FOOTER}\n")
    mail.add_alternative(
        f'<html><head><style>.code {{color: #fc5200; font-size: 32px}}</style></head><body>'
        f'<table width="600"><tr><td>{text["greeting"]}</td></tr><tr><td>{text["lead"]}</td></tr>'
        f'<tr><td class="code"><strong>{code}</strong></td></tr><tr><td>{text["expiry"]}</td></tr>'
        f'<tr><td><a href="{settings_link}">{text["settings"]}</a><br>{MAIL_FOOTER}</td></tr></table>'
        f'<img src="https://click.strava.com/open?id=20250206123456789" width="1" height="1"></body></html>',
        subtype='html')
    return bytes(mail)


def page(body: str, csrf: str = '') -> bytes:
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta name="csrf-token" content="{csrf}">'
            f'<title>Log In | Strava</title></head><body>{body}</body></html>').encode()


def http_date(epoch: float) -> str:
    return time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(epoch))


# --- the server ------------------------------------------------------------------------------

@dataclass
class Account:
    password: str
    outcome: str = 'ok'  # ok | otp (a code only: no password login) | captcha
    athlete_id: str = '12345678'


@dataclass
class FakeStrava(ServedInThread):
    """The fake's state: accounts, knobs and counters. ``start()`` serves it on a free port."""

    login_shape: str = 'two_step'  # two_step | legacy | changed | hang
    banner: bool = True  # the data-cy deny/accept banner
    cookiebot: bool = False  # Cookiebot's dialog, which takes every click until answered
    recaptcha_badge: bool = True  # reCAPTCHA v3's badge on every login page (not a challenge)
    recaptcha_checkbox: bool = False  # reCAPTCHA v2's "I'm not a robot" box after the email step (a challenge)
    account_language: str = 'en'  # the two-step page's language after the email step: en | de
    block_browsers: str = 'headless'  # POST /login/request_otp answers 403 to: none | headless | all (browsers)
    post_login_navigation: bool = True  # after a login the page goes on by itself: dashboard, then onboarding
    policy_scope: str = 'identified'  # identified: query-signed /tiles-auth/ URLs are refused | legacy
    cookie_lifetime: int = 24 * 3600  # of the tile cookie set: until the earliest expiry its cookies state
    earliest_expiry: str = 'CloudFront-Policy'  # or _strava_CloudFront-Expires, _strava_idcf: the one that is earliest
    policy_statements: int = 1  # statements in the CloudFront policy (make_policy)
    tile_latency: float = 0.0
    maps_latency: float = 0.0
    maps_gate: threading.Event | None = None  # the heatmap page waits until it is set (at most a minute)
    maps_status: int | None = None  # force /maps to answer this status (429, 503), without cookies
    tile_status: int | None = None  # force every modern tile to answer this status
    tile_body: bytes | None = None  # answer every modern tile that has heat with this body (200, image/png)
    tile_hang: bool = False
    tile_max_age: int = 7 * 24 * 3600
    send_empty_cookie: bool = True
    mailbox: Mailbox | None = None  # where the code mails go; None: nowhere
    send_code_mail: bool = True  # False: the code mail never comes
    mail_delay: float = 0.3  # seconds from the ask to the code mail
    refuse_codes: bool = False  # refuse every code, the right one too
    accounts: dict[str, Account] = field(default_factory=lambda: {
        'rider@example.com': Account('correct horse'),
        'otp@example.com': Account('correct horse', 'otp', '23456789'),
        'robot@example.com': Account('correct horse', 'captcha', '34567890'),
    })
    login_headers: dict[str, str] = field(default_factory=dict)  # the last GET /login's request headers
    counters: Counter = field(default_factory=Counter)
    sessions: set[str] = field(default_factory=set)
    codes: dict[str, str] = field(default_factory=dict)  # email -> the code last sent, until it is used
    codes_sent: list[str] = field(default_factory=list)  # every code ever sent, for tests to look for
    host: str = '127.0.0.1'
    port: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self.generation = 0  # one more at each reset: a slow request of an earlier test counts nothing in this one

    # knobs and helpers for tests
    def reset(self) -> None:
        """Back to the default knobs, no sessions, zeroed counters; the server keeps running."""
        defaults = FakeStrava()
        for knob in dataclasses.fields(self):
            if knob.name not in ('counters', 'sessions', 'codes', 'codes_sent', 'host', 'port'):
                setattr(self, knob.name, getattr(defaults, knob.name))
        with self._lock:
            self.generation += 1
            self.counters.clear()
            self.sessions.clear()
            self.codes.clear()

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

    def email_code(self, email: str) -> None:
        """A fresh code for ``email``, mailed to ``mailbox`` a moment later (unless the mail never comes)."""
        code = f'{secrets.randbelow(10 ** 6):06d}'
        with self._lock:
            self.codes[email] = code
            self.codes_sent.append(code)
            self.counters['codes_asked'] += 1
        mailbox = self.mailbox
        if mailbox is not None and self.send_code_mail:
            mail = code_mail(email, code, self.account_language)
            threading.Timer(self.mail_delay, self._deliver, (mailbox, mail)).start()

    def _deliver(self, mailbox: Mailbox, mail: bytes) -> None:
        try:
            mailbox.append(mail, who='fake-strava')
        except (OSError, imaplib.IMAP4.error):  # the mail server went away: like a mail lost on its way
            self.count('code_mails_lost')
        else:
            self.count('code_mails')

    def code_matches(self, email: str, given: str) -> bool:
        """A right code is used up; ``refuse_codes`` refuses even that."""
        with self._lock:
            code = self.codes.get(email)
            if self.refuse_codes or not code or not hmac.compare_digest(code, given.strip()):
                self.counters['codes_refused'] += 1
                return False
            del self.codes[email]
            return True

    def tile_cookies(self, lifetime: int | None = None) -> dict[str, str]:
        """Fresh tile cookies as the heatmap page sets them, valid for ``lifetime`` seconds.

        Three of them state an expiry; ``earliest_expiry`` names the one that expires after ``lifetime``, the
        other two state 5 and 10 minutes later (in the order policy, Expires, idcf).
        """
        expires = int(time.time()) + (self.cookie_lifetime if lifetime is None else lifetime)
        order = [self.earliest_expiry, *(name for name in EXPIRY_COOKIES if name != self.earliest_expiry)]
        at = {name: expires + 300 * rank for rank, name in enumerate(order)}
        policy = make_policy(at['CloudFront-Policy'], self.policy_scope, self.policy_statements)
        cookies = {
            'CloudFront-Key-Pair-Id': KEY_PAIR_ID,
            'CloudFront-Policy': policy,
            'CloudFront-Signature': sign(policy),
            '_strava_idcf': make_jwt({'sub': 'athlete-1', 'exp': at['_strava_idcf']}),
            '_strava_CloudFront-Expires': str(at['_strava_CloudFront-Expires'] * 1000),
        }
        if self.send_empty_cookie:
            cookies['_strava_cflt'] = ''
        return cookies

    def remember_cookies(self, account: Account) -> dict[str, str]:
        """What a login sets besides the session: the athlete id and a token of about 30 days."""
        now = int(time.time())
        return {'strava_remember_id': account.athlete_id,
                'strava_remember_token': make_jwt({'sub': account.athlete_id, 'iat': now, 'exp': now + 30 * 86400})}

    def cookie_export(self, lifetime: int | None = None, session: bool = True, tiles: dict | None = None) -> str:
        """A Cookie-Editor style JSON export of a browser logged in as rider@example.com, as a user makes one.

        ``tiles``: the tile cookies the browser still holds from its last visit of the heatmap (default: fresh ones).
        """
        cookies = dict(self.tile_cookies(lifetime) if tiles is None else tiles)
        if session:
            cookies['_strava4_session'] = self.new_session()
            cookies.update(self.remember_cookies(self.accounts['rider@example.com']))
        return json.dumps([{'name': name, 'value': value, 'domain': '.strava.com', 'path': '/', 'secure': True,
                            'httpOnly': name.startswith('_strava4'), 'expirationDate': time.time() + 86400}
                           for name, value in cookies.items()])

    def server_settings(self) -> dict[str, str]:
        """The settings that point the redirector at this fake instead of Strava."""
        return {'STRAVA_TILE_URL': self.url + '/identified/globalheat/{activity}/{color}/{z}/{x}/{y}{suffix}.png?v=19',
                'STRAVA_PERSONAL_TILE_URL': self.url + '/personal-heatmaps/tiles/{athlete_id}/{color}/{z}/{x}/{y}'
                                                       '{suffix}.png?filter_type={activity}&include_everyone=true',
                'STRAVA_MAPS_URL': self.url + '/maps', 'STRAVA_LOGIN_URL': self.url + '/login'}

    def refuses_browser(self, user_agent: str, webdriver: object) -> bool:
        """Strava's bot protection, as far as the fake plays it: a browser that says it is headless or automated."""
        return self.block_browsers == 'all' or (self.block_browsers == 'headless'
                                                and ('Headless' in user_agent or webdriver is True))

    def tile_url(self, activity='all', color='hot', z=13, x=4400, y=2686, suffix='') -> str:
        return f'{self.url}/identified/globalheat/{activity}/{color}/{z}/{x}/{y}{suffix}.png?v=19'


TILE_PATH = re.compile(r'^/(identified/globalheat|tiles-auth|tiles|personal-heatmaps/tiles)/(\w+)/(\w+)/(\d+)/(\d+)/'
                       r'(\d+)(@2x)?\.png$')
ACCESS_DENIED = b'<Error><Code>AccessDenied</Code><Message>Access denied</Message></Error>'


class _Handler(FakeHandler):
    fake: FakeStrava
    server_version = 'FakeStrava/1.0'

    # plumbing
    def handle(self):
        try:
            super().handle()
        except ConnectionError:  # a browser went away mid-request, e.g. from a page that navigated on
            pass

    def _cookies(self) -> dict[str, str]:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get('Cookie', ''))
        except Exception:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}

    def _body(self) -> str:
        return self.rfile.read(int(self.headers.get('Content-Length') or 0)).decode()

    def _form(self) -> dict[str, str]:
        return {name: values[0] for name, values in parse_qs(self._body()).items()}

    def _valid_session(self) -> bool:
        return self._cookies().get('_strava4_session') in self.fake.sessions

    def _csrf_matches(self, sent: str) -> bool:
        csrf = self._cookies().get('_csrf')
        return bool(csrf) and hmac.compare_digest(csrf, sent)

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
            hop = NAVIGATES_ON.format(delay_ms=random.randint(0, 300)) if self.fake.post_login_navigation else ''
            return self._send(200, page('<h1>Dashboard</h1>' + LOG_OUT + hop), headers=self._analytics('_ga'))
        if url.path == '/onboarding':
            return self._send(200, page('<h1>Welcome to Strava</h1>' + LOG_OUT))
        if url.path.startswith('/recaptcha/api2/'):
            return self._send(200, page('<div>reCAPTCHA</div>'))
        if url.path == '/__fake/counters':
            return self._send(200, json.dumps(self.fake.counters).encode(), 'application/json')
        if url.path == '/__fake/export':  # what a user exports from a logged-in browser, for the demo
            return self._send(200, self.fake.cookie_export().encode(), 'application/json')
        match = TILE_PATH.match(url.path)
        if match:
            return self._tile(match, query)
        self._send(404, b'not found', 'text/plain')

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path == '/session':
            return self._login_post()
        if url.path == '/login/request_otp':
            return self._request_otp()
        if url.path == '/login/verify_otp':
            return self._verify_otp()
        if url.path == '/session/otp':
            return self._legacy_code_post()
        self._send(404, b'not found', 'text/plain')

    def _login_page(self, error: str = ''):
        fake = self.fake
        fake.count('login_page')
        if self.command == 'GET':
            fake.login_headers = dict(self.headers)
        if fake.login_shape == 'hang':
            time.sleep(120)
            return
        csrf = self._cookies().get('_csrf') or secrets.token_urlsafe(16)
        if fake.login_shape == 'legacy':
            error_html = f'<div class="alert-message" data-cy="login-error">{error}</div>' if error else ''
            body = LEGACY_FORM.format(csrf=csrf, error=error_html)
        elif fake.login_shape == 'two_step':
            body = (TWO_STEP_SCRIPT.replace('{texts}', json.dumps(TEXTS))
                    .replace('{challenge}', json.dumps(RECAPTCHA_CHALLENGE))
                    .replace('{checkbox}', json.dumps(RECAPTCHA_CHECKBOX))
                    .replace('{navigates_on}', json.dumps(fake.post_login_navigation)))
        else:
            body = CHANGED_PAGE
        if fake.banner and not error:
            body = BANNER + body
        if fake.cookiebot and not error:
            body += COOKIEBOT
        if fake.recaptcha_badge:
            body += RECAPTCHA_BADGE
        visitor = [] if '_strava4_session' in self._cookies() else [self._visitor_session()]
        self._send(200, page(body, csrf), headers=[('Set-Cookie', f'_csrf={csrf}; Path=/; HttpOnly; SameSite=Lax'),
                                                   *visitor, *self._analytics('sp')])

    def _visitor_session(self) -> tuple[str, str]:
        """A session for a browser that is not logged in: Strava gives every visitor one."""
        self.fake.count('visitor_sessions')
        return ('Set-Cookie', f'_strava4_session={secrets.token_hex(20)}; Path=/; '
                              f'Expires={http_date(time.time() + 14 * 86400)}; HttpOnly; SameSite=Lax')

    def _analytics(self, name: str) -> list[tuple[str, str]]:
        """An analytics cookie of the site (``sp``, ``_ga``), which nothing but analytics needs."""
        if name in self._cookies():
            return []
        expires = http_date(time.time() + 365 * 86400)
        return [('Set-Cookie', f'{name}={secrets.token_hex(16)}; Path=/; Expires={expires}')]

    def _log_out(self):
        """Strava forgets the session, deletes the remember cookies and gives the browser a visitor's session."""
        fake = self.fake
        fake.count('logout')
        with fake._lock:
            fake.sessions.discard(self._cookies().get('_strava4_session'))
        gone = [('Set-Cookie', f'{name}=; Path=/; Max-Age=0') for name in ('strava_remember_id',
                                                                            'strava_remember_token')]
        self._send(302, b'', headers=[('Location', '/login'), self._visitor_session(), *gone])

    def _request_otp(self):
        """The email step asks whether this account may use a password; bot protection can refuse it."""
        fake = self.fake
        fake.count('request_otp')
        try:
            asked = json.loads(self._body())
            email = str(asked.get('email', ''))
        except (ValueError, AttributeError):
            return self._send(400, b'{"error":"bad request"}', 'application/json')
        if not self._csrf_matches(self.headers.get('X-CSRF-Token', '')):
            return self._send(422, b'{"error":"invalid authenticity token"}', 'application/json')
        if fake.refuses_browser(self.headers.get('User-Agent', ''), asked.get('webdriver')):
            fake.count('request_otp_blocked')
            return self._send(403, b'{"error":"forbidden"}', 'application/json')
        account = fake.accounts.get(email.strip().lower())
        if account is not None:
            fake.email_code(email.strip().lower())
        # Unknown addresses are offered the password too, so that the answer does not reveal accounts.
        use_password = account is None or account.outcome != 'otp'
        answer = {'use_password': use_password, 'locale': fake.account_language,
                  **({'checkbox': True} if fake.recaptcha_checkbox else {})}
        self._send(200, json.dumps(answer).encode(), 'application/json')

    def _login_post(self):
        fake = self.fake
        form = self._form()
        if form.get('_method') == 'delete':
            return self._log_out()
        fake.count('login_post')
        if not self._csrf_matches(form.get('authenticity_token', '')):
            return self._send(422, b'Invalid authenticity token', 'text/plain')
        account = fake.accounts.get(form.get('email', '').strip().lower())
        two_step = fake.login_shape == 'two_step'
        if (account is None or not hmac.compare_digest(account.password, form.get('password', ''))
                or (two_step and account.outcome == 'otp')):
            fake.count('login_rejected')
            if two_step:
                refused = TEXTS.get(fake.account_language, TEXTS['en'])['refused']
                return self._send(401, json.dumps({'error': refused}).encode(), 'application/json')
            return self._login_page(error=ERROR_TEXT)
        email = form['email'].strip().lower()
        if account.outcome == 'otp':
            fake.email_code(email)
            return self._send(200, page(OTP_PAGE.format(email=html.escape(email), error='')))
        if account.outcome == 'captcha':
            if two_step:
                return self._send(200, b'{"challenge": true}', 'application/json')
            return self._send(200, page(CAPTCHA_PAGE + RECAPTCHA_BADGE))
        self._logged_in(account)

    def _logged_in(self, account: Account) -> None:
        """A login that worked: the session and remember cookies, and on to the dashboard."""
        fake = self.fake
        fake.count('login_ok')
        cookies = [('_strava4_session', fake.new_session(), 90), *((name, value, 30) for name, value in
                                                                   fake.remember_cookies(account).items())]
        self._send(302, b'', headers=[('Location', '/dashboard'), *(
            ('Set-Cookie', f'{name}={value}; Path=/; Expires={http_date(time.time() + days * 86400)}; HttpOnly; '
                           'SameSite=Lax') for name, value, days in cookies)])

    def _verify_otp(self):
        """The two-step page sends the emailed code; a right one logs in as the password does."""
        fake = self.fake
        fake.count('verify_otp')
        try:
            sent = json.loads(self._body())
            email, code = str(sent.get('email', '')).strip().lower(), str(sent.get('otp', ''))
        except (ValueError, AttributeError):
            return self._send(400, b'{"error":"bad request"}', 'application/json')
        if not self._csrf_matches(self.headers.get('X-CSRF-Token', '')):
            return self._send(422, b'{"error":"invalid authenticity token"}', 'application/json')
        account = fake.accounts.get(email)
        if account is None or not fake.code_matches(email, code):
            refused = TEXTS.get(fake.account_language, TEXTS['en'])['code_refused']
            return self._send(401, json.dumps({'error': refused}).encode(), 'application/json')
        if account.outcome == 'captcha':
            return self._send(200, b'{"challenge": true}', 'application/json')
        self._logged_in(account)

    def _legacy_code_post(self):
        """The one-page form's code page posts the emailed code."""
        fake = self.fake
        fake.count('verify_otp')
        form = self._form()
        email = form.get('email', '').strip().lower()
        account = fake.accounts.get(email)
        if account is None or not fake.code_matches(email, form.get('otp', '')):
            error = f'<div class="alert-message" role="alert">{TEXTS["en"]["code_refused"]}</div>'
            return self._send(200, page(OTP_PAGE.format(email=html.escape(email), error=error)))
        self._logged_in(account)

    def _heatmap_page(self):
        fake = self.fake
        fake.count('maps')
        cookies = self._cookies()
        if cookies.get('strava_remember_id') and cookies.get('strava_remember_token'):
            fake.count('maps_with_remember')
        generation = fake.generation
        time.sleep(fake.maps_latency)
        if fake.maps_gate:
            fake.maps_gate.wait(60)
        if fake.generation != generation:
            return self._send(503, page('<h1>The test that asked has ended</h1>'))
        if fake.maps_status:
            retry_after = [('Retry-After', '60')] if fake.maps_status == 429 else []
            return self._send(fake.maps_status, page('<h1>Something went wrong</h1>'), headers=retry_after)
        if not self._valid_session():
            return self._send(302, b'', headers=[('Location', '/login')])
        fake.count('maps_ok')
        expires = http_date(time.time() + fake.cookie_lifetime)
        headers = [('Set-Cookie', f'{name}={value}; Path=/; Expires={expires}; Secure; HttpOnly'
                    if name.startswith('CloudFront') else f'{name}={value}; Path=/; Expires={expires}')
                   for name, value in fake.tile_cookies().items()]
        self._send(200, page('<h1>Global Heatmap</h1><div id="map"></div>'), headers=headers)

    def _tile(self, match: re.Match, query: dict[str, str]):
        fake = self.fake
        kind, activity, color, z, x, y, retina = match.groups()
        z, x, y = int(z), int(x), int(y)
        path = urlsplit(self.path).path
        if kind == 'personal-heatmaps/tiles':  # its own host on Strava: the same cookies plus the session
            fake.count('personal_tiles')
            athlete, activity = activity, query.get('filter_type', '')
            cookies = self._cookies()
            if not (self._valid_session() and signed_set_is_valid(
                    *(cookies.get(n) for n in ('CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature')),
                    None)):
                fake.count('personal_denied')
                return self._send(401, b'{"message": "Authorization Error"}', 'application/json')
            if not known_activity(activity):
                return self._send(400, b'{"message": "Invalid filter_type"}', 'application/json')
            activity = f'personal/{athlete}/{activity}'
        elif kind == 'tiles-auth':
            fake.count('legacy_tiles')
            params = [query.get(name) for name in ('Key-Pair-Id', 'Policy', 'Signature')]
            if not any(params):
                return self._send(401, b'<Error><Code>MissingKey</Code></Error>', 'text/xml')
            if not signed_set_is_valid(*params, path):
                return self._send(403, ACCESS_DENIED, 'text/xml')
        elif kind == 'tiles':
            fake.count('public_tiles')
            if z > 11:
                return self._send(403, ACCESS_DENIED, 'text/xml')
        else:
            fake.count('tiles')
            if fake.tile_latency:
                generation = fake.generation
                time.sleep(fake.tile_latency)
                if fake.generation != generation:
                    return self._send(503, b'the test that asked has ended', 'text/plain')
            if fake.tile_hang:
                time.sleep(60)
                return
            if fake.tile_status:
                return self._send(fake.tile_status, b'upstream trouble', 'text/plain')
            cookies = self._cookies()
            if not signed_set_is_valid(*(cookies.get(n) for n in
                                         ('CloudFront-Key-Pair-Id', 'CloudFront-Policy', 'CloudFront-Signature')),
                                       path):
                fake.count('tiles_denied')
                return self._send(403, ACCESS_DENIED, 'text/xml')
            if not known_activity(activity):
                return self._send(400, b'<Error><Code>InvalidRequest</Code></Error>', 'text/xml')
        if not (0 <= x < 2 ** z and 0 <= y < 2 ** z) or not has_heat(z, x, y):
            return self._send(404, b'', 'text/plain')
        size = 1024 if retina else 256 if query.get('px') == '256' else 512
        label = f'{activity}/{color}/{z}/{x}/{y}@{size}'
        fake.count('tiles_ok')
        self._send(200, fake.tile_body if fake.tile_body and kind == 'identified/globalheat' else
                   tile_png(size, color, label), 'image/png',
                   headers=[('Cache-Control', f'max-age={fake.tile_max_age}')])


FakeStrava.handler = _Handler


def demo_mailbox(url: str | None) -> Mailbox | None:
    """The demo's ``--mailbox``.

    >>> demo_mailbox('imap://demouser:demopass@127.0.0.1:1143/INBOX')
    Mailbox(host='127.0.0.1', port=1143, name='INBOX', user='demouser', password='demopass')
    """
    if not url:
        return None
    parts = urlsplit(url)
    return Mailbox(parts.hostname, parts.port or 143, unquote(parts.path.strip('/')) or 'INBOX',
                   unquote(parts.username or ''), unquote(parts.password or ''))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=8001)
    parser.add_argument('--login-shape', default='two_step', choices=['two_step', 'legacy', 'changed', 'hang'])
    parser.add_argument('--cookie-lifetime', type=int, default=24 * 3600, help='seconds the tile cookies last')
    parser.add_argument('--tile-latency', type=float, default=0.0, help='seconds added to every modern tile')
    parser.add_argument('--policy-scope', default='identified', choices=sorted(POLICY_RESOURCES),
                        help='legacy: the tile cookies also sign query-signed /tiles-auth/ URLs')
    parser.add_argument('--cookiebot', action='store_true', help="show Cookiebot's dialog on the login page")
    parser.add_argument('--account-language', default='en', choices=sorted(TEXTS),
                        help="the login page's and the code mail's language after the email step")
    parser.add_argument('--mailbox', metavar='imap://USER:PASSWORD@HOST:PORT/MAILBOX',
                        help='deliver the code mails there (e.g. to pymap --no-tls dict --demo-data)')
    args = parser.parse_args()
    fake = FakeStrava(port=args.port, login_shape=args.login_shape, cookie_lifetime=args.cookie_lifetime,
                      tile_latency=args.tile_latency, policy_scope=args.policy_scope, cookiebot=args.cookiebot,
                      account_language=args.account_language, mailbox=demo_mailbox(args.mailbox))
    settings = ' '.join(f"{name}='{value}'" for name, value in fake.server_settings().items())
    fake.serve_until_interrupted(
        f'fake Strava (log in as rider@example.com / correct horse'
        f'{", or as otp@example.com with the code it mails" if fake.mailbox else ""}; a browser export at '
        f'{fake.url}/__fake/export; '
        f'counters at /__fake/counters).\nPoint the server at it with:\n  export {settings}\nrunning')


if __name__ == '__main__':
    main()
