"""Settings: every one an environment variable and the same-named command-line flag."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from presets import parse_layers

from .access import parse_networks
from .layers import check_template

MODERN_TILE_URL = 'https://content-a.strava.com/identified/globalheat/{activity}/{color}/{z}/{x}/{y}{suffix}.png?v=19'
LEGACY_TILE_URL = 'https://heatmap-external-{s}.strava.com/tiles-auth/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'
LEGACY_PUBLIC_URL = 'https://heatmap-external-{s}.strava.com/tiles/{activity}/{color}/{z}/{x}/{y}{suffix}.png?px=256'

# (variable, default, help); the flag is the variable's name without its prefix, e.g. HEATMAP_PORT -> --port
SETTINGS = [
    ('HEATMAP_HOST', '127.0.0.1', 'address to listen on'),
    ('HEATMAP_PORT', '8080', 'port to listen on'),
    ('HEATMAP_DATA_DIR', './data', 'where cookies.json and the tile cache live'),
    ('HEATMAP_MODE', 'proxy', 'proxy (fetch tiles with the cookie header) or redirect (302 to a query-signed URL)'),
    ('HEATMAP_PUBLIC_URL', '', 'base URL written into presets (default: from the request)'),
    ('HEATMAP_ACCESS_KEY', '', 'when set, tiles and presets need ?key= equal to it'),
    ('HEATMAP_ADMIN_TOKEN', '', 'when set, enables /admin/* with "Authorization: Bearer <token>"'),
    ('HEATMAP_AUTH', 'auto', 'auto, session, apify, local or none: how new cookies are obtained'),
    ('STRAVA_EMAIL', '', 'Strava login email (or STRAVA_EMAIL_FILE)'),
    ('STRAVA_PASSWORD', '', 'Strava password (or STRAVA_PASSWORD_FILE; prefer either to the flag)'),
    ('APIFY_TOKEN', '', 'Apify API token (or APIFY_TOKEN_FILE)'),
    ('APIFY_ACTOR', '', 'the login actor on Apify, e.g. you~strava-heatmap-cookies'),
    ('APIFY_API_URL', '', "Apify API base URL (default: Apify's)"),
    ('STRAVA_TILE_URL', '', 'upstream tile template (default depends on HEATMAP_MODE)'),
    ('STRAVA_PUBLIC_TILE_URL', '', 'cookie-less tile template for low zooms (redirect mode has a default)'),
    ('HEATMAP_PUBLIC_MAX_ZOOM', '11', 'highest zoom served from STRAVA_PUBLIC_TILE_URL'),
    ('STRAVA_MAPS_URL', 'https://www.strava.com/maps/global-heatmap', 'page that sets the tile cookies'),
    ('STRAVA_LOGIN_URL', 'https://www.strava.com/login', 'Strava login page'),
    ('HEATMAP_REFRESH_BEFORE', '3600', 'seconds before expiry to get new cookies'),
    ('HEATMAP_CACHE_TTL', str(7 * 86400), 'seconds a cached tile stays fresh (never longer than Strava allows)'),
    ('HEATMAP_CACHE_MAX_BYTES', str(2 ** 30), 'tile cache size cap in bytes'),
    ('HEATMAP_UPSTREAM_TIMEOUT', '10', 'seconds to wait for Strava (a tile, the heatmap page) or the Apify API'),
    ('HEATMAP_LOGIN_TIMEOUT', '180', 'seconds a login may take'),
    ('HEATMAP_BACKOFF_MIN', '300', 'seconds to wait after the first failed refresh (doubles each time)'),
    ('HEATMAP_BACKOFF_MAX', str(6 * 3600), 'longest wait between failed refreshes'),
    ('HEATMAP_RATE_LIMIT', '1200', 'upstream tile fetches per client and minute; 0 turns the limit off'),
    ('HEATMAP_TRUSTED_PROXIES', '', 'comma-separated addresses or networks of reverse proxies whose X-Forwarded-* '
                                    'headers count'),
    ('HEATMAP_PRESET_LAYERS', '', 'extra layers for the presets, e.g. sport_GravelRide/blue,run/purple'),
    ('HEATMAP_PRESET_NAME', 'Strava heatmap', 'the name the presets give the map in each app'),
    ('HEATMAP_THREADS', '16', 'worker threads of the web server'),
    ('HEATMAP_LOG_LEVEL', 'INFO', 'DEBUG, INFO, WARNING or ERROR'),
]
SECRETS = ('STRAVA_EMAIL', 'STRAVA_PASSWORD', 'APIFY_TOKEN', 'HEATMAP_ACCESS_KEY', 'HEATMAP_ADMIN_TOKEN')


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one line naming the variable."""


