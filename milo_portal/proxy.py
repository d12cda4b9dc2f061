"""Believe a reverse proxy's X-Forwarded-* headers only when the request came from it."""
from __future__ import annotations

import ipaddress
from typing import Iterable

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxyFix:
    """Apply Werkzeug's ProxyFix only to requests whose direct peer is a trusted proxy.

    ProxyFix alone believes the headers of anyone who can reach the app: a client talking
    to it directly could then choose its own address (and so dodge the per-address login
    throttle) or claim https. Requests from any other peer keep their real REMOTE_ADDR and
    scheme; their forwarded headers are ignored.
    """

    def __init__(self, app, proxies: int, trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.app = app
        self.fixed = ProxyFix(app, x_for=proxies, x_proto=proxies, x_host=proxies)
        self.trusted = tuple(trusted)

    def is_trusted(self, peer: str | None) -> bool:
        """Return whether ``peer`` (REMOTE_ADDR) is one of the trusted proxies."""
        try:
            address = ipaddress.ip_address((peer or "").split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)

    def __call__(self, environ, start_response):
        if self.is_trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
