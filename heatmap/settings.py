"""Settings: every one an environment variable and the same-named command-line flag."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from actor.src.mailbox import DEFAULT_WAIT_SECS, parse_imap_url
from presets import parse_layers

from .access import parse_networks
from .accounts import SecretFileError, all_accounts, read_secret_file
from .cache import MEMORY_CACHE_MB
from .layers import UPSTREAM_MAX_ZOOM, check_template

MODERN_TILE_URL = 'https://content-a.strava.com/identified/globalheat/{activity}/{color}/{z}/{x}/{y}{suffix}.png?v=19'
LEGACY_TILE_URL = 'https://heatmap-external-{s}.strava.com/tiles-auth/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'
PERSONAL_TILE_URL = ('https://personal-heatmaps-external.strava.com/tiles/{athlete_id}/{color}/{z}/{x}/{y}{suffix}.png'
                     '?filter_type={activity}&include_everyone=true&include_followers_only=true'
                     '&respect_privacy_zones=true')
LEGACY_PUBLIC_URL = 'https://heatmap-external-{s}.strava.com/tiles/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'
BASEMAP_URL = 'https://tile.openstreetmap.org/{z}/{x}/{y}.png'
PLACE_SEARCH_URL = 'https://nominatim.openstreetmap.org/search'
YES, NO = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')
MAX_PACK_RATE = 50  # new tiles a second: the most an offline pack may ask of Strava, however it is set

# (variable, default, help, group); the flag is the variable's name without its prefix, e.g. HEATMAP_PORT -> --port.
# Each command offers the flags of the groups it uses (COMMAND_GROUPS in heatmap.cli).
SETTINGS = [
    ('HEATMAP_DATA_DIR', './data', 'where cookies.json and the tile cache live', 'common'),
    ('HEATMAP_LOG_LEVEL', 'INFO', 'DEBUG, INFO, WARNING or ERROR', 'common'),
    ('HEATMAP_HOST', '127.0.0.1', 'address to listen on (0.0.0.0 for every interface)', 'server'),
    ('HEATMAP_PORT', '8080', 'port to listen on', 'server'),
    ('HEATMAP_THREADS', '16', 'worker threads of the web server', 'server'),
    ('HEATMAP_ADMIN_TOKEN', '', 'when set, enables /admin/* with "Authorization: Bearer <token>"', 'server'),
    ('HEATMAP_TRUSTED_PROXIES', '', 'comma-separated addresses or networks of reverse proxies whose X-Forwarded-* '
                                    'headers count', 'server'),
    ('HEATMAP_RATE_LIMIT', '1200', 'upstream tile fetches per client and minute; 0 turns the limit off', 'server'),
    ('HEATMAP_PUBLIC_URL', '', 'base URL written into presets (default: from the request)', 'presets'),
    ('HEATMAP_ACCESS_KEY', '', 'when set, tiles and presets need ?key= equal to it (or a member key: redirector.py '
                           'keys add NAME)', 'presets'),
    ('HEATMAP_MEMBERS_PERSONAL', '0', '1 lets member keys open /personal/, your own heatmap (0: only your key does)',
     'presets'),
    ('HEATMAP_PRESET_LAYERS', '', 'extra layers for the presets, e.g. sport_GravelRide/blue,run/purple', 'presets'),
    ('HEATMAP_PRESET_NAME', 'Strava heatmap', 'the name the presets give the map in each app', 'presets'),
    ('HEATMAP_MODE', 'proxy', 'proxy (fetch tiles with the cookie header) or redirect (302 to a query-signed URL)',
     'upstream'),
    ('STRAVA_TILE_URL', '', 'upstream tile template (default depends on HEATMAP_MODE)', 'upstream'),
    ('STRAVA_PUBLIC_TILE_URL', '', 'cookie-less tile template for low zooms (redirect mode has a default)', 'upstream'),
    ('HEATMAP_PUBLIC_MAX_ZOOM', '11', 'highest zoom served from STRAVA_PUBLIC_TILE_URL', 'upstream'),
    ('HEATMAP_MAX_ZOOM', '18', "deepest zoom served: above Strava's 15, tiles are cut from their zoom-15 ancestor and "
                               'scaled (overzoom); 15 turns overzoom off', 'upstream'),
    ('STRAVA_PERSONAL_TILE_URL', PERSONAL_TILE_URL, 'tile template of the personal heatmap (Strava subscribers), '
                                                    'with {athlete_id}', 'upstream'),
    ('STRAVA_ATHLETE_ID', '', 'your athlete id for the personal heatmap (default: from the strava_remember_id cookie)',
     'upstream'),
    ('HEATMAP_UPSTREAM_TIMEOUT', '10', 'seconds to wait for Strava (a tile, the heatmap page) or the Apify API',
     'upstream'),
    ('HEATMAP_CACHE_TTL', str(7 * 86400), 'seconds a cached tile stays fresh (never longer than Strava allows)',
     'upstream'),
    ('HEATMAP_CACHE_MAX_BYTES', str(2 ** 30), 'tile cache cap in bytes, counted as the disk allocates them (tiles '
                                              'and their directories)', 'upstream'),
    ('HEATMAP_MEMORY_CACHE_MB', str(MEMORY_CACHE_MB), 'megabytes of recently served tiles kept in memory as well; '
                                                      '0 turns it off', 'upstream'),
    ('HEATMAP_AUTH', 'auto', 'auto, session, apify, local or none: how new cookies are obtained', 'login'),
    ('STRAVA_EMAIL', '', 'Strava login email (or STRAVA_EMAIL_FILE)', 'accounts'),
    ('STRAVA_PASSWORD', '', 'Strava password (or STRAVA_PASSWORD_FILE; prefer either to the flag)', 'accounts'),
    ('STRAVA_IMAP_URL', '', "STRAVA_EMAIL's mailbox, where a login reads the code Strava emails (read only): "
                        'imaps://USER@HOST[:PORT][/MAILBOX]', 'accounts'),
    ('STRAVA_IMAP_PASSWORD', '', 'the password of that mailbox, often an app password (or STRAVA_IMAP_PASSWORD_FILE)',
     'accounts'),
    ('STRAVA_IMAP_WAIT', str(DEFAULT_WAIT_SECS), "seconds a login waits for Strava's code mail", 'login'),
    ('STRAVA_ACCOUNTS_FILE', '', 'a file of more Strava accounts, one "email password" a line (or JSON), mode 0600: '
                             'when a login needs its owner (a code, a wrong password), the next account logs in',
     'accounts'),
    ('APIFY_TOKEN', '', 'Apify API token (or APIFY_TOKEN_FILE)', 'login'),
    ('APIFY_ACTOR', '', 'the login actor on Apify, e.g. you~strava-heatmap-cookies', 'login'),
    ('APIFY_API_URL', '', "Apify API base URL (default: Apify's)", 'login'),
    ('CHROMIUM_PATH', '', "the browser for a local login when Playwright's own is not installed", 'login'),
    ('STRAVA_MAPS_URL', 'https://www.strava.com/maps', 'page that sets the tile cookies', 'login'),
    ('STRAVA_LOGIN_URL', 'https://www.strava.com/login', 'Strava login page', 'login'),
    ('HEATMAP_REFRESH_BEFORE', '3600', 'seconds before expiry to get new cookies', 'login'),
    ('HEATMAP_REFRESH_POLL', '5', 'seconds between the refresher\'s looks at the expiry and at cookies.json (an import '
                                  'is picked up within it; a tile that needs cookies wakes it at once)', 'login'),
    ('HEATMAP_LOGIN_TIMEOUT', '180', 'seconds a login may take', 'login'),
    ('HEATMAP_BACKOFF_MIN', '300', 'seconds to wait after the first failed refresh (doubles each time)', 'login'),
    ('HEATMAP_BACKOFF_MAX', str(6 * 3600), 'longest wait between failed refreshes', 'login'),
    ('HEATMAP_PACK_RATE', '4', 'new tiles a second an offline pack fetches from Strava (cached tiles are free)',
     'packs'),
    ('HEATMAP_PACK_MAX_TILES', '20000', 'the largest offline pack, in tiles', 'packs'),
    ('HEATMAP_PACKS_MAX_MB', '2048', 'megabytes all finished packs of the /packs/ page may take; the oldest go first',
     'packs'),
    ('HEATMAP_BASEMAP_URL', BASEMAP_URL, "the base map under the heat on the /packs/ page (OpenStreetMap's by "
                                         'default); empty turns it off', 'packs'),
    ('HEATMAP_PLACE_SEARCH_URL', PLACE_SEARCH_URL,
     "the place search of the /packs/ page, Nominatim's API (OpenStreetMap's by default; the browser asks it); empty "
     'turns it off', 'packs'),
]
GROUP_TITLES = {'common': 'data and logs', 'server': 'the web server', 'presets': 'presets and access',
                'upstream': 'Strava tiles and the cache', 'accounts': 'the Strava accounts to log in with',
                'login': 'getting new cookies', 'packs': 'offline packs'}
EMPTY_TURNS_OFF = ('HEATMAP_BASEMAP_URL', 'HEATMAP_PLACE_SEARCH_URL')  # set to '' these mean off, not the default
SECRETS = ('STRAVA_EMAIL', 'STRAVA_PASSWORD', 'STRAVA_IMAP_PASSWORD', 'APIFY_TOKEN', 'HEATMAP_ACCESS_KEY',
           'HEATMAP_ADMIN_TOKEN')


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one line naming the variable."""


