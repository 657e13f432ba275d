"""The command line of ``redirector.py``: one verb each, its own help, one clear line for every mistake."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import presets

from . import __version__
from . import settings as config
from .browsers import Browsers, BrowsersError, pairing_text
from .cookies import CookieExportError, athlete_of, describe, parse_export, when
from .keys import Keys, key_text
from .packs import BadPackInput, PackBusy, PackFailed
from .server import StartError, start
from .sources import login_stack_missing, source_label
from .status import health
from .store import CookieStore, NewerCookiesStored, StoreError, this_user
from .tokens import TokenFileError

log = logging.getLogger('redirector')
ROOT = Path(__file__).resolve().parent.parent

# verb -> (what it does, the setting groups it uses)
COMMANDS = {
    'serve': ('run the server (the default command)',
              ('common', 'server', 'presets', 'upstream', 'accounts', 'login', 'packs')),
    'login': ('get new cookies now with the configured login (or from the session cookie when no login is '
              'configured) and print their expiry', ('common', 'upstream', 'accounts', 'login')),
    'import-cookies': ('store cookies from a browser export: a JSON array, a Netscape cookies.txt or a Cookie '
                       'header line', ('common',)),
    'status': ("show the stored cookies' state, changing nothing; exit 0 when tiles can be served",
               ('common', 'accounts')),
    'doctor': ("check each step from Strava's pages to a tile and name the one that fails",
               ('common', 'upstream', 'accounts', 'login')),
    'pair': ("pair a browser: print the push token its extension sends cookies with (--list shows the paired "
             'browsers, --revoke NAME refuses one from now on)', ('common',)),
    'keys': ('give each member of a club a key of their own: keys add NAME prints it, keys list shows what each '
             'member used, keys revoke NAME ends one key', ('common',)),
    'presets': ('write the presets for every app to a folder', ('common', 'presets', 'upstream')),
    'pack': ('make an offline pack: one layer of the heatmap for an area and a zoom range, in one file for the '
             'phone (MBTiles or an OsmAnd .sqlitedb)', ('common', 'upstream', 'accounts', 'login', 'packs')),
}
PACK_USAGE = ('%(prog)s --layer [personal/]ACTIVITY/COLOR (--bbox W,S,E,N | --track FILE --corridor-km KM) '
              '--zooms MIN-MAX [--px 256|512] [--format mbtiles|osmand] --out FILE [--dry-run]\n'
              '       %(prog)s --list | --cancel ID | --delete ID   (the packs of the /packs/ page)')
NEGATIVE_VALUE = re.compile(r'-\.?\d')  # a west below 0, as in -122.5,37.7,-122.3,37.9: not a flag
VALUE_FLAGS = ('--bbox', '--zooms')  # flags whose value may start with a minus sign


DESCRIPTION = """A stable tile URL for Strava's global heatmap that renews its own cookies.

Every setting is an environment variable and the same-named flag (HEATMAP_PORT is --port);
`redirector.py COMMAND --help` lists the ones a command uses."""


class CommandError(Exception):
    """A mistake on the command line that is not a setting; ``str()`` is the one line to print."""


class Parser(argparse.ArgumentParser):
    """argparse, with every mistake one line about the verb it was made with, and exit status 2."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: {message} (see {self.prog} --help)\n')


class PipeOut:
    """A text stream that goes quiet once its reader has gone: `doctor | head -1` ends without a BrokenPipeError,
    and a `pack … | head -3` goes on to write its file."""

    def __init__(self, stream):
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._quiet()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._quiet()

    def _quiet(self) -> None:
        self._gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)  # what the interpreter flushes at exit goes nowhere, quietly
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Wiring(NamedTuple):
    """What redirector.py gives the verbs: ``build(settings, store)`` and ``make_app(settings, *built)``."""

    build: Callable
    make_app: Callable


def command() -> str:
    """How to run this program's CLI as the server itself was started: its interpreter and its script.

    >>> command().endswith('redirector.py')
    True
    """
    python = sys.executable
    if shutil.which('python') == python or shutil.which('python3') == python:
        python = Path(python).name
    else:
        python = _relative(Path(python))
    return f'{python} {_relative(ROOT / "redirector.py")}'


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith('..') else str(path)
    except ValueError:
        return str(path)


