"""`redirector.py doctor`: check each step from Strava's pages to a loaded tile and say which one fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import requests

from actor.src.mailbox import CodeMailbox, MailboxError, parse_imap_url

from .accounts import Account
from .cache import TileCache
from .sources import RefreshError, SessionRefresh
from .store import CookieStore


@dataclass
class Step:
    name: str
    ok: bool
    detail: str


def run_checks(store: CookieStore, cache: TileCache, maps_url: str, timeout: float,
               check_tile: Callable[[list[dict]], None], apify=None, local=None,
               mailboxes: Sequence[Account] = ()) -> Iterator[Step]:
    """Yield one Step per check, in the order a refresh needs them; later steps use what earlier ones got.

    ``apify`` and ``local`` are the configured login sources, if any: each is asked to ``check()`` itself.
    ``mailboxes``: the login accounts with a mailbox for the emailed code, each opened read-only.
    """
    if store.problem:
        yield Step('cookies.json usable', False, store.problem)
    elif store.path.exists():
        yield Step('cookies.json usable', True, f'{store.path} can be read')
    else:
        yield Step('cookies.json usable', True, f'{store.path} is not there yet: the first import or login makes it')
    cache_problem = cache.write_problem()
    yield Step('tile cache writable', cache_problem is None, cache_problem or f'{cache.root} takes new tiles')
    try:
        status = requests.get(maps_url, allow_redirects=False, timeout=timeout).status_code
        yield Step('heatmap page reachable', True, f'{maps_url} answered {status}')
    except requests.RequestException as error:
        yield Step('heatmap page reachable', False, f'{maps_url} did not answer ({type(error).__name__}): '
                   'check the network and STRAVA_MAPS_URL')
        return

    state = store.state
    cookies = list(state.cookies)
    if state.session is None:
        yield Step('session valid', False, 'no _strava4_session cookie is stored: import cookies from a logged-in '
                   'browser (README, "Getting cookies") or configure a login')
    else:
        try:
            cookies = SessionRefresh(maps_url, timeout).fetch(cookies)
            yield Step('session valid', True, 'the session cookie was accepted')
            yield Step('tile cookies obtainable', True, 'the heatmap page set the three CloudFront cookies')
        except RefreshError as error:
            yield Step('session valid', False, f'{error}' if error.reason == 'strava_busy' else
                       f'{error}: import fresh cookies or configure a login')

    if not state.tiles_valid() and cookies == list(state.cookies):
        yield Step('one tile loads', False, 'there are no valid tile cookies to try a tile with')
    else:
        try:
            check_tile(cookies)
            yield Step('one tile loads', True, 'Strava served a tile with the cookies')
        except RefreshError as error:
            hint = '' if error.reason == 'redirect_refused' else ': check STRAVA_TILE_URL, or import fresh cookies'
            yield Step('one tile loads', False, f'{error}{hint}')

    for name, source in (('actor reachable on Apify', apify), ('browser for the local login', local)):
        if source is not None:
            try:
                yield Step(name, True, source.check())
            except RefreshError as error:
                yield Step(name, False, str(error))
    for account in mailboxes:
        yield mailbox_step(account)


def mailbox_step(account: Account) -> Step:
    """Log in to the account's mailbox and open it read-only, the way a login does, without reading a message."""
    name = f'mailbox of {account.masked}'
    try:
        with CodeMailbox(parse_imap_url(account.imap_url), account.imap_password) as mailbox:
            count = mailbox.message_count
            return Step(name, True, f'{mailbox.address} opens read-only ({count} message{"s" * (count != 1)}; none '
                        'was read)')
    except MailboxError as error:
        return Step(name, False, str(error))
