"""Network vocabulary: listen addresses, and whether a host is on this machine's loopback.

loadsim is safe by default: it listens on 127.0.0.1 and sends traffic, pushes and
queries only to loopback unless the user names another host. "Loopback" is decided
on the addresses a name resolves to, every one of them (IPv4, IPv6 and IPv4-mapped
IPv6 alike), never on how the name is spelled: ``127.evil.example`` resolves
wherever its owner wants. A name that does not resolve is not loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:9477"


def _address_is_loopback(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (an IP literal is itself); empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (False if it does not resolve)."""
    addresses = resolve(host)
    return bool(addresses) and all(_address_is_loopback(a) for a in addresses)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A host and port to listen on."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``HOST:PORT``, ``:PORT`` (loopback) or ``[::1]:PORT``; raises ValueError."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            msg = f"expected HOST:PORT such as 127.0.0.1:9477, got {text!r}"
            raise ValueError(msg)
        host = host.strip("[]") or "127.0.0.1"
        return cls(host, int(port_text))

    @property
    def is_loopback(self) -> bool:
        """Only reachable from this machine."""
        return is_loopback(self.host)
