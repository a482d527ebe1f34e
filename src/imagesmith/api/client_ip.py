"""Who is really calling: the connection's peer, or, when that peer is one of the operator's
trusted proxies, the nearest untrusted address in X-Forwarded-For read from the right (the
entries on the left are whatever the client chose to send)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from fastapi import Request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def parse_networks(spec: str) -> tuple[IPNetwork, ...]:
    """`IMAGESMITH_TRUSTED_PROXIES`: comma-separated addresses or CIDR ranges."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    )


def is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def real_client(peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def client_ip(request: Request, trusted_proxies: str) -> str:
    peer = request.client.host if request.client else "unknown"
    return real_client(
        peer, request.headers.get("x-forwarded-for"), parse_networks(trusted_proxies)
    )