def flag(variable: str) -> str:
    """The command-line flag for a variable.

    >>> flag('HEATMAP_PORT'), flag('STRAVA_TILE_URL'), flag('APIFY_TOKEN')
    ('--port', '--strava-tile-url', '--apify-token')
    """
    name = variable.removeprefix('HEATMAP_')
    return '--' + name.lower().replace('_', '-')


def add_arguments(parser: argparse.ArgumentParser, groups: tuple[str, ...]) -> None:
    """The flags of the settings in ``groups``, each under its group's title."""
    for group in groups:
        section = parser.add_argument_group(f'settings: {GROUP_TITLES[group]} (flag or environment variable)')
        for variable, default, text, setting_group in SETTINGS:
            if setting_group == group:
                shown = '' if variable in SECRETS or not default else f', default {default}'
                section.add_argument(flag(variable), dest=variable, metavar=variable.split('_')[-1],
                                     help=f'{text} [${variable}{shown}]')


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    mode: str
    public_url: str
    access_key: str
    members_personal: bool
    admin_token: str
    auth: str
    strava_email: str
    strava_password: str
    imap_url: str
    imap_password: str
    imap_wait: float
    accounts_file: str
    accounts: tuple  # heatmap.accounts.Account: STRAVA_EMAIL's first, then the file's
    apify_token: str
    apify_actor: str
    apify_api_url: str
    chromium_path: str
    tile_url: str
    personal_tile_url: str
    athlete_id: str
    max_zoom: int
    public_tile_url: str | None
    public_max_zoom: int
    maps_url: str
    login_url: str
    refresh_before: float
    refresh_poll: float
    cache_ttl: float
    cache_max_bytes: int
    memory_cache_mb: float
    upstream_timeout: float
    login_timeout: float
    backoff_min: float
    backoff_max: float
    rate_limit: int
    preset_layers: str
    preset_name: str
    trusted_proxies: tuple
    threads: int
    log_level: str
    pack_rate: float
    pack_max_tiles: int
    packs_max_mb: float
    basemap_url: str
    place_search_url: str
    given_as: dict = field(default_factory=dict, repr=False, compare=False)  # variable -> flag, when a flag set it

    def __repr__(self) -> str:  # never show a secret, even in a traceback
        return f'Settings(host={self.host!r}, port={self.port}, mode={self.mode!r}, auth={self.auth!r})'

    def name(self, variable: str) -> str:
        """How the user set ``variable``: its flag when a flag set it, else the variable itself."""
        return self.given_as.get(variable, variable)

    @property
    def served_max_zoom(self) -> int:
        """The deepest zoom served: overzoom needs proxy mode, since a redirect cannot cut a tile."""
        return self.max_zoom if self.mode == 'proxy' else UPSTREAM_MAX_ZOOM

    @property
    def login_source(self) -> str | None:
        """Which login ``auth`` picks: ``apify``, ``local`` or None."""
        if self.auth in ('apify', 'local'):
            return self.auth
        if self.auth == 'auto':
            if self.apify_token or self.apify_actor:
                return 'apify'
            if (self.strava_email or self.strava_password or self.imap_url or self.imap_password
                    or self.accounts_file):
                return 'local'
        return None


