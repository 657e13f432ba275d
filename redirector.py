#!/usr/bin/env python3
"""A stable tile URL for Strava's global heatmap that renews its own cookies.

    python redirector.py [serve]              run the server (default)
    python redirector.py login                get new cookies now, print the new expiry
    python redirector.py import-cookies FILE  store cookies from an export (- reads stdin)
    python redirector.py status               show the stored cookies' state
    python redirector.py doctor               check each step from Strava's pages to a tile
    python redirector.py presets --out DIR --public-url URL   write the presets for every app

Every setting is an environment variable and the same-named flag: see --help and the README.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import sys
from pathlib import Path

import bottle
import xstatic.pkg.leaflet
from bottle import HTTPResponse, request, static_file

import presets
from heatmap import settings as config
from heatmap.access import RateLimiter, base_url, client_address
from heatmap.cache import TileCache
from heatmap.cookies import CookieExportError, describe, parse_export
from heatmap.doctor import run_checks
from heatmap.layers import BadTile, parse_tile
from heatmap.refresher import Refresher
from heatmap.sources import ApifyLogin, LocalLogin, SessionRefresh
from heatmap.status import health
from heatmap.store import CookieStore
from heatmap.upstream import TileService

log = logging.getLogger('redirector')
VIEWS = Path(__file__).resolve().parent / 'heatmap' / 'views'
TILE_CACHE_CONTROL = 'public, max-age=86400'
CONNECTION_LIMIT = 500


def plain(status: int, text: str, **headers) -> HTTPResponse:
    return HTTPResponse(text + '\n', status, {'Content-Type': 'text/plain; charset=utf-8', **headers})


def make_app(settings: config.Settings, store: CookieStore, refresher: Refresher, tiles: TileService) -> bottle.Bottle:
    app = bottle.Bottle()
    bottle.TEMPLATE_PATH[:] = [str(VIEWS)]

    def require_key():
        if settings.access_key and not hmac.compare_digest(request.query.get('key', '').encode(),
                                                           settings.access_key.encode()):
            log.info('rejected a request with a missing or wrong key from %s', request.remote_addr)
            raise plain(403, 'missing or wrong key')

    def require_admin():
        if not settings.admin_token:
            raise plain(404, 'admin actions are off: set HEATMAP_ADMIN_TOKEN to enable them')
        given = request.get_header('Authorization', '').removeprefix('Bearer ').strip()
        if not hmac.compare_digest(given.encode(), settings.admin_token.encode()):
            raise plain(403, 'missing or wrong admin token')

    @app.get('/tiles/<activity>/<color>/<z>/<x>/<y>.png')
    def tile(activity, color, z, x, y):
        require_key()
        try:
            wanted = parse_tile(activity, color, z, x, y, request.query.get('px'))
        except BadTile as error:
            return plain(400, str(error))
        if settings.mode == 'redirect':
            answer = tiles.redirect(wanted)
        else:
            answer = tiles.tile(wanted, client_address(request.environ, settings.trusted_proxies))
        log.debug('tile %s -> %d', wanted.path, answer.status)
        if answer.location:
            return HTTPResponse(status=302, Location=answer.location)
        if answer.file is None:
            extra = {'Retry-After': str(answer.retry_after)} if answer.retry_after else {}
            return plain(answer.status, answer.reason, **extra)
        tiles.counters['tiles_served'] += 1
        headers = {'Cache-Control': TILE_CACHE_CONTROL, 'Access-Control-Allow-Origin': '*'}
        if answer.body is None:
            return static_file(answer.file, root=tiles.cache.root_name, mimetype='image/png', etag=answer.etag,
                               headers=headers)
        return HTTPResponse(answer.body, 200, {**headers, 'Content-Type': 'image/png', 'ETag': answer.etag,
                                               'Last-Modified': answer.last_modified})

    @app.get('/tiles/<rest:path>')
    def bad_tile_path(rest):
        require_key()
        return plain(400, 'tile URLs look like /tiles/{activity}/{color}/{z}/{x}/{y}.png or .../{y}@2x.png')

    def preset_context() -> presets.PresetContext:
        return presets.PresetContext(base_url(request.environ, settings.trusted_proxies, settings.public_url),
                                     settings.access_key, presets.parse_layers(settings.preset_layers),
                                     settings.preset_name)

    @app.get('/presets')
    def presets_slash():
        require_key()
        query = f'?{request.query_string}' if request.query_string else ''
        return HTTPResponse(status=301, Location=f'presets/{query}')

    @app.get('/presets/')
    def presets_page():
        require_key()
        return presets.page(preset_context())

    @app.get('/presets/<name>')
    def preset_file(name):
        require_key()
        context = preset_context()
        found = presets.find(context, name)
        if found is None:
            return plain(404, f'no preset named {name[:80]!r}: see /presets/')
        return HTTPResponse(found.make(context), 200, {
            'Content-Type': found.content_type, 'Content-Disposition': f'attachment; filename="{found.name}"',
            'Cache-Control': 'no-store'})

    @app.get('/healthz')
    def healthz():
        bottle.response.content_type = 'application/json'
        return json.dumps(health(store.state, refresher.refreshing))

    @app.get('/')
    def status_page():
        return bottle.template('status', state=store.state, health=health(store.state, refresher.refreshing),
                               reason=refresher.unavailable_reason(), settings=settings, counters=tiles.counters,
                               waiting_for_user=refresher.waiting_for_user())

    @app.get('/static/leaflet/<path:path>')
    def leaflet(path):
        return static_file(path, root=xstatic.pkg.leaflet.BASE_DIR, headers={'Cache-Control': 'public, max-age=86400'})

    @app.post('/admin/refresh')
    def admin_refresh():
        require_admin()
        refresher.request(force=True)
        return plain(202, 'refresh requested: watch /healthz')

    @app.post('/admin/cookies')
    def admin_cookies():
        require_admin()
        try:
            cookies = parse_export(request.body.read(1_000_000).decode('utf-8', 'replace'))
        except CookieExportError as error:
            return plain(400, str(error))
        store.save_cookies(cookies, 'import')
        refresher.request()
        return plain(200, f'imported: {describe(cookies)}')

    return app


def build(settings: config.Settings) -> tuple[CookieStore, Refresher, TileService]:
    store = CookieStore(settings.data_dir)
    redirecting = settings.mode == 'redirect'
    login_input = {'email': settings.strava_email, 'password': settings.strava_password,
                   'loginUrl': settings.login_url, 'heatmapUrl': settings.maps_url,
                   'timeoutSecs': int(settings.login_timeout)}
    sources = []
    if settings.auth != 'none':
        sources.append(SessionRefresh(settings.maps_url, settings.upstream_timeout))
    if settings.login_source == 'apify':
        sources.append(ApifyLogin(settings.apify_token, settings.apify_actor, settings.apify_api_url or None,
                                  login_input, settings.login_timeout, api_timeout=settings.upstream_timeout))
    elif settings.login_source == 'local':
        sources.append(LocalLogin(login_input, settings.login_timeout))
    refresher = Refresher(store, sources, verify=lambda cookies: tiles.check_cookies(cookies, redirecting),
                          refresh_before=settings.refresh_before, backoff_min=settings.backoff_min,
                          backoff_max=settings.backoff_max)
    tiles = TileService(store, refresher, TileCache(settings.data_dir / 'tiles', settings.cache_ttl,
                                                    settings.cache_max_bytes),
                        settings.tile_url, settings.public_tile_url, settings.public_max_zoom,
                        settings.upstream_timeout, RateLimiter(settings.rate_limit), pool_size=settings.threads * 2)
    return store, refresher, tiles


def serve(settings: config.Settings) -> int:
    import waitress

    store, refresher, tiles = build(settings)
    app = make_app(settings, store, refresher, tiles)
    state = store.state
    log.info('serving on http://%s:%d/ in %s mode; cookies: %s; renewal: %s', settings.host, settings.port,
             settings.mode, 'valid' if state.tiles_valid() else 'none valid, see / for how to get them',
             ', '.join(s.name for s in refresher.sources) or 'off (HEATMAP_AUTH=none)')
    refresher.start()
    # X-Forwarded-* are judged by HEATMAP_TRUSTED_PROXIES (heatmap.access), so waitress must leave them.
    # Waitress reads requests asynchronously, so slow clients hold a connection, not a thread; allow
    # more of them than its default of 100 so that a few dozen slowloris sockets cannot lock others out.
    waitress.serve(app, host=settings.host, port=settings.port, threads=settings.threads, ident='heatmap',
                   clear_untrusted_proxy_headers=False, connection_limit=CONNECTION_LIMIT, channel_timeout=60,
                   _quiet=True)
    return 0


def login(settings: config.Settings) -> int:
    store, refresher, _ = build(settings)
    if not refresher.sources:
        print('HEATMAP_AUTH=none: nothing is configured to get cookies', file=sys.stderr)
        return 2
    new = refresher.refresh_now()
    if new is None:
        print(f'login failed: {store.state.last_error or "no source could be tried: import cookies first"}',
              file=sys.stderr)
        return 1
    print(f'new cookies from {new.source}: {describe(list(new.cookies))}')
    return 0


def import_cookies(settings: config.Settings, source: str) -> int:
    try:
        text = sys.stdin.read() if source == '-' else Path(source).read_text(encoding='utf-8', errors='replace')
        cookies = parse_export(text)
    except OSError as error:
        print(f'cannot read {source}: {error.strerror}', file=sys.stderr)
        return 2
    except CookieExportError as error:
        print(f'not imported: {error}', file=sys.stderr)
        return 2
    CookieStore(settings.data_dir).save_cookies(cookies, 'import')
    print(f'imported: {describe(cookies)}')
    return 0


def status(settings: config.Settings) -> int:
    report = health(CookieStore(settings.data_dir).state, refreshing=False)
    cookies = report['cookies']
    print(f"cookies valid: {'yes' if cookies['valid'] else 'no'}; expire: {cookies['expires_at'] or 'unknown'}; "
          f"source: {cookies['source'] or '-'}; refreshed: {cookies['refreshed_at'] or 'never'}")
    if cookies['last_error']:
        print(f"last error: {cookies['last_error']}")
    return 0 if cookies['valid'] else 1


def doctor(settings: config.Settings) -> int:
    store, refresher, tiles = build(settings)
    apify = next((s for s in refresher.sources if s.name == 'apify'), None)
    failed = 0
    for step in run_checks(store.state, settings.maps_url, settings.upstream_timeout,
                           lambda cookies: tiles.check_cookies(cookies, settings.mode == 'redirect'),
                           apify.check if apify else None):
        print(f"{'ok  ' if step.ok else 'FAIL'}  {step.name}: {step.detail}")
        failed += not step.ok
    return 1 if failed else 0


def write_presets(settings: config.Settings, out: str | None) -> int:
    if not out or not settings.public_url:
        print('presets needs --out DIR and --public-url URL (or HEATMAP_PUBLIC_URL)', file=sys.stderr)
        return 2
    context = presets.PresetContext(settings.public_url, settings.access_key,
                                    presets.parse_layers(settings.preset_layers), settings.preset_name)
    for path in presets.write_all(context, Path(out)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command', nargs='?', default='serve',
                        choices=['serve', 'login', 'import-cookies', 'status', 'doctor', 'presets'])
    parser.add_argument('file', nargs='?', help='for import-cookies: the export file, or - for stdin')
    parser.add_argument('--out', help='for presets: the directory to write them to')
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = config.load(args)
        logging.basicConfig(level=settings.log_level, format='%(asctime)s %(levelname)s %(message)s',
                            datefmt='%Y-%m-%d %H:%M:%S')
        logging.getLogger('waitress').setLevel(logging.ERROR)
        if args.command == 'import-cookies':
            if not args.file:
                parser.error('import-cookies needs a FILE (or - to read standard input)')
            return import_cookies(settings, args.file)
        if args.command == 'presets':
            return write_presets(settings, args.out)
        return {'serve': serve, 'login': login, 'status': status, 'doctor': doctor}[args.command](settings)
    except config.ConfigError as error:
        print(f'configuration: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
