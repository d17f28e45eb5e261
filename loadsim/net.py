"""Network vocabulary: listen addresses, whether a host is on loopback, and clients that stay there.

loadsim is safe by default: it listens on 127.0.0.1 and sends traffic, pushes and
queries only to loopback unless the user names another host. "Loopback" is decided
on the addresses a name resolves to, every one of them (IPv4, IPv6 and IPv4-mapped
IPv6 alike), never on how the name is spelled: ``127.evil.example`` resolves
wherever its owner wants. A name that does not resolve is not loopback.

Deciding before the run is not enough: a name can resolve to 127.0.0.1 when it is
checked and elsewhere a minute later (DNS rebinding), and an answer can redirect a
client to any address. So every client loadsim opens carries a :class:`Reach`, and
the address is checked again *when a connection is made*, on the very address the
socket connects to: the HTTP driver's pool (:meth:`Reach.addresses`), aiohttp
sessions (:func:`session`, through aiohttp's ``socket_factory``) and urllib
(:func:`opener`, through ``http.client``'s connection hook). A host the user allowed
by name (``--allow-target``, ``--allow-host``) gets a reach beyond loopback; nothing
else does. These clients ignore proxy settings in the environment (aiohttp's default,
made urllib's too): a proxy would carry loopback traffic to another machine.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    import aiohttp

DEFAULT_LISTEN = "127.0.0.1:9477"


def address_is_loopback(text: str) -> bool:
    """Whether an address (not a name) is loopback: ``127.0.0.0/8``, ``::1`` or ``::ffff:127.x.y.z``."""
    return _address_is_loopback(text)


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


class BeyondLoopbackError(ConnectionRefusedError):
    """loadsim refused to connect: the address is not loopback and its host was not allowed."""


@dataclass(frozen=True, slots=True)
class Reach:
    """Where one client may connect: loopback only (the default), or anywhere (a host the user allowed)."""

    beyond_loopback: bool = False

    @classmethod
    def of(cls, host: str, allowed: Collection[str]) -> Reach:
        """The reach of a client of ``host``: beyond loopback only if the user allowed that host by name."""
        return cls(beyond_loopback=host.strip("[]") in {h.strip("[]") for h in allowed})

    def check(self, address: str) -> None:
        """Raise :class:`BeyondLoopbackError` unless a connection to ``address`` (an IP) is allowed."""
        if not self.beyond_loopback and not _address_is_loopback(address):
            msg = f"refused to connect to {address}: not a loopback address (allow the host by name to reach it)"
            raise BeyondLoopbackError(msg)

    def open_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The ``socket_factory`` of aiohttp: a socket for one resolved address, if that address may be reached."""
        family, type_, proto, _, sockaddr = addr_info
        self.check(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    async def addresses(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """``getaddrinfo`` of ``host``, only the addresses this reach allows; BeyondLoopbackError if none is.

        The caller connects to exactly these (never to the name again), so what was
        checked is what is reached.
        """
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            # The standard resolver in a thread, as asyncio's own getaddrinfo does (uvloop's goes
            # through libuv): one resolver for the checks before the run and at each connection.
            infos: list[tuple[Any, ...]] = await asyncio.to_thread(
                socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
            )
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sockaddr = (str(ip), port, 0, 0) if ip.version == 6 else (str(ip), port)
            infos = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        allowed = [info for info in infos if self.beyond_loopback or _address_is_loopback(str(info[4][0]))]
        if not allowed:
            shown = ", ".join(sorted({str(info[4][0]) for info in infos}))
            msg = f"refused to connect to {host} ({shown}): not a loopback address (allow the host by name to reach it)"
            raise BeyondLoopbackError(msg)
        return allowed

    def create_connection(
        self, address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        """``socket.create_connection``, connecting only to addresses this reach allows (for ``http.client``)."""
        host, port = address
        error: OSError | None = None
        for family, type_, proto, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            try:
                self.check(str(sockaddr[0]))
            except BeyondLoopbackError as e:
                error = e
                continue
            sock = socket.socket(family, type_, proto)
            try:
                if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined] # noqa: SLF001
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
            except OSError as e:
                sock.close()
                error = e
                continue
            return sock
        raise error or OSError(f"{host} did not resolve")


LOOPBACK_ONLY = Reach()


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, reach: Reach, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = reach.create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, reach: Reach, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = reach.create_connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, reach: Reach) -> None:
        super().__init__()
        self.reach = reach

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_GuardedHTTPConnection, reach=self.reach), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, reach: Reach) -> None:
        super().__init__()
        self.reach = reach

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            functools.partial(_GuardedHTTPSConnection, reach=self.reach),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


def opener(reach: Reach = LOOPBACK_ONLY) -> urllib.request.OpenerDirector:
    """A urllib opener whose every connection (redirects included) is checked against ``reach``.

    HTTP and HTTPS only: no proxies from the environment, and none of ``build_opener``'s
    ``ftp:``, ``file:`` and ``data:`` handlers (a redirect to ``ftp://`` would otherwise
    connect wherever it says).
    """
    director = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.UnknownHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        _GuardedHTTPHandler(reach),
        _GuardedHTTPSHandler(reach),
    ):
        director.add_handler(handler)
    return director


def session(reach: Reach = LOOPBACK_ONLY, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose every connection (redirects included) is checked against ``reach``.

    Call it on the running loop. Keyword arguments go to ``aiohttp.ClientSession``.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(socket_factory=None if reach.beyond_loopback else reach.open_socket)
    return aiohttp.ClientSession(connector=connector, **kwargs)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its userinfo, and the username and password it carried (percent-decoded).

    Raises ValueError for a URL whose authority cannot be read (a bad port).
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    username, password = parts.username, parts.password
    netloc = parts.netloc.rpartition("@")[2]
    _ = parts.port  # raises ValueError for a bad port
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return (
        clean,
        None if username is None else unquote(username),
        None if password is None else unquote(password),
    )