def _value(args: argparse.Namespace, environ: Mapping, variable: str, default: str) -> tuple[str, str]:
    """The value of ``variable`` and what set it: its flag, the variable, ``<variable>_FILE``, or the default."""
    given = getattr(args, variable, None)
    if given is not None:
        return given, flag(variable)
    if environ.get(variable) or (variable in EMPTY_TURNS_OFF and variable in environ):
        return environ[variable], variable
    if environ.get(f'{variable}_FILE') and variable in SECRETS:
        try:
            return read_secret_file(environ[f'{variable}_FILE'], f'{variable}_FILE').strip(), f'{variable}_FILE'
        except SecretFileError as error:
            raise ConfigError(str(error)) from None
    return default, variable


def check_login(settings: Settings) -> None:
    """Refuse a half-configured login, naming every missing variable at once.

    STRAVA_EMAIL's account needs a password, or a mailbox for the emailed code (STRAVA_IMAP_URL with
    STRAVA_IMAP_PASSWORD), or both.
    """
    source = settings.login_source
    if source is None:
        return
    values = {'APIFY_TOKEN': settings.apify_token, 'APIFY_ACTOR': settings.apify_actor,
              'STRAVA_EMAIL': settings.strava_email, 'STRAVA_PASSWORD': settings.strava_password,
              'STRAVA_IMAP_URL': settings.imap_url, 'STRAVA_IMAP_PASSWORD': settings.imap_password}
    mailbox = ['STRAVA_IMAP_URL', 'STRAVA_IMAP_PASSWORD']
    if settings.accounts_file and not any(values[v] for v in ('STRAVA_EMAIL', 'STRAVA_PASSWORD', *mailbox)):
        needed = []
    elif (settings.imap_url or settings.imap_password) and not settings.strava_password:
        needed = ['STRAVA_EMAIL', *mailbox]
    else:
        needed = ['STRAVA_EMAIL', 'STRAVA_PASSWORD', *(mailbox if settings.imap_url or settings.imap_password else ())]
    if source == 'apify':
        needed = ['APIFY_TOKEN', 'APIFY_ACTOR', *needed]
    missing = [variable for variable in needed if not values[variable]]
    if not missing:
        return
    where = 'on Apify' if source == 'apify' else 'with a local browser'
    how = (f'{settings.name("HEATMAP_AUTH")}={settings.auth}' if settings.auth != 'auto'
           else f'{", ".join(settings.name(v) for v in needed if values[v])} (HEATMAP_AUTH=auto)')
    undo = '' if settings.auth != 'auto' else ', or unset what is set to use no login'
    instead = ('; an account that logs in with the emailed code can have STRAVA_IMAP_URL and STRAVA_IMAP_PASSWORD '
               'instead of STRAVA_PASSWORD') if 'STRAVA_PASSWORD' in missing else ''
    raise ConfigError(f'{how} asks for a login {where}, which needs {", ".join(needed)}; missing: '
                      f'{", ".join(missing)}: set {"it" if len(missing) == 1 else "them"} (or the *_FILE '
                      f'variants){undo}{instead}')