def parser() -> Parser:
    main = Parser(prog='redirector.py', description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    main.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    verbs = main.add_subparsers(dest='command', metavar='COMMAND')
    for name, (text, groups) in COMMANDS.items():
        verb = verbs.add_parser(name, help=text, description=text[0].upper() + text[1:] + '.')
        if name == 'import-cookies':
            verb.add_argument('file', metavar='FILE', help='the export file, or - to read standard input')
            verb.add_argument('--force', action='store_true',
                              help='replace stored tile cookies even when they are newer than the imported ones')
        if name == 'pair':
            verb.usage = '%(prog)s NAME | --list | --revoke NAME'
            verb.add_argument('name', nargs='?', metavar='NAME', help="the browser's name, e.g. laptop")
            chosen = verb.add_mutually_exclusive_group()
            chosen.add_argument('--list', action='store_true', help='show the paired browsers and their last push')
            chosen.add_argument('--revoke', metavar='NAME', help="refuse this browser's pushes from now on")
        if name == 'keys':
            verb.usage = '%(prog)s add NAME | list | revoke NAME'
            verb.add_argument('action', choices=('add', 'list', 'revoke'), help='what to do')
            verb.add_argument('name', nargs='?', metavar='NAME', help="the member's name, e.g. anna")
        if name == 'presets':
            verb.add_argument('--out', required=True, metavar='DIR', help='the folder to write the presets to')
        if name == 'pack':
            add_pack_arguments(verb)
        config.add_arguments(verb, groups)
    return main


def add_pack_arguments(verb: argparse.ArgumentParser) -> None:
    verb.usage = PACK_USAGE
    verb.add_argument('--layer', metavar='ACTIVITY/COLOR',
                      help='the layer, e.g. ride/hot, run/blue or sport_GravelRide/purple; personal/ride/hot is your '
                           'own heatmap')
    area = verb.add_mutually_exclusive_group()
    area.add_argument('--bbox', metavar='W,S,E,N', help='the area as a box: west, south, east, north in degrees')
    area.add_argument('--track', metavar='FILE', help='the area along a GPX or GeoJSON track or route (with '
                                                      '--corridor-km), or inside a GeoJSON polygon')
    verb.add_argument('--corridor-km', metavar='KM', help='how far either side of the track, in km')
    verb.add_argument('--zooms', metavar='MIN-MAX', help='the zoom levels, e.g. 10-15, or one: 14')
    verb.add_argument('--px', default='256', metavar='256|512', help='tile size in pixels (default 256)')
    verb.add_argument('--format', metavar='mbtiles|osmand',
                      help='mbtiles (for Locus, Guru Maps, OruxMaps, QGIS) or osmand (a .sqlitedb for OsmAnd); '
                           'default: what the --out name ends with')
    verb.add_argument('--out', metavar='FILE', help='the pack: a .mbtiles or .sqlitedb file, or a folder to put it '
                                                    'in under its own name')
    verb.add_argument('--dry-run', action='store_true', help='show the estimate and stop: nothing is fetched')
    jobs = verb.add_mutually_exclusive_group()
    jobs.add_argument('--list', action='store_true', help='list the packs of the /packs/ page')
    jobs.add_argument('--cancel', metavar='ID', help='cancel a pack the /packs/ page is making')
    jobs.add_argument('--delete', metavar='ID', help='delete a pack of the /packs/ page, with its file')


def attach_negative(argv: list[str]) -> list[str]:
    """``--bbox -122.5,37.7,-122.3,37.9`` as ``--bbox=-122.5,…``: argparse would take a west below 0 for a flag
    (and ``--zooms -1-3`` likewise, so that the mistake is named by the pack, not by argparse).

    >>> attach_negative(['pack', '--bbox', '-122.5,37.7,-122.3,37.9', '--zooms', '10'])
    ['pack', '--bbox=-122.5,37.7,-122.3,37.9', '--zooms', '10']
    """
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] in VALUE_FLAGS and NEGATIVE_VALUE.match(arg):
            joined[-1] = f'{joined[-1]}={arg}'
        else:
            joined.append(arg)
    return joined


