"""The web server: waitress, bounded so that no client can hold every connection or fill the disk.

Waitress reads requests asynchronously: a slow client holds a connection, not a thread. On top of
its limits, one address may hold at most ``PER_ADDRESS`` connections (this machine and trusted proxies excepted),
a request head must arrive within ``HEAD_TIMEOUT`` seconds however slowly it dribbles in, and a
body larger than ``MAX_BODY`` is refused with 413 before waitress buffers it, in one line naming
the limit. Only the track uploads of offline packs may be larger (``MAX_UPLOAD``), and only when
their URL holds a key that opens the packs (the operator's or a member's; asked of ``heatmap.keys`` in
memory, on waitress's I/O thread): a stranger's upload is refused before its body is read.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from copy import copy
from functools import partial

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.utilities import Error, RequestEntityTooLarge

from .access import Networks, is_trusted
from .packs import MAX_TRACK_BYTES

log = logging.getLogger(__name__)
MAX_BODY = 2 ** 20  # a cookie export is a few kB; the admin routes read at most this
MAX_UPLOAD = MAX_TRACK_BYTES + 2 ** 16  # a track file and the form around it
UPLOAD_PATHS = ('/packs/', '/packs/estimate')  # the routes that take a track file (POST)
CONNECTION_LIMIT = 500
PER_ADDRESS = 32  # a browser opens 6 connections per host, a navigator a few; a household behind NAT fits
UNCAPPED = ('127.0.0.1', '::1', '::ffff:127.0.0.1')  # a reverse proxy on this machine, or the operator
HEAD_TIMEOUT = 10  # seconds from the first byte of a request (or the connection) to the end of its head
IDLE_TIMEOUT = 60  # seconds a keep-alive connection may sit idle between requests


class StartError(Exception):
    """The server cannot start; ``str()`` is one line naming the setting to change."""


class BodyTooLarge(Error):
    """waitress's 413, in one plain line that names the limit and what fits in it; readable by the extension's
    pushes from another origin too."""

    code, reason = 413, 'Request Entity Too Large'

    def to_response(self, ident=None):
        return (f'{self.code} {self.reason}', [('Content-Type', 'text/plain; charset=utf-8'),
                                               ('Access-Control-Allow-Origin', '*')], f'{self.body}\n'.encode())


def too_large(upload: bool) -> str:
    """
    >>> too_large(False)
    'the request body is larger than the 1 MB this server takes (a cookie export is a few kB; a track file for \
/packs/ may be 20 MB, with the access key if one is set)'
    """
    if upload:
        return (f'the upload is larger than the {MAX_UPLOAD // 2 ** 20} MB a track file may be: simplify the track '
                '(fewer points), or split it')
    return (f'the request body is larger than the {MAX_BODY // 2 ** 20} MB this server takes (a cookie export is a '
            f'few kB; a track file for /packs/ may be {MAX_UPLOAD // 2 ** 20} MB, with the access key if one is set)')


def anyone(query: str) -> bool:
    """Every query opens the uploads: a server that needs no key."""
    return True


class GuardedParser(HTTPRequestParser):
    """A request parser that allows a track upload's larger body on the routes that take one, with a key that opens
    them (``upload_allowed`` of the query string, a lookup in memory), and answers a body over the limit with one
    plain line."""

    def __init__(self, adj, upload_allowed: Callable[[str], bool] = anyone):
        super().__init__(adj)
        self.upload_allowed = upload_allowed
        self.upload = False

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if self.command == 'POST' and self.path in UPLOAD_PATHS and self.upload_allowed(self.query):
            self.adj = copy(self.adj)  # this request's own limits: the server's stay as they are
            self.adj.max_request_body_size = MAX_UPLOAD
            self.upload = True

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if isinstance(self.error, RequestEntityTooLarge):
            self.error = BodyTooLarge(too_large(self.upload))
        return consumed


class GuardedChannel(HTTPChannel):
    """A connection that remembers since when its current request head has been arriving."""

    parser_class = GuardedParser

    def __init__(self, server: GuardedServer, sock, addr, adj, map=None):
        self.head_started: float | None = time.time()
        self.counted = False
        self.parser_class = partial(GuardedParser, upload_allowed=server.upload_allowed)
        super().__init__(server, sock, addr, adj, map)
        server.per_address[addr[0]] += 1
        self.counted = True

    def received(self, data: bytes) -> bool:
        if self.request is None and self.head_started is None:
            self.head_started = time.time()
        result = super().received(data)
        if self.request is None or self.request.headers_finished:
            self.head_started = None
        return result

    def del_channel(self, map=None) -> None:
        if self.counted:
            self.counted = False
            counts = self.server.per_address
            counts[self.addr[0]] -= 1
            if counts[self.addr[0]] <= 0:
                del counts[self.addr[0]]
        super().del_channel(map)


class GuardedServer(TcpWSGIServer):
    channel_class = GuardedChannel

    def __init__(self, application, trusted_proxies: Networks = (), upload_allowed: Callable[[str], bool] = anyone,
                 **settings):
        self.per_address: Counter = Counter()
        self.trusted_proxies, self.upload_allowed = trusted_proxies, upload_allowed
        self._refused_logged_at = 0.0
        super().__init__(application, **settings)

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:  # as waitress: a bogus socket, or a peer gone before its options were set
            return
        addr = self.fix_addr(addr)
        address = addr[0]
        if (self.per_address[address] >= PER_ADDRESS and address not in UNCAPPED
                and not is_trusted(address, self.trusted_proxies)):
            conn.close()
            now = time.monotonic()
            if now - self._refused_logged_at > 60:
                self._refused_logged_at = now
                log.warning('refused connections from %s: it already holds %d (a reverse proxy? list it in '
                            'HEATMAP_TRUSTED_PROXIES)', address, PER_ADDRESS)
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        for channel in list(self.active_channels.values()):
            started = getattr(channel, 'head_started', None)
            if started is not None and now - started > HEAD_TIMEOUT:
                channel.will_close = True


def start(app, host: str, port: int, threads: int, trusted_proxies: Networks, names: dict[str, str],
          upload_allowed: Callable[[str], bool] = anyone) -> GuardedServer:
    """Bind and return the server (``server.run()`` serves); StartError says which setting to change.

    ``names`` maps ``host``/``port`` to what the user set them with (``HEATMAP_PORT`` or ``--port``);
    ``upload_allowed`` says whether a track upload's query string holds a key that opens the packs.
    """
    try:
        return GuardedServer(
            app, trusted_proxies, upload_allowed, host=host, port=port, threads=threads, ident='heatmap',
            # X-Forwarded-* are judged by HEATMAP_TRUSTED_PROXIES (heatmap.access), so waitress must leave them.
            clear_untrusted_proxy_headers=False, connection_limit=CONNECTION_LIMIT, channel_timeout=IDLE_TIMEOUT,
            cleanup_interval=2, max_request_body_size=MAX_BODY, inbuf_overflow=MAX_BODY)
    except ValueError:  # waitress could not resolve the host
        raise StartError(f'{names["host"]} {host!r} is not a known address: set it to 127.0.0.1 (this machine only), '
                         '0.0.0.0 (every interface) or one of this machine\'s addresses') from None
    except socket.gaierror:
        raise StartError(f'{names["host"]} {host!r} is not a known address: set it to 127.0.0.1 or 0.0.0.0') from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise StartError(f'port {port} on {host} is already in use by another program: stop it, or choose '
                             f'another port with {names["port"]}') from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise StartError(f'{names["host"]} {host!r} is not an address of this machine: set it to 127.0.0.1, '
                             '0.0.0.0 or one of its addresses') from None
        if error.errno == errno.EACCES:
            raise StartError(f'port {port} needs root: choose a port above 1023 with {names["port"]} and let a '
                             'reverse proxy listen on 80/443') from None
        raise StartError(f'cannot listen on {host}:{port} ({error.strerror})') from None