def load(args: argparse.Namespace, environ: Mapping | None = None) -> Settings:
    """Settings from flags, then the environment, then the defaults; a ConfigError names what is wrong."""
    environ = os.environ if environ is None else environ
    raw, given_as = {}, {}
    for variable, default, _, _ in SETTINGS:
        raw[variable], source = _value(args, environ, variable, default)
        if source.startswith('--'):
            given_as[variable] = source

    def name(variable: str) -> str:
        return given_as.get(variable, variable)

    def number(variable: str, kind=float, low: float = 0, high: float | None = None, what: str = ''):
        try:
            value = kind(raw[variable])
        except ValueError:
            raise ConfigError(f'{name(variable)} must be a whole number, not {raw[variable]!r}' if kind is int else
                              f'{name(variable)} must be a number, not {raw[variable]!r}') from None
        if value < low or (high is not None and value > high):
            bounds = f'between {low:g} and {high:g}' if high is not None else f'at least {low:g}'
            raise ConfigError(f'{name(variable)} must be {bounds}{what}, not {raw[variable]}')
        return value

    mode, auth = raw['HEATMAP_MODE'], raw['HEATMAP_AUTH']
    if mode not in ('proxy', 'redirect'):
        raise ConfigError(f'{name("HEATMAP_MODE")} must be proxy or redirect, not {mode!r}')
    if auth not in ('auto', 'session', 'apify', 'local', 'none'):
        raise ConfigError(f'{name("HEATMAP_AUTH")} must be auto, session, apify, local or none, not {auth!r}')
    tile_url = raw['STRAVA_TILE_URL'] or (MODERN_TILE_URL if mode == 'proxy' else LEGACY_TILE_URL)
    public_url = raw['STRAVA_PUBLIC_TILE_URL'] or (LEGACY_PUBLIC_URL if mode == 'redirect' else '')
    try:
        check_template(tile_url, name('STRAVA_TILE_URL'))
        check_template(raw['STRAVA_PERSONAL_TILE_URL'], name('STRAVA_PERSONAL_TILE_URL'))
        if raw['HEATMAP_BASEMAP_URL']:
            check_template(raw['HEATMAP_BASEMAP_URL'], name('HEATMAP_BASEMAP_URL'))
        if public_url:
            check_template(public_url, name('STRAVA_PUBLIC_TILE_URL'))
        for variable in ('STRAVA_MAPS_URL', 'STRAVA_LOGIN_URL', 'APIFY_API_URL', 'HEATMAP_PUBLIC_URL',
                         'HEATMAP_PLACE_SEARCH_URL'):
            if raw[variable]:
                check_base_url(raw[variable], name(variable))
        if raw['STRAVA_IMAP_URL']:
            parse_imap_url(raw['STRAVA_IMAP_URL'], name('STRAVA_IMAP_URL'), name('STRAVA_IMAP_PASSWORD'))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    chromium = raw['CHROMIUM_PATH']
    if chromium and not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        raise ConfigError(f'{name("CHROMIUM_PATH")} {chromium} is not an executable file: set it to the Chromium '
                          'binary (e.g. /usr/bin/chromium) or leave it unset')
    data_dir = Path(raw['HEATMAP_DATA_DIR'])
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f'{name("HEATMAP_DATA_DIR")} {data_dir} is a file, not a folder: set it to a folder for '
                          'cookies.json and the tile cache (e.g. ./data)')
    try:
        trusted_proxies = parse_networks(raw['HEATMAP_TRUSTED_PROXIES'])
    except ValueError as error:
        raise ConfigError(f'{name("HEATMAP_TRUSTED_PROXIES")} must list IP addresses or networks: {error}') from None
    try:
        parse_layers(raw['HEATMAP_PRESET_LAYERS'])
    except ValueError as error:
        raise ConfigError(str(error).replace('HEATMAP_PRESET_LAYERS', name('HEATMAP_PRESET_LAYERS'))) from None
    if raw['STRAVA_ATHLETE_ID'] and not raw['STRAVA_ATHLETE_ID'].isdigit():
        raise ConfigError(f'{name("STRAVA_ATHLETE_ID")} is the number in your Strava profile\'s address '
                          f'(strava.com/athletes/<id>), not {raw["STRAVA_ATHLETE_ID"][:40]!r}')
    members_personal = raw['HEATMAP_MEMBERS_PERSONAL'].strip().lower()
    if members_personal not in YES + NO:
        raise ConfigError(f'{name("HEATMAP_MEMBERS_PERSONAL")} must be 1 (member keys open your personal heatmap) '
                          f'or 0, not {raw["HEATMAP_MEMBERS_PERSONAL"][:40]!r}')
    level = raw['HEATMAP_LOG_LEVEL'].upper()
    if level not in ('DEBUG', 'INFO', 'WARNING', 'ERROR'):
        raise ConfigError(f'{name("HEATMAP_LOG_LEVEL")} must be DEBUG, INFO, WARNING or ERROR, not {level!r}')
    backoff_min = number('HEATMAP_BACKOFF_MIN', low=1)
    try:
        accounts = tuple(all_accounts(raw['STRAVA_EMAIL'], raw['STRAVA_PASSWORD'], raw['STRAVA_ACCOUNTS_FILE'],
                                      name('STRAVA_ACCOUNTS_FILE'), raw['STRAVA_IMAP_URL'].strip(),
                                      raw['STRAVA_IMAP_PASSWORD']))
    except SecretFileError as error:
        raise ConfigError(str(error)) from None
    return Settings(
        host=raw['HEATMAP_HOST'], port=number('HEATMAP_PORT', int, 1, 65535), data_dir=data_dir,
        mode=mode, public_url=raw['HEATMAP_PUBLIC_URL'].rstrip('/'), access_key=raw['HEATMAP_ACCESS_KEY'],
        members_personal=members_personal in YES,
        admin_token=raw['HEATMAP_ADMIN_TOKEN'], auth=auth, strava_email=raw['STRAVA_EMAIL'],
        strava_password=raw['STRAVA_PASSWORD'], imap_url=raw['STRAVA_IMAP_URL'].strip(),
        imap_password=raw['STRAVA_IMAP_PASSWORD'], imap_wait=number('STRAVA_IMAP_WAIT', low=1, high=600),
        accounts_file=raw['STRAVA_ACCOUNTS_FILE'], accounts=accounts,
        apify_token=raw['APIFY_TOKEN'], apify_actor=raw['APIFY_ACTOR'],
        apify_api_url=raw['APIFY_API_URL'], chromium_path=chromium, tile_url=tile_url,
        personal_tile_url=raw['STRAVA_PERSONAL_TILE_URL'], athlete_id=raw['STRAVA_ATHLETE_ID'],
        max_zoom=number('HEATMAP_MAX_ZOOM', int, UPSTREAM_MAX_ZOOM, 22),
        public_tile_url=public_url or None, public_max_zoom=number('HEATMAP_PUBLIC_MAX_ZOOM', int, 0, 16),
        maps_url=raw['STRAVA_MAPS_URL'], login_url=raw['STRAVA_LOGIN_URL'],
        refresh_before=number('HEATMAP_REFRESH_BEFORE'),
        refresh_poll=number('HEATMAP_REFRESH_POLL', low=0.05, high=60), cache_ttl=number('HEATMAP_CACHE_TTL'),
        cache_max_bytes=number('HEATMAP_CACHE_MAX_BYTES', int),
        memory_cache_mb=number('HEATMAP_MEMORY_CACHE_MB', high=65536),
        upstream_timeout=number('HEATMAP_UPSTREAM_TIMEOUT', low=0.1, high=600),
        login_timeout=number('HEATMAP_LOGIN_TIMEOUT', low=10, high=3600),
        backoff_min=backoff_min,
        backoff_max=number('HEATMAP_BACKOFF_MAX', low=backoff_min, what=f' ({name("HEATMAP_BACKOFF_MIN")})'),
        rate_limit=number('HEATMAP_RATE_LIMIT', int),
        trusted_proxies=trusted_proxies, preset_layers=raw['HEATMAP_PRESET_LAYERS'],
        preset_name=' '.join(raw['HEATMAP_PRESET_NAME'].split()) or 'Strava heatmap',
        threads=number('HEATMAP_THREADS', int, 1, 512), log_level=level,
        pack_rate=number('HEATMAP_PACK_RATE', low=0.01, high=MAX_PACK_RATE),
        pack_max_tiles=number('HEATMAP_PACK_MAX_TILES', int, 1), packs_max_mb=number('HEATMAP_PACKS_MAX_MB', low=1),
        basemap_url=raw['HEATMAP_BASEMAP_URL'], place_search_url=raw['HEATMAP_PLACE_SEARCH_URL'], given_as=given_as,
    )


def check_base_url(url: str, setting: str) -> str:
    """Refuse a base URL that is not ``http(s)://host[:port][/path]``.

    >>> check_base_url('https://maps.example.org/heat', 'HEATMAP_PUBLIC_URL')
    'https://maps.example.org/heat'
    >>> check_base_url('http:heat.example.org', 'HEATMAP_PUBLIC_URL')
    Traceback (most recent call last):
    ValueError: HEATMAP_PUBLIC_URL must look like https://host[:port][/path], not 'http:heat.example.org'
    """
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (parts.scheme not in ('http', 'https') or not parts.hostname or not port_ok or parts.fragment
            or any(ch.isspace() for ch in url)):
        raise ValueError(f'{setting} must look like https://host[:port][/path], not {url!r}')
    return url