def flag(variable: str) -> str:
    """The command-line flag for a variable.

    >>> flag('HEATMAP_PORT'), flag('STRAVA_TILE_URL'), flag('APIFY_TOKEN')
    ('--port', '--strava-tile-url', '--apify-token')
    """
    name = variable.removeprefix('HEATMAP_')
    return '--' + name.lower().replace('_', '-')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for variable, default, text in SETTINGS:
        parser.add_argument(flag(variable), dest=variable, metavar=variable.split('_')[-1],
                            help=f'{text} [${variable}' + ('' if variable in SECRETS or not default else
                                                             f', default {default}') + ']')


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    mode: str
    public_url: str
    access_key: str
    admin_token: str
    auth: str
    strava_email: str
    strava_password: str
    apify_token: str
    apify_actor: str
    apify_api_url: str
    tile_url: str
    public_tile_url: str | None
    public_max_zoom: int
    maps_url: str
    login_url: str
    refresh_before: float
    cache_ttl: float
    cache_max_bytes: int
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

    def __repr__(self) -> str:  # never show a secret, even in a traceback
        return f'Settings(host={self.host!r}, port={self.port}, mode={self.mode!r}, auth={self.auth!r})'

    @property
    def login_source(self) -> str | None:
        """Which login ``auth`` picks: ``apify``, ``local`` or None."""
        if self.auth in ('apify', 'local'):
            return self.auth
        if self.auth == 'auto':
            if self.apify_token and self.apify_actor:
                return 'apify'
            if self.strava_email and self.strava_password:
                return 'local'
        return None


def _value(args: argparse.Namespace, environ: dict, variable: str, default: str) -> str:
    given = getattr(args, variable, None)
    if given is not None:
        return given
    if environ.get(variable):
        return environ[variable]
    if environ.get(f'{variable}_FILE') and variable in SECRETS:
        path = environ[f'{variable}_FILE']
        try:
            return Path(path).read_text().strip()
        except OSError as error:
            raise ConfigError(f'{variable}_FILE names {path}, which cannot be read ({error.strerror})') from None
    return default


def _number(raw: dict, variable: str, kind=float):
    try:
        value = kind(raw[variable])
    except ValueError:
        raise ConfigError(f'{variable} must be a number, not {raw[variable]!r}') from None
    if value < 0:
        raise ConfigError(f'{variable} must not be negative')
    return value


