#!/usr/bin/env python3
"""A stable tile URL for Strava's global heatmap that renews its own cookies.

    python redirector.py [serve]              run the server (default)
    python redirector.py login                log in to Strava now (or refresh from the session), print the expiry
    python redirector.py import-cookies FILE  store cookies from an export (- reads stdin)
    python redirector.py status               show the stored cookies' state (changes nothing)
    python redirector.py doctor               check each step from Strava's pages to a tile
    python redirector.py pair NAME            pair a browser: print the token its extension pushes cookies with
    python redirector.py pair --list | --revoke NAME   the paired browsers; refuse one's pushes from now on
    python redirector.py keys add NAME | list | revoke NAME   a key of their own for each member of a club
    python redirector.py presets --out DIR --public-url URL   write the presets for every app
    python redirector.py pack --layer ride/hot --bbox W,S,E,N --zooms 10-15 --out alps.mbtiles   an offline pack

Every setting is an environment variable and the same-named flag: see `redirector.py COMMAND --help`.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from heatmap.install import missing_install

try:
    import bottle
    import xstatic.pkg.leaflet
    from bottle import HTTPResponse, request, static_file

    import presets
    from heatmap import cli
    from heatmap import settings as config
    from heatmap.access import RateLimiter, base_url, client_address
    from heatmap.browsers import Browsers, BrowsersError, pairing_text, receive_push
    from heatmap.cache import TileCache
    from heatmap.cookies import CookieExportError, describe, parse_export
    from heatmap.hot import HOT_TILE, HotTiles
    from heatmap.keys import ANYONE, MEMBERS_PERSONAL_OFF, Caller, Keys, KeysError, key_text, split_key
    from heatmap.layers import BadTile, parse_tile
    from heatmap.metrics import ServerCollector, exposition, registry
    from heatmap.packs import MAX_TRACK_BYTES, BadPackInput, CountingBusy, PackBusy, has_unfinished_job, job_states
    from heatmap.refresher import Refresher
    from heatmap.server import MAX_BODY
    from heatmap.sources import ApifyLogin, LocalLogin, SessionRefresh
    from heatmap.status import advice, health, member_report
    from heatmap.store import CookieStore, NewerCookiesStored, StoreError
    from heatmap.upstream import TileService, WriteAfterSending
except ModuleNotFoundError as missing:
    sys.exit(missing_install(missing.name))

log = logging.getLogger('redirector')
VIEWS = Path(__file__).resolve().parent / 'heatmap' / 'views'
TILE_CACHE_CONTROL = 'public, max-age=86400'
PUSH_CORS = {'Access-Control-Allow-Origin': '*'}  # a push carries its token in a header, never a cookie
PUSH_PREFLIGHT = {**PUSH_CORS, 'Access-Control-Allow-Methods': 'POST',
                  'Access-Control-Allow-Headers': 'Authorization, Content-Type', 'Access-Control-Max-Age': '86400'}
ERRORS = {404: 'not found: this server answers /, /healthz, /livez, /presets/, /packs/, '
               '/tiles/{activity}/{color}/{z}/{x}/{y}.png and /personal/{activity}/{color}/{z}/{x}/{y}.png',
          400: 'bad request: its body cannot be read (the /packs/ forms are multipart/form-data)',
          405: 'method not allowed', 500: 'internal error: the server log has the details',
          413: 'the form is larger than the 100 kB a form here takes (a track file goes to /packs/ as '
               'multipart/form-data)'}


def plain(status: int, text: str, **headers) -> HTTPResponse:
    return HTTPResponse(text + '\n', status, {'Content-Type': 'text/plain; charset=utf-8', **headers})


def as_json(document: dict, status: int = 200, **headers) -> HTTPResponse:
    return HTTPResponse(json.dumps(document), status, {'Content-Type': 'application/json', 'Cache-Control': 'no-store',
                                                       **headers})


def make_app(settings: config.Settings, store: CookieStore, refresher: Refresher, tiles: TileService,
             keys: Keys) -> bottle.Bottle:
    app = bottle.Bottle()
    bottle.TEMPLATE_PATH[:] = [str(VIEWS)]
    browsers = Browsers(settings.data_dir)

    def client() -> str:
        return client_address(request.environ, settings.trusted_proxies)

    def require_key(kind: str = 'global') -> Caller:
        """Who the request's key says it is: the operator, a member or, on a server that needs no key, anyone."""
        given = split_key(request.query_string)[0]
        caller = keys.admit(given, kind)
        if caller is None and keys.caller(given) is not None:
            raise plain(403, MEMBERS_PERSONAL_OFF)
        if caller is None:
            log.info('rejected a request with a missing or wrong key from %s', client())
            raise plain(403, 'missing or wrong key')
        return caller

    def bearer() -> str:
        return request.get_header('Authorization', '').removeprefix('Bearer ').strip()

    def require_admin():
        if not settings.admin_token:
            raise plain(404, 'admin actions are off: set HEATMAP_ADMIN_TOKEN to enable them')
        if not hmac.compare_digest(bearer().encode(), settings.admin_token.encode()):
            log.warning('rejected an admin request with a missing or wrong token from %s', client())
            raise plain(403, 'missing or wrong admin token')

    def report() -> dict:
        problem = store.problem or refresher.crash or tiles.redirect_problem()
        if problem is None and store.state.tiles_valid():  # else what the cookies need comes first
            problem = tiles.upstream_problem()
        try:
            paired, unreadable = browsers.list(), None
        except BrowsersError as error:
            paired, unreadable = [], str(error)
        return health(store.state, refresher.refreshing, problem, refresher.unavailable_reason(),
                      accounts=refresher.accounts(), warning=tiles.cache.problem or unreadable, browsers=paired)

    @app.error(400)
    @app.error(413)
    @app.error(404)
    @app.error(405)
    @app.error(500)
    def error_page(error):
        error.set_header('Content-Type', 'text/plain; charset=utf-8')
        return ERRORS.get(error.status_code, error.status_line) + '\n'

    @app.get('/tiles/<activity>/<color>/<z>/<x>/<y>.png')
    def tile(activity, color, z, x, y):
        return send_tile('global', activity, color, z, x, y)

    @app.get('/personal/<activity>/<color>/<z>/<x>/<y>.png')
    def personal_tile(activity, color, z, x, y):
        return send_tile('personal', activity, color, z, x, y)

    def send_tile(kind, activity, color, z, x, y):
        caller = require_key(kind)
        try:
            wanted = parse_tile(activity, color, z, x, y, request.query.get('px'), tiles.max_zoom, kind)
        except BadTile as error:
            return plain(400, str(error))
        who = client()
        if settings.mode == 'redirect' and kind == 'global':
            answer = tiles.redirect(wanted)
        else:
            answer = tiles.tile(wanted, caller.budget(who), answer_first=True)
        log.debug('tile %s for %s (%s): %d %s', request.path, who, caller, answer.status,
                  answer.answered if answer.status in (200, 302) else answer.reason)
        if answer.status in (200, 302):
            keys.count(caller, fetched=answer.answered == 'strava')
        tiles.counters['answered', answer.answered if answer.status in (200, 302) else 'error'] += 1
        if answer.location:
            return HTTPResponse(status=302, Location=answer.location)
        if answer.status != 200:
            extra = {'Retry-After': str(answer.retry_after)} if answer.retry_after else {}
            return plain(answer.status, answer.reason + (' (see /)' if answer.status == 503 else ''), **extra)
        tiles.counters['tiles_served'] += 1
        headers = {'Cache-Control': TILE_CACHE_CONTROL, 'Access-Control-Allow-Origin': '*'}
        if answer.file is None:  # the disk refused it: no copy to validate against, in memory or on disk
            return HTTPResponse(answer.body, 200, {**headers, 'Content-Type': 'image/png'})
        if kind == 'global':  # a personal tile's URL does not say whose it is: the disk copy does, by athlete
            request.environ[HOT_TILE] = answer  # HotTiles answers the next request for this URL from memory
        if answer.body is None:
            return static_file(answer.file, root=tiles.cache.root_name, mimetype='image/png', etag=answer.etag,
                               headers=headers)
        body = answer.body if answer.write is None else WriteAfterSending(answer)  # its disk copy: after the answer
        return HTTPResponse(body, 200, {**headers, 'Content-Type': 'image/png', 'Content-Length': len(answer.body),
                                        'ETag': answer.etag, 'Last-Modified': answer.last_modified})

    @app.get('/tiles/<rest:path>')
    @app.get('/personal/<rest:path>')
    def bad_tile_path(rest):
        require_key()
        return plain(400, 'tile URLs look like /tiles/{activity}/{color}/{z}/{x}/{y}.png or .../{y}@2x.png '
                          '(/personal/… alike)')

    def layers(caller: Caller) -> tuple[presets.Layer, ...]:
        """The layers offered to ``caller``: the personal heatmap's too once it is known, unless it is not theirs."""
        return presets.parse_layers(settings.preset_layers, bool(tiles.athlete_id()) and keys.opens_personal(caller))

    def preset_context(caller: Caller) -> presets.PresetContext:
        """The presets of the key the request came with: a member's hold their own key, and no other."""
        key = '' if caller is ANYONE else split_key(request.query_string)[0]
        return presets.PresetContext(base_url(request.environ, settings.trusted_proxies, settings.public_url), key,
                                     layers(caller), settings.preset_name, max_zoom=tiles.max_zoom)

    @app.get('/presets')
    @app.get('/packs')
    def add_slash():
        require_key()
        query = f'?{request.query_string}' if request.query_string else ''
        return HTTPResponse(status=301, Location=f'{request.path.rsplit("/", 1)[-1]}/{query}')

    @app.get('/presets/')
    def presets_page():
        return presets.page(preset_context(require_key()))

    @app.get('/presets/<name>')
    def preset_file(name):
        context = preset_context(require_key())
        found = presets.find(context, name)
        if found is None:
            return plain(404, f'no preset named {name[:80]!r}: see /presets/')
        return HTTPResponse(found.make(context), 200, {
            'Content-Type': found.content_type, 'Content-Disposition': f'attachment; filename="{found.name}"',
            'Cache-Control': 'no-store'})

    def shows_details() -> bool:
        """Whether the request may see the accounts, browsers and errors: on a server that needs a key, with one."""
        return keys.caller(split_key(request.query_string)[0]) is not None

    @app.get('/healthz')
    def healthz():
        """Readiness: 200 while detailed tiles can be served, else 503 with the reason (the rest needs the key)."""
        document = report()
        if not shows_details():
            document = {'ok': document['ok'], 'reason': document['reason']}
        return as_json(document, 200 if document['ok'] else 503)

    @app.get('/livez')
    def livez():
        """Liveness: the process answers and its cookie refresher runs, whatever Strava says."""
        return plain(200, 'alive') if refresher.alive() else plain(500, 'the cookie refresher has stopped')

    @app.get('/')
    def status_page():
        if not shows_details():
            return bottle.template('status_brief', health=report())
        base = base_url(request.environ, settings.trusted_proxies, settings.public_url)
        state = store.state
        return bottle.template('status', state=state, health=report(), settings=settings, counters=tiles.counters,
                               tile_url=f'{base}/tiles/{{activity}}/{{color}}/{{z}}/{{x}}/{{y}}.png',
                               personal=bool(tiles.athlete_id()), max_zoom=tiles.max_zoom,
                               advice=advice(state.last_error_reason, cli.command(), bool(settings.admin_token)),
                               cli=cli.command(), waiting_for_user=refresher.waiting_for_user(),
                               keys_required=keys.required)

    @app.get('/static/leaflet/<path:path>')
    def leaflet(path):
        return static_file(path, root=xstatic.pkg.leaflet.BASE_DIR, headers={'Cache-Control': 'public, max-age=86400'})

    @functools.cache
    def packs():
        """The offline packs, loaded on first use: their geometry libraries take a while to import."""
        from heatmap.packs.jobs import PackService
        return PackService(tiles, settings.data_dir, settings.pack_rate, settings.pack_max_tiles,
                           int(settings.packs_max_mb * 10 ** 6))

    if has_unfinished_job(settings.data_dir):  # a restart interrupted it
        packs().resume_unfinished()

    @app.hook('after_request')
    def close_uploads():
        """Close (and so remove) the temporary files a request body and its uploads were spooled to, now."""
        posted = request.environ.get('bottle.request.post')
        for _, value in posted.allitems() if posted else ():
            if isinstance(value, bottle.FileUpload):
                value.file.close()
        if 'bottle.request.body' in request.environ:
            request.environ['bottle.request.body'].close()

    @contextmanager
    def counting():
        """One upload or area is counted at a time: the others are told to retry."""
        try:
            with packs().counting():
                yield
        except CountingBusy as error:
            raise plain(503, str(error), **{'Retry-After': '5'}) from None

    def pack_request(caller: Caller):
        """The pack the page's form asks for: layer, zooms, px, format, and bbox or track with corridor_km."""
        form, track = request.forms, request.files.get('track')
        if form.get('layer', '').startswith('personal/') and not keys.opens_personal(caller):
            raise plain(403, MEMBERS_PERSONAL_OFF)
        try:
            return packs().request(form.get('layer', ''), form.get('zooms', ''), form.get('px', '256'),
                                   form.get('format', 'mbtiles'), form.get('bbox'),
                                   track.file.read(MAX_TRACK_BYTES + 1) if track else None,
                                   track.filename if track and track.raw_filename else 'the track',
                                   form.get('corridor_km'))
        except BadPackInput as error:
            raise plain(400, str(error)) from None

    @app.get('/packs/')
    def packs_page():
        return bottle.template('packs', layers=layers(require_key()),
                               jobs=packs().jobs(), max_tiles=settings.pack_max_tiles, rate=settings.pack_rate,
                               max_zoom=tiles.max_zoom, basemap=settings.basemap_url,
                               place_search=settings.place_search_url)

    @app.post('/packs/estimate')
    def pack_estimate():
        caller = require_key()
        with counting():
            return as_json(packs().preview(pack_request(caller)))

    @app.post('/packs/')
    def pack_start():
        caller = require_key()
        with counting():
            try:
                job, existing = packs().start(pack_request(caller))
            except BadPackInput as error:  # too large
                return plain(400, str(error))
            except PackBusy as error:
                return plain(409, str(error))
        if existing:
            log.info('pack %s asked for again by %s (%s): it is the same pack', job.id, client(), caller)
            return as_json({**job.to_page(), 'existing': True})
        log.info('pack %s started by %s (%s)', job.id, client(), caller)
        return as_json(job.to_page(), 202)

    @app.get('/packs/<job_id>.json')
    def pack_job(job_id):
        require_key()
        job = packs().job(job_id)
        return as_json(job.to_page()) if job else plain(404, f'no pack job {job_id[:40]!r}: see /packs/')

    @app.delete('/packs/<job_id>')
    def pack_remove(job_id):
        require_key()
        done = packs().remove(job_id)
        if done is None:
            return plain(404, f'no pack job {job_id[:40]!r}: see /packs/')
        log.info('pack %s %s by %s', job_id, done, client())
        return as_json({'id': job_id, 'result': done})

    @app.get('/packs/<job_id>/<name>')
    def pack_file(job_id, name):
        require_key()
        job = packs().job(job_id)
        if job is None or job.status != 'done':
            return plain(404, f'no finished pack {job_id[:40]!r}: see /packs/')
        return static_file(job.file, root=str(packs().folder), download=job.request.file_name,
                           mimetype='application/octet-stream')

    @app.post('/admin/refresh')
    def admin_refresh():
        require_admin()
        refresher.request(force=True)
        log.info('refresh requested by an admin from %s', client())
        note = refresher.forced_refresh_note()
        return plain(202, 'refresh requested' + (' (after the one running now)' if refresher.refreshing else '')
                     + (f'; {note}' if note else '') + ': watch /healthz')

    @app.post('/admin/cookies')
    def admin_cookies():
        require_admin()
        try:
            cookies = parse_export(request.body.read(MAX_BODY).decode('utf-8', 'replace'))
            stored = store.import_cookies(cookies, force=request.query.get('force') in ('1', 'true', 'yes'))
        except CookieExportError as error:
            log.info('refused an admin import from %s: %s', client(), error)
            return plain(400, str(error))
        except NewerCookiesStored as error:
            log.info('refused an admin import from %s: %s', client(), error)
            return plain(409, str(error))
        except StoreError as error:
            return plain(503, str(error))
        log.info('cookies imported by an admin from %s: %s', client(), describe(list(stored.cookies)))
        refresher.request()
        return plain(200, f'imported: {describe(cookies)}')

    @app.post('/admin/browsers')
    def admin_pair():
        require_admin()
        name = request.forms.getunicode('name', default='') or ''
        try:
            token, replaced = browsers.pair(name)
        except BrowsersError as error:
            return plain(400, str(error))
        log.info('browser %r paired by an admin from %s', name.strip(), client())
        return plain(200, pairing_text(name.strip(), token, replaced), **{'Cache-Control': 'no-store'})

    @app.delete('/admin/browsers/<name>')
    def admin_revoke(name):
        require_admin()
        try:
            if not browsers.revoke(name):
                return plain(404, f'no browser named {name[:40]!r} is paired')
        except BrowsersError as error:
            return plain(503, str(error))
        log.info('browser %r revoked by an admin from %s', name, client())
        return plain(200, f'revoked {name!r}: its pushes are refused from now on')

    metrics = registry(ServerCollector(tiles, refresher, store, keys, lambda: job_states(settings.data_dir)))

    @app.get('/metrics')
    def metrics_page():
        """What the server did, for Prometheus (its scrape config sends the admin token)."""
        require_admin()
        text, content_type = exposition(metrics, request.get_header('Accept', ''))
        return HTTPResponse(text, 200, {'Content-Type': content_type, 'Cache-Control': 'no-store'})

    @app.get('/admin/keys')
    def admin_members():
        require_admin()
        try:
            members = keys.usage()
        except KeysError as error:
            return plain(503, str(error))
        return as_json({'members': [member_report(member) for member in members], 'problem': keys.problem})

    @app.post('/admin/keys')
    def admin_add_member():
        require_admin()
        name = request.forms.getunicode('name', default='') or ''
        try:
            key, replaced = keys.add(name)
        except KeysError as error:
            return plain(400, str(error))
        log.info('member %r given a key by an admin from %s', name.strip(), client())
        return plain(200, key_text(name.strip(), key, replaced), **{'Cache-Control': 'no-store'})

    @app.delete('/admin/keys/<name>')
    def admin_revoke_member(name):
        require_admin()
        try:
            if not keys.revoke(name):
                return plain(404, f'no member named {name[:40]!r} has a key')
        except KeysError as error:
            return plain(503, str(error))
        log.info('the key of member %r revoked by an admin from %s', name, client())
        return plain(200, f'revoked {name!r}: their key is refused from now on')

    @app.route('/browser/cookies', method='OPTIONS')
    def browser_preflight():
        """The CORS preflight of a browser extension's push; no other route answers one."""
        return HTTPResponse(status=204, headers=PUSH_PREFLIGHT)

    @app.post('/browser/cookies')
    def browser_push():
        try:
            name = browsers.authenticate(bearer())
        except BrowsersError as error:
            return plain(503, str(error), **PUSH_CORS)
        if name is None:
            log.warning('refused a browser push with a missing or wrong token from %s', client())
            return plain(403, 'missing or wrong push token: pair this browser again (redirector.py pair NAME) and '
                              'paste the new token into the extension', **PUSH_CORS)
        try:
            outcome = receive_push(browsers, refresher, name, request.body.read(MAX_BODY).decode('utf-8', 'replace'),
                                   client(), wait=settings.upstream_timeout * 2 + 5)
        except CookieExportError as error:
            return plain(400, str(error), **PUSH_CORS)
        now = report()
        return as_json({'kept': outcome.kept, 'result': outcome.result, 'ok': now['ok'], 'reason': now['reason'],
                        'expires_at': now['cookies']['expires_at']}, 202 if outcome.queued else 200, **PUSH_CORS)

    return app if tiles.cache.memory is None else HotTiles(app, tiles.cache, tiles.counters, keys,
                                                           settings.trusted_proxies)


