"""Triton replicas behind one gRPC target: which addresses, which of them are up, whose turn.

The gateway's Triton address is any gRPC target:

- ``host:port``: one replica (as before);
- ``ipv4:127.0.0.2:8001,127.0.0.3:8001`` (or ``ipv6:[::1]:8001,...``): a static list;
- ``dns:///triton-headless.NS.svc.cluster.local:8001``: every address the name resolves to,
  resolved again every ``refresh_interval_s`` (a Kubernetes headless Service answers with one
  A record per ready pod, so replicas join and leave as pods do).

``tritonclient.grpc.aio`` hands its URL to ``grpc.aio.insecure_channel`` unchanged, so one
channel over such a target with the ``round_robin`` load-balancing policy would spread calls
too; but a single channel hides which replica served a call (no per-replica metric, no count
of replicas up) and a retry may land on the same dead subchannel. So the pool resolves the
target itself and holds one channel per replica.

Round-robin runs over the replicas that are up. A replica goes down when a call to it fails
because it is gone (``mark_down``) or a health probe finds it not ready; the background loop
(``start``) probes every replica each ``refresh_interval_s`` and takes one back as soon as it
is ready again (a probe that was already running when a call marked the replica down does not
take it back: the call's news is newer). When every replica is down, ``pick`` still hands one
out, so the caller gets Triton's own error instead of a guess.

Every call holds its replica for as long as it runs (``lease``). A replica whose address
leaves the DNS answer gets no new calls at once, but keeps its channel until its calls in
flight end (at most ``release_timeout_s``; calls still running then are cancelled), so a
replica scaled away never has a call cut under it by the gateway.

Typical usage::

    pool = ReplicaPool(parse_target("ipv4:127.0.0.2:8001,127.0.0.3:8001"), connect=client_for)
    await pool.start()                 # inside the event loop: health and DNS in the background
    replica = pool.pick(exclude=set())
    with pool.lease(replica) as client:
        ...                            # the call; on a gone replica: pool.mark_down(replica)
    await pool.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from hetgateway.background_task import cancel_and_wait
from hetgateway.dns_resolution import (
    DNS_PORT,
    DnsResolver,
    ResolutionError,
    dns_resolver,
    join_host_port,
    split_host_port,
)

DNS_SCHEME = "dns:"
IPV4_SCHEME = "ipv4:"
IPV6_SCHEME = "ipv6:"
UNIX_SCHEME = "unix:"
DEFAULT_TRITON_GRPC_PORT = 8001
DEFAULT_REFRESH_INTERVAL_S = 1.0
DEFAULT_RELEASE_TIMEOUT_S = 10.0

_LOG = logging.getLogger(__name__)

ClientT = TypeVar("ClientT")


class TargetError(ValueError):
    """A Triton address that is not a gRPC target the gateway understands."""


@dataclass(frozen=True)
class ReplicaTarget:
    """A parsed target: fixed ``addresses`` (``host:port``), or a DNS ``name`` and ``port``
    whose A/AAAA records are the replicas, asked of ``dns_server`` (``host:port``, the
    target's authority) or, None, of the system's resolver."""

    addresses: tuple[str, ...] = ()
    dns_name: str | None = None
    port: int = DEFAULT_TRITON_GRPC_PORT
    dns_server: str | None = None

    @property
    def dynamic(self) -> bool:
        """Whether the replicas come from DNS (and are resolved again and again)."""
        return self.dns_name is not None


def parse_target(target: str) -> ReplicaTarget:
    """Parse a gRPC target (``host:port``, ``ipv4:a:p,b:p``, ``ipv6:[a]:p,...``,
    ``dns:[//authority/]host[:port]``, ``unix:path``). A ``dns:`` authority names the DNS
    server to ask (``dns://10.0.0.10:53/triton:8001``); without one the system resolves."""
    target = target.strip()
    if not target:
        raise TargetError("empty Triton address")
    if target.startswith((IPV4_SCHEME, IPV6_SCHEME)):
        scheme, _, rest = target.partition(":")
        addresses = tuple(part.strip() for part in rest.split(",") if part.strip())
        if not addresses:
            raise TargetError(f"{target!r} lists no address")
        for address in addresses:
            _split_host_port(address, default_port=None)
        return ReplicaTarget(addresses=addresses)
    if target.startswith(DNS_SCHEME):
        rest, server = target[len(DNS_SCHEME):], None
        if rest.startswith("//"):  # dns://[authority]/host:port
            authority, _, rest = rest[2:].partition("/")
            if authority:
                host, port = _split_host_port(authority, default_port=DNS_PORT)
                server = join_host_port(host, port)
        host, port = _split_host_port(rest, default_port=DEFAULT_TRITON_GRPC_PORT)
        return ReplicaTarget(dns_name=host, port=port, dns_server=server)
    if target.startswith(UNIX_SCHEME):
        return ReplicaTarget(addresses=(target,))
    _split_host_port(target, default_port=None)
    return ReplicaTarget(addresses=(target,))


def _split_host_port(address: str, *, default_port: int | None) -> tuple[str, int]:
    try:
        return split_host_port(address, default_port=default_port)
    except ValueError as exc:
        raise TargetError(str(exc)) from exc


@dataclass(eq=False)
class Replica(Generic[ClientT]):
    """One Triton replica: its address, its client, whether it is taken as up, and the calls
    holding its client now."""

    address: str
    client: ClientT
    up: bool = True
    calls: int = 0
    """Calls in flight on the client (leases held)."""
    downs: int = 0
    """How often a call marked it down (a probe that started before the last one is stale)."""
    leaving: bool = False
    """It left the target: no new calls; its client closes when ``calls`` reaches 0."""
    _idle: asyncio.Event | None = field(default=None, repr=False)


@dataclass
class ReplicaPool(Generic[ClientT]):
    """The replicas of one target, round-robin over those up (see the module docstring).

    ``connect(address)`` makes a client for a new replica; ``probe(client)`` says whether that
    replica is ready (False or an exception: down); ``disconnect(client)`` closes one that left,
    once its calls in flight have ended or ``release_timeout_s`` has passed. A DNS target is
    resolved by ``resolver`` (default: the one its authority names, ``dns_resolver``).
    """

    target: ReplicaTarget
    connect: Callable[[str], ClientT]
    probe: Callable[[ClientT], Awaitable[bool]]
    disconnect: Callable[[ClientT], Awaitable[None]]
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    release_timeout_s: float = DEFAULT_RELEASE_TIMEOUT_S
    resolver: DnsResolver | None = None
    _replicas: dict[str, Replica[ClientT]] = field(default_factory=dict, init=False)
    _order: tuple[Replica[ClientT], ...] = field(default=(), init=False)
    _turn: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _leaving: dict[Replica[ClientT], asyncio.Task[None]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.target.dynamic and self.resolver is None:
            self.resolver = dns_resolver(self.target.dns_server)
        self._set_addresses(self.target.addresses)

    @property
    def replicas(self) -> tuple[Replica[ClientT], ...]:
        """Every replica known now, by address (not those that left and still finish calls)."""
        return self._order

    @property
    def leaving(self) -> tuple[Replica[ClientT], ...]:
        """Replicas that left the target and still have calls in flight."""
        return tuple(self._leaving)

    @property
    def up_count(self) -> int:
        """How many replicas are taken as up."""
        return sum(1 for replica in self._replicas.values() if replica.up)

    def pick(self, *, exclude: Collection[str] = ()) -> Replica[ClientT] | None:
        """The next replica in round-robin order among those up and not in ``exclude``; when
        none is up, the next one not excluded; None when every replica is excluded."""
        order = self._order
        count = len(order)
        for up_only in (True, False):
            for step in range(count):
                replica = order[(self._turn + step) % count]
                if replica.address in exclude or (up_only and not replica.up):
                    continue
                self._turn = (self._turn + step + 1) % count
                return replica
        return None

    @contextlib.contextmanager
    def lease(self, replica: Replica[ClientT]) -> Iterator[ClientT]:
        """Hold ``replica``'s client for one call (take it right after ``pick``, with no await
        between): a replica that leaves the target meanwhile keeps its client open until the
        last call holding it ends."""
        replica.calls += 1
        try:
            yield replica.client
        finally:
            replica.calls -= 1
            if replica.calls == 0 and replica._idle is not None:
                replica._idle.set()

    def mark_down(self, replica: Replica[ClientT]) -> None:
        """Take ``replica`` out of the rotation until a probe that starts after this finds it
        ready again."""
        if replica.up and not replica.leaving:
            _LOG.warning("Triton replica %s is down; its calls go elsewhere", replica.address)
        replica.up = False
        replica.downs += 1

    async def check(self) -> int:
        """Resolve the target again (DNS targets) and probe every replica; replicas up."""
        if self.target.dynamic:
            await self._refresh_addresses()
        replicas = self.replicas
        downs = [replica.downs for replica in replicas]
        states = await asyncio.gather(
            *(self._probe(replica.client) for replica in replicas)
        )
        for replica, ready, downs_before in zip(replicas, states, downs, strict=True):
            if replica.downs != downs_before:
                continue  # a call marked it down while the probe ran: the probe is older news
            if ready and not replica.up:
                _LOG.info("Triton replica %s is ready; back in the rotation", replica.address)
            replica.up = ready
        return self.up_count

    async def start(self) -> None:
        """Start the background loop (resolve, probe, sleep) once; a DNS target is resolved
        before this returns, so the first call has replicas to go to."""
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self.target.dynamic and not self._replicas:
            await self._refresh_addresses()

    async def close(self) -> None:
        """Stop the background loop and close every client, those still finishing calls too."""
        await cancel_and_wait(self._task)
        self._task = None
        for task in self._leaving.values():
            task.cancel()
        leaving, self._leaving = list(self._leaving), {}
        replicas, self._replicas, self._order = self._order, {}, ()
        for replica in (*replicas, *leaving):
            await self.disconnect(replica.client)

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a failed resolution or probe must not end the loop
                _LOG.exception("checking Triton replicas failed")
            await asyncio.sleep(self.refresh_interval_s)

    async def _probe(self, client: ClientT) -> bool:
        try:
            return bool(await self.probe(client))
        except Exception:
            return False

    async def _refresh_addresses(self) -> None:
        assert self.target.dns_name is not None and self.resolver is not None
        try:
            addresses = await self.resolver.addresses(self.target.dns_name, self.target.port)
        except ResolutionError as exc:  # keep the replicas known until the name resolves again
            _LOG.warning("%s", exc)
            return
        for gone in set(self._replicas) - set(addresses):
            replica = self._replicas.pop(gone, None)  # None: a concurrent check took it
            if replica is not None:
                self._order = tuple(r for r in self._order if r is not replica)
                self._leave(replica)
        self._set_addresses(addresses)

    def _leave(self, replica: Replica[ClientT]) -> None:
        """``replica`` left the DNS answer: no new calls; closed once its calls end."""
        replica.leaving = True
        replica._idle = asyncio.Event()
        if replica.calls == 0:
            replica._idle.set()
        _LOG.info("Triton replica %s left %s (%d calls in flight)", replica.address,
                  self.target.dns_name, replica.calls)
        task = asyncio.get_running_loop().create_task(self._release(replica))
        self._leaving[replica] = task

    async def _release(self, replica: Replica[ClientT]) -> None:
        """Close ``replica``'s client once idle, or after ``release_timeout_s``."""
        assert replica._idle is not None
        try:
            await asyncio.wait_for(replica._idle.wait(), self.release_timeout_s)
        except TimeoutError:
            _LOG.warning("Triton replica %s left with %d calls still in flight after %.1f s; "
                         "closing it cancels them", replica.address, replica.calls,
                         self.release_timeout_s)
        self._leaving.pop(replica, None)
        await self.disconnect(replica.client)

    def _set_addresses(self, addresses: Collection[str]) -> None:
        new = [a for a in addresses if a not in self._replicas]
        for address in new:
            self._replicas[address] = Replica(address, self.connect(address))
        if new:
            self._order = tuple(self._replicas[a] for a in sorted(self._replicas))