def load(args: argparse.Namespace, environ: dict | None = None) -> Settings:
    """Settings from flags, then the environment, then the defaults; a ConfigError names what is wrong."""
    environ = os.environ if environ is None else environ
    raw = {variable: _value(args, environ, variable, default) for variable, default, _ in SETTINGS}
    mode, auth = raw['HEATMAP_MODE'], raw['HEATMAP_AUTH']
    if mode not in ('proxy', 'redirect'):
        raise ConfigError(f'HEATMAP_MODE must be proxy or redirect, not {mode!r}')
    if auth not in ('auto', 'session', 'apify', 'local', 'none'):
        raise ConfigError(f'HEATMAP_AUTH must be auto, session, apify, local or none, not {auth!r}')
    if auth == 'apify':
        for variable in ('APIFY_TOKEN', 'APIFY_ACTOR'):
            if not raw[variable]:
                raise ConfigError(f'HEATMAP_AUTH=apify needs {variable}: set it (or {flag(variable)})')
    if auth in ('apify', 'local'):
        for variable in ('STRAVA_EMAIL', 'STRAVA_PASSWORD'):
            if not raw[variable]:
                raise ConfigError(f'HEATMAP_AUTH={auth} logs in to Strava and needs {variable}: set it '
                                  f'or {variable}_FILE')
    tile_url = raw['STRAVA_TILE_URL'] or (MODERN_TILE_URL if mode == 'proxy' else LEGACY_TILE_URL)
    public_url = raw['STRAVA_PUBLIC_TILE_URL'] or (LEGACY_PUBLIC_URL if mode == 'redirect' else '')
    try:
        check_template(tile_url, 'STRAVA_TILE_URL')
        if public_url:
            check_template(public_url, 'STRAVA_PUBLIC_TILE_URL')
    except ValueError as error:
        raise ConfigError(str(error)) from None
    data_dir = Path(raw['HEATMAP_DATA_DIR'])
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f'HEATMAP_DATA_DIR {data_dir} cannot be created ({error.strerror}): '
                          'set it to a writable directory') from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f'HEATMAP_DATA_DIR {data_dir} is not writable: set it to a writable directory')
    try:
        trusted_proxies = parse_networks(raw['HEATMAP_TRUSTED_PROXIES'])
    except ValueError as error:
        raise ConfigError(f'HEATMAP_TRUSTED_PROXIES must list IP addresses or networks: {error}') from None
    try:
        parse_layers(raw['HEATMAP_PRESET_LAYERS'])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if raw['HEATMAP_PUBLIC_URL'] and urlsplit(raw['HEATMAP_PUBLIC_URL']).scheme not in ('http', 'https'):
        raise ConfigError(f"HEATMAP_PUBLIC_URL must start with http:// or https://, not {raw['HEATMAP_PUBLIC_URL']!r}")
    level = raw['HEATMAP_LOG_LEVEL'].upper()
    if level not in ('DEBUG', 'INFO', 'WARNING', 'ERROR'):
        raise ConfigError(f'HEATMAP_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}')
    return Settings(
        host=raw['HEATMAP_HOST'], port=_number(raw, 'HEATMAP_PORT', int), data_dir=data_dir,
        mode=mode, public_url=raw['HEATMAP_PUBLIC_URL'].rstrip('/'), access_key=raw['HEATMAP_ACCESS_KEY'],
        admin_token=raw['HEATMAP_ADMIN_TOKEN'], auth=auth, strava_email=raw['STRAVA_EMAIL'],
        strava_password=raw['STRAVA_PASSWORD'], apify_token=raw['APIFY_TOKEN'], apify_actor=raw['APIFY_ACTOR'],
        apify_api_url=raw['APIFY_API_URL'], tile_url=tile_url, public_tile_url=public_url or None,
        public_max_zoom=_number(raw, 'HEATMAP_PUBLIC_MAX_ZOOM', int), maps_url=raw['STRAVA_MAPS_URL'],
        login_url=raw['STRAVA_LOGIN_URL'], refresh_before=_number(raw, 'HEATMAP_REFRESH_BEFORE'),
        cache_ttl=_number(raw, 'HEATMAP_CACHE_TTL'), cache_max_bytes=_number(raw, 'HEATMAP_CACHE_MAX_BYTES', int),
        upstream_timeout=_number(raw, 'HEATMAP_UPSTREAM_TIMEOUT'), login_timeout=_number(raw, 'HEATMAP_LOGIN_TIMEOUT'),
        backoff_min=_number(raw, 'HEATMAP_BACKOFF_MIN'), backoff_max=_number(raw, 'HEATMAP_BACKOFF_MAX'),
        rate_limit=_number(raw, 'HEATMAP_RATE_LIMIT', int),
        trusted_proxies=trusted_proxies, preset_layers=raw['HEATMAP_PRESET_LAYERS'],
        preset_name=' '.join(raw['HEATMAP_PRESET_NAME'].split()) or 'Strava heatmap',
        threads=_number(raw, 'HEATMAP_THREADS', int), log_level=level,
    )