def build(settings: config.Settings, store: CookieStore | None = None) -> tuple[CookieStore, Refresher, TileService]:
    store = store or CookieStore(settings.data_dir)
    session = SessionRefresh(settings.maps_url, settings.upstream_timeout)
    sources = [] if settings.auth == 'none' else [session]
    for account in settings.accounts if settings.login_source else ():
        login_input = {'email': account.email, 'password': account.password, 'loginUrl': settings.login_url,
                       'heatmapUrl': settings.maps_url, 'timeoutSecs': int(settings.login_timeout)}
        timeout = settings.login_timeout
        if account.imap_url:  # waiting for the code mail comes on top of the time on Strava's pages
            login_input.update(imapUrl=account.imap_url, imapPassword=account.imap_password,
                               imapWaitSecs=int(settings.imap_wait))
            timeout += settings.imap_wait
        if settings.login_source == 'apify':
            sources.append(ApifyLogin(settings.apify_token, settings.apify_actor, settings.apify_api_url or None,
                                      login_input, timeout, settings.upstream_timeout, account))
        else:
            sources.append(LocalLogin(login_input, timeout, settings.chromium_path, account))
    refresher = Refresher(store, sources, verify=lambda cookies: tiles.check_cookies(cookies),
                          refresh_before=settings.refresh_before, backoff_min=settings.backoff_min,
                          backoff_max=settings.backoff_max, poll=settings.refresh_poll, session=session)
    tiles = TileService(store, refresher, TileCache(settings.data_dir / 'tiles', settings.cache_ttl,
                                                    settings.cache_max_bytes, int(settings.memory_cache_mb * 2**20)),
                        settings.tile_url, settings.public_tile_url, settings.public_max_zoom,
                        settings.upstream_timeout, RateLimiter(settings.rate_limit), pool_size=settings.threads * 2,
                        max_waiters=max(1, settings.threads // 2), redirecting=settings.mode == 'redirect',
                        personal_template=settings.personal_tile_url, athlete_id=settings.athlete_id,
                        max_zoom=settings.served_max_zoom)
    return store, refresher, tiles


if __name__ == '__main__':
    sys.exit(cli.main(sys.argv[1:], cli.Wiring(build, make_app)))
