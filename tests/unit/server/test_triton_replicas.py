"""Triton replicas: the gRPC targets the gateway takes, round-robin over the replicas that are
up, a replica out of the rotation when it fails and back when a probe finds it ready, DNS
targets resolved to every address (which failures send a call elsewhere:
``test_triton_backend``)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hetgateway.triton_backend import TritonBackend
from hetgateway.triton_replicas import (
    ReplicaPool,
    ReplicaTarget,
    TargetError,
    join_host_port,
    parse_target,
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:8001", ReplicaTarget(addresses=("127.0.0.1:8001",))),
        ("triton:8001", ReplicaTarget(addresses=("triton:8001",))),
        ("ipv4:127.0.0.2:8001,127.0.0.3:8001",
         ReplicaTarget(addresses=("127.0.0.2:8001", "127.0.0.3:8001"))),
        ("ipv4:127.0.0.2:9001, 127.0.0.3:9002",
         ReplicaTarget(addresses=("127.0.0.2:9001", "127.0.0.3:9002"))),
        ("ipv6:[::1]:8001,[::2]:8001", ReplicaTarget(addresses=("[::1]:8001", "[::2]:8001"))),
        ("dns:///triton-headless.ml.svc.cluster.local:8001",
         ReplicaTarget(dns_name="triton-headless.ml.svc.cluster.local", port=8001)),
        ("dns://10.0.0.10:53/triton:9001",
         ReplicaTarget(dns_name="triton", port=9001, dns_server="10.0.0.10:53")),
        ("dns://10.0.0.10/triton", ReplicaTarget(dns_name="triton", dns_server="10.0.0.10:53")),
        ("dns://[::1]:5353/triton:9001",
         ReplicaTarget(dns_name="triton", port=9001, dns_server="[::1]:5353")),
        ("dns:triton", ReplicaTarget(dns_name="triton", port=8001)),
        ("unix:/run/triton.sock", ReplicaTarget(addresses=("unix:/run/triton.sock",))),
    ],
)
def test_the_gateway_takes_any_grpc_target(target: str, expected: ReplicaTarget) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize(
    "target", ["", "ipv4:", "ipv4:127.0.0.2", "127.0.0.1", "host:port", "host:70000", ":8001",
               "dns://10.0.0.10:port/triton:8001"]
)
def test_a_target_without_a_usable_host_and_port_is_refused(target: str) -> None:
    with pytest.raises(TargetError):
        parse_target(target)


def test_the_backend_refuses_a_bad_address_when_built() -> None:
    with pytest.raises(ValueError, match="names no port"):
        TritonBackend("ipv4:127.0.0.2", control_timeout_s=1)


def test_ipv6_hosts_are_bracketed() -> None:
    assert join_host_port("::1", 8001) == "[::1]:8001"
    assert join_host_port("10.0.0.7", 8001) == "10.0.0.7:8001"


class Replicas:
    """Stand-in replica clients: a name per address and a readiness each test sets."""

    def __init__(self) -> None:
        self.ready: dict[str, bool] = {}
        self.closed: list[str] = []

    def connect(self, address: str) -> str:
        self.ready.setdefault(address, True)
        return address

    async def probe(self, client: str) -> bool:
        if self.ready[client] is None:
            raise ConnectionError(client)
        return self.ready[client]

    async def disconnect(self, client: str) -> None:
        self.closed.append(client)

    def pool(self, target: str) -> ReplicaPool[str]:
        return ReplicaPool(parse_target(target), connect=self.connect, probe=self.probe,
                           disconnect=self.disconnect, refresh_interval_s=0.01)


def _picks(pool: ReplicaPool[str], count: int) -> Counter[str]:
    picked = (pool.pick() for _ in range(count))
    return Counter(replica.address for replica in picked if replica is not None)


def test_calls_go_round_robin_over_every_replica() -> None:
    pool = Replicas().pool("ipv4:127.0.0.2:8001,127.0.0.3:8001,127.0.0.4:8001")
    first = [pool.pick().address for _ in range(3)]
    assert sorted(first) == ["127.0.0.2:8001", "127.0.0.3:8001", "127.0.0.4:8001"]
    assert [pool.pick().address for _ in range(3)] == first


def test_a_replica_marked_down_gets_no_calls_until_a_probe_finds_it_ready() -> None:
    replicas = Replicas()
    pool = replicas.pool("ipv4:127.0.0.2:8001,127.0.0.3:8001")
    gone = pool.replicas[0]
    pool.mark_down(gone)
    replicas.ready[gone.address] = False
    assert _picks(pool, 10) == {"127.0.0.3:8001": 10}
    assert asyncio.run(pool.check()) == 1
    assert _picks(pool, 10) == {"127.0.0.3:8001": 10}
    replicas.ready[gone.address] = True
    assert asyncio.run(pool.check()) == 2
    assert _picks(pool, 10) == {"127.0.0.2:8001": 5, "127.0.0.3:8001": 5}


def test_a_probe_that_raises_counts_as_down() -> None:
    replicas = Replicas()
    pool = replicas.pool("ipv4:127.0.0.2:8001,127.0.0.3:8001")
    replicas.ready["127.0.0.2:8001"] = None
    assert asyncio.run(pool.check()) == 1
    assert [r.up for r in pool.replicas] == [False, True]


def test_the_retry_goes_to_another_replica_and_to_none_when_all_were_tried() -> None:
    pool = Replicas().pool("ipv4:127.0.0.2:8001,127.0.0.3:8001")
    first = pool.pick()
    second = pool.pick(exclude=[first.address])
    assert second.address != first.address
    assert pool.pick(exclude=[first.address, second.address]) is None


def test_with_every_replica_down_calls_still_go_out_so_that_triton_says_why() -> None:
    pool = Replicas().pool("ipv4:127.0.0.2:8001,127.0.0.3:8001")
    for replica in pool.replicas:
        pool.mark_down(replica)
    assert pool.up_count == 0
    assert _picks(pool, 4) == {"127.0.0.2:8001": 2, "127.0.0.3:8001": 2}


def test_a_dns_target_has_a_replica_per_address_and_follows_the_name() -> None:
    replicas = Replicas()
    pool = replicas.pool("dns:///localhost:18001")

    async def scenario() -> None:
        assert pool.replicas == ()
        await pool.start()  # resolves before returning: the first call has somewhere to go
        addresses = {replica.address for replica in pool.replicas}
        assert "127.0.0.1:18001" in addresses
        assert all(address.endswith(":18001") for address in addresses)
        await pool.close()

    asyncio.run(scenario())
    assert "127.0.0.1:18001" in replicas.closed


def test_the_background_loop_brings_a_replica_back_by_itself() -> None:
    replicas = Replicas()
    pool = replicas.pool("ipv4:127.0.0.2:8001,127.0.0.3:8001")

    async def scenario() -> None:
        await pool.start()
        gone = pool.replicas[0]
        pool.mark_down(gone)
        await asyncio.sleep(0.1)
        assert gone.up
        await pool.close()

    asyncio.run(scenario())


class Names:
    """A resolver whose answer the test sets."""

    def __init__(self, *addresses: str) -> None:
        self.answer = addresses

    async def addresses(self, name: str, port: int) -> tuple[str, ...]:
        return tuple(f"{address}:{port}" for address in self.answer)


def _dns_pool(replicas: Replicas, names: Names, **options: float) -> ReplicaPool[str]:
    return ReplicaPool(parse_target("dns:///replicas.hetserve.test:8001"),
                       connect=replicas.connect, probe=replicas.probe,
                       disconnect=replicas.disconnect, refresh_interval_s=60, resolver=names,
                       **options)


def test_a_replica_that_leaves_dns_gets_no_new_calls_and_closes_once_its_calls_end() -> None:
    replicas, names = Replicas(), Names("127.0.27.1", "127.0.27.2")
    pool = _dns_pool(replicas, names)

    async def scenario() -> None:
        await pool.check()
        leaving = pool.pick()
        assert leaving.address == "127.0.27.1:8001"
        with pool.lease(leaving) as client:  # a call in flight on it
            names.answer = ("127.0.27.2",)
            await pool.check()
            assert [r.address for r in pool.replicas] == ["127.0.27.2:8001"]
            assert _picks(pool, 4) == {"127.0.27.2:8001": 4}
            await asyncio.sleep(0.05)
            assert replicas.closed == [] and pool.leaving == (leaving,)
            assert client == "127.0.27.1:8001"
        await asyncio.sleep(0.05)  # the call ended: the client closes now
        assert replicas.closed == ["127.0.27.1:8001"] and pool.leaving == ()
        await pool.close()

    asyncio.run(scenario())


def test_a_leaving_replica_whose_calls_outlast_the_bound_is_closed_under_them() -> None:
    replicas, names = Replicas(), Names("127.0.27.1", "127.0.27.2")
    pool = _dns_pool(replicas, names, release_timeout_s=0.1)

    async def scenario() -> None:
        await pool.check()
        stuck = pool.pick()
        with pool.lease(stuck):
            names.answer = ("127.0.27.2",)
            await pool.check()
            await asyncio.sleep(0.3)
            assert replicas.closed == ["127.0.27.1:8001"]  # the call gets CANCELLED (retried)
        assert stuck.calls == 0
        await pool.close()

    asyncio.run(scenario())


def test_closing_the_pool_closes_the_replicas_still_finishing_calls() -> None:
    replicas, names = Replicas(), Names("127.0.27.1", "127.0.27.2")
    pool = _dns_pool(replicas, names)

    async def scenario() -> None:
        await pool.check()
        with pool.lease(pool.pick()):
            names.answer = ("127.0.27.2",)
            await pool.check()
            await pool.close()
        assert sorted(replicas.closed) == ["127.0.27.1:8001", "127.0.27.2:8001"]

    asyncio.run(scenario())


def test_a_probe_that_began_before_a_call_marked_the_replica_down_does_not_bring_it_back():
    """A Triton shutting down still answers a probe sent a moment before its signal; the
    inference that then failed on it is newer news, and the replica stays out."""
    replicas = Replicas()
    pool = replicas.pool("ipv4:127.0.0.2:8001,127.0.0.3:8001")
    leaving = pool.replicas[0]
    probing = asyncio.Event()
    answer = asyncio.Event()

    async def slow_probe(client: str) -> bool:
        if client == leaving.address:
            probing.set()
            await answer.wait()
        return True

    pool.probe = slow_probe

    async def scenario() -> None:
        check = asyncio.create_task(pool.check())
        await probing.wait()
        pool.mark_down(leaving)  # a call failed on it meanwhile
        answer.set()
        assert await check == 1
        assert not leaving.up
        assert await pool.check() == 2  # a probe that starts after the mark: ready again

    asyncio.run(scenario())
