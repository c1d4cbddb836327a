"""A DNS name's addresses, asked of the system's resolver or of one DNS server.

A ``dns:`` Triton target says which: ``dns:///name:port`` (no authority) resolves with the
system's resolver (``getaddrinfo``: ``/etc/hosts``, then the nameservers of
``/etc/resolv.conf``, as a Kubernetes pod resolves a headless Service);
``dns://SERVER[:PORT]/name:port`` asks the DNS server at ``SERVER`` (port 53 unless given)
for the name's A and AAAA records, as gRPC's own DNS resolver does with an authority. The
second needs no change to the machine's files, so a test (or an operator) can point one
gateway at a DNS server of its own.

Nothing is cached here: every ``addresses`` call asks again (the replica pool asks once per
check interval, whatever the records' TTL).

Typical usage::

    resolver = dns_resolver(None)                       # the system's resolver
    resolver = dns_resolver("127.0.0.53:5353")          # that DNS server, over UDP
    await resolver.addresses("triton-headless", 8001)   # ("10.0.0.7:8001", "10.0.0.8:8001")
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver

DNS_PORT = 53
DNS_LIFETIME_S = 2.0
"""Longest time one resolution may take (every query and retry of it together)."""


class ResolutionError(OSError):
    """The name has no address now (unknown, no records, or no DNS server answered)."""


class DnsResolver(Protocol):
    """Resolves a name to the replicas' ``host:port`` addresses."""

    async def addresses(self, name: str, port: int) -> tuple[str, ...]:
        """Every address of ``name`` as sorted ``host:port`` strings (v4 and v6);
        ``ResolutionError`` when there is none now."""
        ...


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(address: str, *, default_port: int | None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ``default_port`` when none is given
    (None: a port is required). ``ValueError`` when the address is not of that form."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "")
    if not host:
        raise ValueError(f"{address!r} names no host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{address!r} names no port (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{address!r}: {port_text!r} is not a port")
    return host, int(port_text)


def dns_resolver(server: str | None) -> DnsResolver:
    """The system's resolver (``server`` None), or one asking the DNS server ``server``
    (``host[:port]``, port 53 by default)."""
    return SystemResolver() if server is None else ServerResolver(server)


class SystemResolver:
    """``getaddrinfo`` in the event loop's executor: what every other program here sees."""

    async def addresses(self, name: str, port: int) -> tuple[str, ...]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA refuses
            raise ResolutionError(f"cannot resolve {name}: {exc}") from exc
        return tuple(sorted({join_host_port(str(info[4][0]), port) for info in infos}))


class ServerResolver:
    """A and AAAA queries for the name (absolute: no search list) to one DNS server, with
    dnspython's asyncio resolver (UDP, TCP when the answer is truncated)."""

    def __init__(self, server: str, *, lifetime_s: float = DNS_LIFETIME_S) -> None:
        host, port = split_host_port(server, default_port=DNS_PORT)
        self.server = join_host_port(host, port)
        self._lifetime_s = lifetime_s
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]

    async def addresses(self, name: str, port: int) -> tuple[str, ...]:
        try:
            answers = await self._resolver.resolve_name(
                dns.name.from_text(name), lifetime=self._lifetime_s
            )
        except dns.exception.DNSException as exc:
            raise ResolutionError(f"cannot resolve {name} at {self.server}: {exc}") from exc
        return tuple(sorted({join_host_port(address, port) for address in answers.addresses()}))