def main(argv: list[str], wiring: Wiring) -> int:
    """Run one verb; settings mistakes and the like print one line and return 2, never a traceback."""
    sys.stdout, sys.stderr = PipeOut(sys.stdout), PipeOut(sys.stderr)
    if not argv or (argv[0].startswith('-') and argv[0] not in ('-h', '--help', '--version')):
        argv = ['serve', *argv]
    main_parser = parser()
    args, unknown = main_parser.parse_known_args(attach_negative(argv))
    if unknown:  # named by the verb's own parser: `status --bogus` is a mistake about status
        verbs = next(action for action in main_parser._actions if isinstance(action, argparse._SubParsersAction))
        verbs.choices[args.command].error(f'unrecognized arguments: {" ".join(unknown)}')
    try:
        settings = config.load(args)
        level = settings.log_level if args.command == 'serve' or settings.log_level == 'DEBUG' else 'ERROR'
        logging.basicConfig(level=level, format='%(asctime)s %(levelname)s %(message)s', datefmt='%Y-%m-%d %H:%M:%S')
        # urllib3 would log every tile URL, signed ones included, and Pillow every chunk of a PNG it reads
        for noisy in ('waitress', 'urllib3', 'PIL'):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        if args.command in ('serve', 'login', 'doctor', 'pack'):
            config.check_login(settings)
        if args.command in ('serve', 'login', 'pack') and settings.login_source == 'local' and login_stack_missing():
            raise CommandError(f'{settings.name("HEATMAP_AUTH")}={settings.auth}: {login_stack_missing()}')
        return VERBS[args.command](settings, args, wiring)
    except (config.ConfigError, CommandError, StartError, StoreError, TokenFileError) as error:
        print(f'{"configuration: " if isinstance(error, config.ConfigError) else ""}{error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def writable_store(settings: config.Settings) -> CookieStore:
    """The store of a verb that writes; a data directory it cannot use is a one-line ConfigError."""
    return CookieStore(writable_data_dir(settings))


def writable_data_dir(settings: config.Settings) -> Path:
    """The data directory of a verb that writes; one it cannot use is a one-line ConfigError."""
    name = settings.name('HEATMAP_DATA_DIR')
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise config.ConfigError(f'{name} {settings.data_dir} cannot be created ({error.strerror}): set it to a '
                                 'writable directory') from None
    if not os.access(settings.data_dir, os.W_OK | os.X_OK):
        raise config.ConfigError(f'{name} {settings.data_dir} is not writable by this user: set it to a writable '
                                 f'directory, or run `sudo chown -R {this_user()} {settings.data_dir}`')
    return settings.data_dir


def serve(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    store = writable_store(settings)
    keys = Keys(settings.data_dir, settings.access_key, settings.members_personal)
    server = start(None, settings.host, settings.port, settings.threads, settings.trusted_proxies,
                   {'host': settings.name('HEATMAP_HOST'), 'port': settings.name('HEATMAP_PORT')},
                   upload_allowed=keys.admits_query)
    store, refresher, tiles = wiring.build(settings, store)
    server.application = wiring.make_app(settings, store, refresher, tiles, keys)  # bound first: a busy port says so
    state = store.state
    log.info('serving on http://%s:%d/ in %s mode; cookies: %s; renewal: %s', settings.host, settings.port,
             settings.mode, 'valid' if state.tiles_valid() else 'none valid, see / for how to get them',
             ', '.join(source_label(s) for s in refresher.sources) or 'off (HEATMAP_AUTH=none)')
    refresher.start()
    keys.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stop (systemd, Docker) ends through atexit: usage kept
    server.run()
    return 0


def login(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    store, refresher, _ = wiring.build(settings, writable_store(settings))
    logins = [s for s in refresher.sources if s.name != 'session']
    if logins:
        what = None  # which account logged in: known once one has
    elif refresher.sources and store.state.session:
        what = 'no login is configured, so the tile cookies were renewed from the stored session cookie'
        logins = refresher.sources
    elif refresher.sources:
        raise CommandError('nothing to log in with: set STRAVA_EMAIL and STRAVA_PASSWORD (a local login) or '
                           'APIFY_TOKEN and APIFY_ACTOR too (a login on Apify), or import cookies first')
    else:
        raise CommandError(f'{settings.name("HEATMAP_AUTH")}=none: nothing is configured to get cookies')
    new, error = refresher.refresh_now(logins, forced=True)  # the user acts: every account is tried
    if new is None:
        print(f'login failed: {error or store.state.last_error}', file=sys.stderr)
        return 1
    if what is None:
        what = f'logged in with {refresher.refreshed_by}' if refresher.refreshed_by else \
            'cookies were imported meanwhile and are kept'
    print(f'{what}: {describe(list(new.cookies))}')
    return 0


def import_cookies(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    source = args.file
    try:
        text = sys.stdin.read() if source == '-' else Path(source).read_text(encoding='utf-8', errors='replace')
    except OSError as error:
        raise CommandError(f'cannot read {source}: {error.strerror}') from None
    try:
        cookies = parse_export(text)
        writable_store(settings).import_cookies(cookies, force=args.force)
    except CookieExportError as error:
        raise CommandError(f'not imported: {error}') from None
    except NewerCookiesStored as error:
        print(f'not imported: {error}', file=sys.stderr)
        return 1
    print(f'imported: {describe(cookies)}')
    return 0


def status(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    if not settings.data_dir.exists():
        print(f'no cookies yet: {settings.name("HEATMAP_DATA_DIR")} {settings.data_dir} does not exist')
        return 1
    store = CookieStore(settings.data_dir, read_only=True)
    state = store.state
    accounts = [replace(state.account(a.id), email=a.masked) for a in settings.accounts]
    report = health(state, refreshing=False, problem=store.problem,
                    reason=state.last_error if state.cookies else 'no cookies yet', accounts=accounts)
    cookies = report['cookies']
    refreshed = when(state.refreshed_at) if state.refreshed_at else 'never'
    print(f"cookies valid: {'yes' if cookies['valid'] else 'no'}; expire: {when(state.expires_at)}; "
          f"source: {cookies['source'] or '-'}; refreshed: {refreshed}")
    if state.rejected_at:
        print(f'Strava refused them at {when(state.rejected_at)}, before their expiry')
    if store.problem:
        print(f'problem: {store.problem}')
    if cookies['last_error']:
        print(f"last error: {cookies['last_error']}")
    for account in report['accounts']:
        print(f"account {account['email']}: {account['state']}")
    try:
        paired = Browsers(settings.data_dir).list()
    except BrowsersError as error:
        print(f'browsers: {error}')
        paired = []
    for browser in paired:
        print(f'browser {browser_line(browser)}')
    return 0 if report['ok'] else 1


def browser_line(browser) -> str:
    """A paired browser in one line: its name, its last push and what came of it."""
    if browser.last_push_at is None:
        return f'{browser.name}: paired {when(browser.paired_at)}, no push yet'
    return f'{browser.name}: last push {when(browser.last_push_at)}: {browser.last_result}'


def pair(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    if args.list or args.revoke:
        if args.name:
            raise CommandError(f'pair takes either a NAME or {"--list" if args.list else "--revoke NAME"}, not both')
        if args.list:
            paired = Browsers(settings.data_dir).list() if settings.data_dir.exists() else []
            for browser in paired:
                print(browser_line(browser))
            if not paired:
                print('no browser is paired: `pair NAME` makes a push token for one')
            return 0
        if not Browsers(writable_data_dir(settings)).revoke(args.revoke):
            raise CommandError(f'no browser named {args.revoke[:40]!r} is paired (see pair --list)')
        print(f'revoked {args.revoke!r}: its pushes are refused from now on')
        return 0
    if not args.name:
        raise CommandError('pair needs the browser\'s NAME (e.g. pair laptop), or --list, or --revoke NAME')
    token, replaced = Browsers(writable_data_dir(settings)).pair(args.name)
    print(pairing_text(args.name.strip(), token, replaced))
    return 0


def keys(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    if args.action == 'list':
        if args.name:
            raise CommandError('keys list takes no NAME: it lists every member')
        members = Keys(settings.data_dir).usage() if settings.data_dir.exists() else []
        for member in members:
            print(member.line())
        if not members:
            print('no member has a key: `keys add NAME` makes one')
        return 0
    if not args.name:
        raise CommandError(f'keys {args.action} needs the member\'s NAME, e.g. keys {args.action} anna')
    members = Keys(writable_data_dir(settings))
    if args.action == 'revoke':
        if not members.revoke(args.name):
            raise CommandError(f'no member named {args.name[:40]!r} has a key (see keys list)')
        print(f'revoked {args.name.strip()!r}: their key is refused from now on (by a running server within seconds)')
        return 0
    key, replaced = members.add(args.name)
    print(key_text(args.name.strip(), key, replaced))
    return 0


def doctor(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    store = CookieStore(settings.data_dir, read_only=True)
    _, refresher, tiles = wiring.build(settings, store)
    sources = {s.name: s for s in refresher.sources}
    failed = 0
    from .doctor import (
        run_checks,  # requests, which only doctor uses, costs the server 76 ms at start
    )

    mailboxes = [account for account in settings.accounts if account.imap_url] if settings.login_source else []
    for step in run_checks(store, tiles.cache, settings.maps_url, settings.upstream_timeout, tiles.check_cookies,
                           sources.get('apify'), sources.get('local'), mailboxes):
        print(f"{'ok  ' if step.ok else 'FAIL'}  {step.name}: {step.detail}")
        failed += not step.ok
    return 1 if failed else 0


def write_presets(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    if not settings.public_url:
        raise CommandError('presets needs the address apps reach this server at: --public-url URL (or '
                           'HEATMAP_PUBLIC_URL), e.g. https://maps.example.org')
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f'--out {out} is a file: name a folder to write the presets into')
    stored = CookieStore(settings.data_dir, read_only=True).state.cookies if settings.data_dir.exists() else ()
    personal = bool(settings.athlete_id or athlete_of(stored))
    context = presets.PresetContext(settings.public_url, settings.access_key,
                                    presets.parse_layers(settings.preset_layers, personal), settings.preset_name,
                                    max_zoom=settings.served_max_zoom)
    previous = os.umask(0o077)  # the files hold the access key
    try:
        written = presets.write_all(context, out)
    except OSError as error:
        raise CommandError(f'cannot write the presets to {out} ({error.strerror}): choose a folder you can write '
                           'to with --out') from None
    finally:
        os.umask(previous)
    for path in written:
        print(path)
    return 0


def pack(settings: config.Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    # numpy and shapely take a while to import: only this verb loads them.
    from .packs.formats import output_format
    from .packs.jobs import PackService, PackTooLarge
    from .packs.progress import ConsoleProgress
    from .packs.request import size_text

    _, refresher, tiles = wiring.build(settings, writable_store(settings))
    packs = PackService(tiles, settings.data_dir, settings.pack_rate, settings.pack_max_tiles,
                        int(settings.packs_max_mb * 10 ** 6))
    if args.list or args.cancel or args.delete:
        return pack_jobs(packs, args)
    missing = [flag for flag, value in (('--layer', args.layer), ('--zooms', args.zooms),
                                        ('--bbox or --track', args.bbox or args.track)) if not value]
    if missing:
        raise CommandError(f'pack needs {", ".join(missing)}: e.g. pack --layer ride/hot --bbox 7.40,46.90,7.50,46.96 '
                           '--zooms 10-15 --out bern.mbtiles')
    if args.out is None and not args.dry_run:
        raise CommandError('pack needs --out FILE: where to write it (.mbtiles or .sqlitedb), or --dry-run')
    try:
        track = Path(args.track).read_bytes() if args.track else None
    except OSError as error:
        raise CommandError(f'cannot read --track {args.track}: {error.strerror}') from None
    try:
        format = output_format(Path(args.out), args.format) if args.out else args.format or 'mbtiles'
        request = packs.request(args.layer, args.zooms, args.px, format, args.bbox, track,
                                Path(args.track).name if args.track else '', args.corridor_km)
        estimate = packs.estimate(request)
        print(f'estimate: {estimate.summary()}', flush=True)
        if not packs.allows(estimate):
            raise PackTooLarge(estimate, packs.max_tiles)
        if args.dry_run:
            return 0
        refresher.start()  # a pack can outlast the tile cookies
        with ConsoleProgress() as progress:
            made = packs.run(request, Path(args.out), progress)
    except (BadPackInput, PackBusy) as error:
        limit = settings.name('HEATMAP_PACK_MAX_TILES')
        raise CommandError(str(error).replace('HEATMAP_PACK_MAX_TILES', limit)) from None
    except PackFailed as error:
        print(f'pack failed: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('stopped: run the same command again to go on where it stopped', file=sys.stderr)
        return 130
    print(f'wrote {made} ({size_text(made.stat().st_size)})')
    return 0


def pack_jobs(packs, args: argparse.Namespace) -> int:
    """``pack --list``, ``--cancel ID`` and ``--delete ID``: the packs of the /packs/ page, here or in the server."""
    if args.list:
        for job in packs.jobs():
            what = job.request.describe() if job.request else 'damaged job file'
            state = {'running': f'{job.progress.percent}% done', 'done': f'ready: {packs.folder / job.file}'}.get(
                job.status, f'{job.status}: {job.error}')
            print(f'{job.id}  {what}  {state}')
        return 0
    job_id = args.cancel or args.delete
    job = packs.job(job_id)
    if job is None:
        raise CommandError(f'no pack job {job_id[:40]!r}: `pack --list` shows them')
    if args.cancel and job.status != 'running':
        raise CommandError(f'pack {job.id} is not running ({job.status}): `pack --delete {job.id}` removes it')
    if args.delete and job.status == 'running':
        raise CommandError(f'pack {job.id} is still being made: `pack --cancel {job.id}` stops it first')
    print(f'pack {job.id} {packs.remove(job.id)}')
    return 0


VERBS = {'serve': serve, 'login': login, 'import-cookies': import_cookies, 'status': status, 'doctor': doctor,
         'pair': pair, 'keys': keys, 'presets': write_presets, 'pack': pack}
