"""Resolving a ``dns:`` Triton target: with an authority, the gateway asks that DNS server
(a real one on loopback here, whose records the test sets) for the name's A and AAAA records;
without one, the system's resolver answers. A name that does not resolve is an error the pool
survives (it keeps the replicas it knows)."""

from __future__ import annotations

import asyncio

import pytest
from hetgateway.dns_resolution import (
    ResolutionError,
    ServerResolver,
    SystemResolver,
    dns_resolver,
)
from hetgateway.triton_replicas import ReplicaPool, parse_target

NAME = "replicas.hetserve.test"


def test_a_dns_server_named_in_the_target_is_asked_for_every_address(loopback_dns):
    loopback_dns.set(NAME, ["127.0.27.2", "127.0.27.1", "::1"])
    resolver = dns_resolver(loopback_dns.address)
    assert isinstance(resolver, ServerResolver)
    addresses = asyncio.run(resolver.addresses(NAME, 8001))
    assert addresses == ("127.0.27.1:8001", "127.0.27.2:8001", "[::1]:8001")
    assert loopback_dns.queries == 2  # A and AAAA


def test_each_resolution_asks_again_and_sees_the_records_as_they_are_now(loopback_dns):
    resolver = dns_resolver(loopback_dns.address)

    async def scenario() -> list[tuple[str, ...]]:
        seen = []
        for addresses in (["127.0.27.1", "127.0.27.2"], ["127.0.27.2"], ["127.0.27.3"]):
            loopback_dns.set(NAME, addresses)
            seen.append(await resolver.addresses(NAME, 9001))
        return seen

    assert asyncio.run(scenario()) == [
        ("127.0.27.1:9001", "127.0.27.2:9001"), ("127.0.27.2:9001",), ("127.0.27.3:9001",)]


def test_an_unknown_name_or_a_silent_server_is_a_resolution_error(loopback_dns, unused_port):
    with pytest.raises(ResolutionError, match="unknown.hetserve.test"):
        asyncio.run(dns_resolver(loopback_dns.address).addresses("unknown.hetserve.test", 8001))
    silent = ServerResolver(f"127.0.0.1:{unused_port()}", lifetime_s=0.3)
    with pytest.raises(ResolutionError):
        asyncio.run(silent.addresses(NAME, 8001))


def test_without_an_authority_the_system_resolver_answers():
    resolver = dns_resolver(None)
    assert isinstance(resolver, SystemResolver)
    assert "127.0.0.1:8001" in asyncio.run(resolver.addresses("localhost", 8001))
    with pytest.raises(ResolutionError):  # refused before any lookup: an empty label
        asyncio.run(resolver.addresses("bad..name", 8001))


class Clients:
    """Stand-in replica clients (their address), always ready; which were closed."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    def connect(self, address: str) -> str:
        return address

    async def probe(self, client: str) -> bool:
        return True

    async def disconnect(self, client: str) -> None:
        self.closed.append(client)


def test_a_pool_follows_the_records_of_the_server_in_its_target(loopback_dns):
    clients = Clients()
    pool = ReplicaPool(parse_target(f"dns://{loopback_dns.address}/{NAME}:8001"),
                       connect=clients.connect, probe=clients.probe,
                       disconnect=clients.disconnect, refresh_interval_s=60)

    async def scenario() -> list[list[str]]:
        seen = []
        for addresses in (["127.0.27.1", "127.0.27.2"], ["127.0.27.1", "127.0.27.2",
                                                         "127.0.27.3"], ["127.0.27.3"]):
            loopback_dns.set(NAME, addresses)
            await pool.check()
            seen.append([replica.address for replica in pool.replicas])
        await asyncio.sleep(0.05)  # the replicas that left, idle, close at once
        return seen

    assert asyncio.run(scenario()) == [
        ["127.0.27.1:8001", "127.0.27.2:8001"],
        ["127.0.27.1:8001", "127.0.27.2:8001", "127.0.27.3:8001"],
        ["127.0.27.3:8001"],
    ]
    assert sorted(clients.closed) == ["127.0.27.1:8001", "127.0.27.2:8001"]


def test_when_the_name_stops_resolving_the_pool_keeps_the_replicas_it_knows(loopback_dns):
    clients = Clients()
    pool = ReplicaPool(parse_target(f"dns://{loopback_dns.address}/{NAME}:8001"),
                       connect=clients.connect, probe=clients.probe,
                       disconnect=clients.disconnect, refresh_interval_s=60,
                       resolver=ServerResolver(loopback_dns.address, lifetime_s=0.3))
    loopback_dns.set(NAME, ["127.0.27.1"])

    async def scenario() -> int:
        await pool.check()
        loopback_dns.stop()  # the DNS server is gone: no answer at all
        return await pool.check()

    assert asyncio.run(scenario()) == 1
    assert [replica.address for replica in pool.replicas] == ["127.0.27.1:8001"]
    assert clients.closed == []


def test_the_loopback_dns_server_answers_like_an_authoritative_one(loopback_dns):
    """The stand-in itself: NXDOMAIN for unknown names, no data for a missing record type."""
    import dns.message
    import dns.query
    import dns.rcode

    loopback_dns.set(NAME, ["127.0.27.1"])
    host, port = loopback_dns.address.rsplit(":", 1)

    def ask(name: str, rdtype: str) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype), host, port=int(port),
                             timeout=2)

    assert ask(NAME, "A").answer[0].to_text() == f"{NAME}. 0 IN A 127.0.27.1"
    nodata = ask(NAME, "AAAA")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert ask("other.hetserve.test", "A").rcode() == dns.rcode.NXDOMAIN
