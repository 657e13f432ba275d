"""Who is asking: client addresses behind a trusted reverse proxy, the public base URL, and rate limits."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Mapping

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


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


def client_address(environ: Mapping, trusted_proxies: Networks) -> str:
    """The client's address; ``X-Forwarded-For`` counts only when the peer is a trusted proxy.

    >>> client_address({'REMOTE_ADDR': '127.0.0.1', 'HTTP_X_FORWARDED_FOR': '203.0.113.9, 127.0.0.1'},
    ...                parse_networks('127.0.0.1'))
    '203.0.113.9'
    >>> client_address({'REMOTE_ADDR': '198.51.100.7', 'HTTP_X_FORWARDED_FOR': '10.0.0.1'}, ())
    '198.51.100.7'
    """
    peer = environ.get('REMOTE_ADDR', '')
    if not is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in environ.get('HTTP_X_FORWARDED_FOR', '').split(',') if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted_proxies):
            return hop
    return peer


def base_url(environ: Mapping, trusted_proxies: Networks, configured: str = '') -> str:
    """The URL this server is reached at: the configured one, else the request's own scheme and host
    (from ``X-Forwarded-Proto``/``-Host``/``-Prefix`` only when a trusted proxy sent them).

    >>> base_url({'wsgi.url_scheme': 'http', 'HTTP_HOST': 'box:8080', 'REMOTE_ADDR': '127.0.0.1',
    ...           'HTTP_X_FORWARDED_PROTO': 'https', 'HTTP_X_FORWARDED_HOST': 'maps.example.org',
    ...           'HTTP_X_FORWARDED_PREFIX': '/heat/'}, parse_networks('127.0.0.1'))
    'https://maps.example.org/heat'
    >>> base_url({'wsgi.url_scheme': 'http', 'HTTP_HOST': 'box:8080', 'HTTP_X_FORWARDED_HOST': 'evil'}, ())
    'http://box:8080'
    """
    if configured:
        return configured.rstrip('/')
    scheme = environ.get('wsgi.url_scheme', 'http')
    host = environ.get('HTTP_HOST') or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    prefix = environ.get('SCRIPT_NAME', '')
    if is_trusted(environ.get('REMOTE_ADDR', ''), trusted_proxies):
        scheme = environ.get('HTTP_X_FORWARDED_PROTO', scheme).split(',')[0].strip()
        host = environ.get('HTTP_X_FORWARDED_HOST', host).split(',')[0].strip()
        prefix = environ.get('HTTP_X_FORWARDED_PREFIX', prefix)
    return f"{scheme}://{host}{prefix.rstrip('/')}"


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled evenly; 0 turns it off."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.per_minute, self.max_clients = per_minute, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
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
        rate = self.per_minute / 60
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                if len(self._buckets) > self.max_clients:
                    self._forget_full(now, rate)
                return 0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / rate

    def _forget_full(self, now: float, rate: float) -> None:
        """Drop clients whose buckets have refilled: they are indistinguishable from new ones."""
        self._buckets = {client: (tokens, last) for client, (tokens, last) in self._buckets.items()
                         if tokens + (now - last) * rate < self.per_minute}
