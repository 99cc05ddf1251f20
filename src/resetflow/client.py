"""Who is asking: the client's address and user agent, as the audit trail and the per-IP
limits see them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_USER_AGENT = 256


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str
    user_agent: str

    @classmethod
    def system(cls) -> ClientInfo:
        """For actions taken by the service itself or an operator's command."""
        return cls(ip="-", user_agent="resetflow")


def client_ip(peer: str | None, forwarded_for: str | None, *, trusted: tuple[Network, ...]) -> str:
    """The client's address. ``X-Forwarded-For`` is believed only from trusted proxies,
    read from the right: the first address that is not itself a trusted proxy."""
    address = peer or "-"
    if not forwarded_for or not _is_in(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not _is_valid(hop):
            return address
        if not _is_in(hop, trusted):
            return hop
        address = hop
    return address


def from_trusted_proxy(peer: str | None, *, trusted: tuple[Network, ...]) -> bool:
    """Whether the peer is one of the proxies whose ``X-Forwarded-*`` headers count."""
    return peer is not None and _is_in(peer, trusted)


def _is_valid(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_in(value: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def limit_subject(address: str) -> str:
    """What a per-IP limit counts: an IPv4 address as it is, an IPv6 one by its /64 (one
    subscriber usually holds a whole /64, and could otherwise take a fresh address for
    every request); an IPv4-mapped IPv6 address as its IPv4 address. Anything else (a
    Unix socket's ``-``) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
