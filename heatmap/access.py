"""Who is asking: client addresses behind a trusted reverse proxy, the public base URL, and rate limits."""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
LABEL = r'[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'  # '_' as in Docker's service names
HOST = re.compile(rf'(?:{LABEL}(?:\.{LABEL})*\.?|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>\d{{1,5}}))?')
PATH_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?")


def parse_networks(text: str) -> Networks:
    """Addresses and networks from a comma-separated list; ValueError names a bad entry.

    >>> parse_networks('127.0.0.1, 172.16.0.0/12')
    (IPv4Network('127.0.0.1/32'), IPv4Network('172.16.0.0/12'))
    """
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(',') if item.strip())


def is_trusted(address: str, trusted: Networks) -> bool:
    """
    >>> is_trusted('172.18.0.3', parse_networks('172.16.0.0/12')), is_trusted('8.8.8.8', ())
    (True, False)
    """
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def forwarded_address(hop: str) -> str | None:
    """One ``X-Forwarded-For`` hop as a canonical address (a port or brackets dropped); None when it is none.

    >>> [forwarded_address(hop) for hop in ('203.0.113.9:5123', '[2001:DB8::1]:443', 'unknown', 'not-an-ip-7')]
    ['203.0.113.9', '2001:db8::1', None, None]
    """
    if hop.startswith('['):
        hop = hop[1:].partition(']')[0]
    elif hop.count(':') == 1:
        hop = hop.partition(':')[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


def client_address(environ: Mapping, trusted_proxies: Networks) -> str:
    """The client's address; ``X-Forwarded-For`` counts only when the peer is a trusted proxy, and only as far
    as trusted proxies vouch for it: a hop that is no address ends the walk (what lies beyond it is unchecked).

    >>> client_address({'REMOTE_ADDR': '127.0.0.1', 'HTTP_X_FORWARDED_FOR': '203.0.113.9, 127.0.0.1'},
    ...                parse_networks('127.0.0.1'))
    '203.0.113.9'
    >>> client_address({'REMOTE_ADDR': '198.51.100.7', 'HTTP_X_FORWARDED_FOR': '10.0.0.1'}, ())
    '198.51.100.7'
    >>> client_address({'REMOTE_ADDR': '127.0.0.1', 'HTTP_X_FORWARDED_FOR': '203.0.113.9, junk'},
    ...                parse_networks('127.0.0.1'))
    '127.0.0.1'
    """
    peer = environ.get('REMOTE_ADDR', '')
    if not is_trusted(peer, trusted_proxies):
        return peer
    client = peer
    for hop in reversed(environ.get('HTTP_X_FORWARDED_FOR', '').split(',')):
        address = forwarded_address(hop.strip())
        if address is None:
            break
        client = address
        if not is_trusted(address, trusted_proxies):
            break
    return client


@lru_cache(maxsize=4096)
def rate_key(address: str) -> str:
    """Whose budget a request spends: an IPv6 client's whole /64 (one subscriber gets a /64 or more), else the
    address.

    >>> rate_key('2001:db8:7:1:ab::9'), rate_key('::ffff:203.0.113.9'), rate_key('203.0.113.9'), rate_key('x')
    ('2001:db8:7:1::/64', '203.0.113.9', '203.0.113.9', 'x')
    """
    if ':' not in address:  # IPv4 (client_address gives it in its one spelling), or no address at all
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def valid_host(host: str) -> bool:
    """A host name, an IPv4 address or a bracketed IPv6 address, with an optional port: nothing else.

    >>> [valid_host(h) for h in ('maps.example.org', 'web_1:8080', '[2001:db8::1]:443', 'a/"><b', 'a:99999', '')]
    [True, True, True, False, False, False]
    """
    match = HOST.fullmatch(host) if len(host) <= 260 else None
    if not match or int(match.group('port') or 0) > 65535:
        return False
    if match.group('ipv6'):
        try:
            ipaddress.IPv6Address(match.group('ipv6'))
        except ValueError:
            return False
    return True


def base_url(environ: Mapping, trusted_proxies: Networks, configured: str = '') -> str:
    """The URL this server is reached at: the configured one, else the request's own scheme and host
    (from ``X-Forwarded-Proto``/``-Host``/``-Prefix`` only when a trusted proxy sent them and each is an http(s)
    scheme, a host and a path; a value that is not is replaced by the request's own).

    >>> base_url({'wsgi.url_scheme': 'http', 'HTTP_HOST': 'box:8080', 'REMOTE_ADDR': '127.0.0.1',
    ...           'HTTP_X_FORWARDED_PROTO': 'https', 'HTTP_X_FORWARDED_HOST': 'maps.example.org',
    ...           'HTTP_X_FORWARDED_PREFIX': '/heat/'}, parse_networks('127.0.0.1'))
    'https://maps.example.org/heat'
    >>> base_url({'wsgi.url_scheme': 'http', 'HTTP_HOST': 'box:8080', 'HTTP_X_FORWARDED_HOST': 'evil'}, ())
    'http://box:8080'
    >>> base_url({'wsgi.url_scheme': 'http', 'HTTP_HOST': 'box:8080', 'REMOTE_ADDR': '127.0.0.1',
    ...           'HTTP_X_FORWARDED_PROTO': 'javascript', 'HTTP_X_FORWARDED_PREFIX': 'x:y'},
    ...          parse_networks('127.0.0.1'))
    'http://box:8080'
    """
    if configured:
        return configured.rstrip('/')
    scheme = environ.get('wsgi.url_scheme', 'http')
    host = environ.get('HTTP_HOST', '')
    if not valid_host(host):
        host = f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    prefix = environ.get('SCRIPT_NAME', '')
    if is_trusted(environ.get('REMOTE_ADDR', ''), trusted_proxies):
        forwarded_scheme = environ.get('HTTP_X_FORWARDED_PROTO', scheme).split(',')[0].strip().lower()
        forwarded_host = environ.get('HTTP_X_FORWARDED_HOST', host).split(',')[0].strip()
        forwarded_prefix = environ.get('HTTP_X_FORWARDED_PREFIX', prefix)
        scheme = forwarded_scheme if forwarded_scheme in ('http', 'https') else scheme
        host = forwarded_host if valid_host(forwarded_host) else host
        prefix = forwarded_prefix if PATH_PREFIX.fullmatch(forwarded_prefix) else prefix
    return f"{scheme}://{host}{prefix.rstrip('/')}"


class RateLimiter:
    """A token bucket per client (IPv6 clients per /64): ``per_minute`` requests, refilled evenly; 0 turns it off.

    Buckets are kept in order of last use; those unused for a minute are full again, the same as new ones, and
    are dropped from the old end, a few at a time. At most ``max_clients`` are kept.
    """

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.per_minute, self.max_clients = per_minute, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last use)
        self._lock = threading.Lock()

    def wait_needed(self, client: str, now: float | None = None) -> float:
        """0 when ``client`` may go ahead now (and takes a token), else the seconds until it may.

        >>> limiter = RateLimiter(per_minute=2)
        >>> [limiter.wait_needed('a', now=0), limiter.wait_needed('a', now=0), limiter.wait_needed('a', now=0)]
        [0, 0, 30.0]
        """
        if not self.per_minute:
            return 0
        now = time.monotonic() if now is None else now
        key = rate_key(client)
        rate = self.per_minute / 60
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            self._buckets[key] = (tokens - 1 if tokens >= 1 else tokens, now)
            self._forget_old(now)
        return 0 if tokens >= 1 else (1 - tokens) / rate

    def _forget_old(self, now: float) -> None:
        """Drop buckets unused for a minute (refilled, so no different from new ones), oldest first, and any
        beyond ``max_clients``.

        >>> limiter = RateLimiter(per_minute=60, max_clients=2)
        >>> for second, client in enumerate(['a', 'b', 'c']):
        ...     _ = limiter.wait_needed(client, now=second)
        >>> list(limiter._buckets), limiter.wait_needed('d', now=63), list(limiter._buckets)
        (['b', 'c'], 0, ['d'])
        """
        while self._buckets:
            oldest, (_, last) = next(iter(self._buckets.items()))
            if now - last < 60 and len(self._buckets) <= self.max_clients:
                return
            del self._buckets[oldest]
