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
is ready again. When every replica is down, ``pick`` still hands one out, so the caller gets
Triton's own error instead of a guess.

Typical usage::

    pool = ReplicaPool(parse_target("ipv4:127.0.0.2:8001,127.0.0.3:8001"), connect=client_for)
    await pool.start()                 # inside the event loop: health and DNS in the background
    replica = pool.pick(exclude=set())
    pool.mark_down(replica)
    await pool.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

DNS_SCHEME = "dns:"
IPV4_SCHEME = "ipv4:"
IPV6_SCHEME = "ipv6:"
UNIX_SCHEME = "unix:"
DEFAULT_TRITON_GRPC_PORT = 8001
DEFAULT_REFRESH_INTERVAL_S = 1.0

_LOG = logging.getLogger(__name__)

ClientT = TypeVar("ClientT")


class TargetError(ValueError):
    """A Triton address that is not a gRPC target the gateway understands."""


@dataclass(frozen=True)
class ReplicaTarget:
    """A parsed target: fixed ``addresses`` (``host:port``), or a DNS ``name`` and ``port``
    whose A/AAAA records are the replicas."""

    addresses: tuple[str, ...] = ()
    dns_name: str | None = None
    port: int = DEFAULT_TRITON_GRPC_PORT

    @property
    def dynamic(self) -> bool:
        """Whether the replicas come from DNS (and are resolved again and again)."""
        return self.dns_name is not None


def parse_target(target: str) -> ReplicaTarget:
    """Parse a gRPC target (``host:port``, ``ipv4:a:p,b:p``, ``ipv6:[a]:p,...``,
    ``dns:[//authority/]host[:port]``, ``unix:path``)."""
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
        rest = target[len(DNS_SCHEME):]
        if rest.startswith("//"):  # dns://[authority]/host:port; the authority is ignored
            _, _, rest = rest[2:].partition("/")
        host, port = _split_host_port(rest, default_port=DEFAULT_TRITON_GRPC_PORT)
        return ReplicaTarget(dns_name=host, port=port)
    if target.startswith(UNIX_SCHEME):
        return ReplicaTarget(addresses=(target,))
    _split_host_port(target, default_port=None)
    return ReplicaTarget(addresses=(target,))


def _split_host_port(address: str, *, default_port: int | None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ``default_port`` when none is given
    (None: a port is required)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "")
    if not host:
        raise TargetError(f"{address!r} names no host")
    if not port_text:
        if default_port is None:
            raise TargetError(f"{address!r} names no port (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"{address!r}: {port_text!r} is not a port")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(name: str, port: int) -> tuple[str, ...]:
    """Every address ``name`` resolves to, as sorted ``host:port`` strings (TCP, v4 and v6)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return tuple(sorted({join_host_port(str(info[4][0]), port) for info in infos}))


@dataclass
class Replica(Generic[ClientT]):
    """One Triton replica: its address, its client, and whether it is taken as up."""

    address: str
    client: ClientT
    up: bool = True


@dataclass
class ReplicaPool(Generic[ClientT]):
    """The replicas of one target, round-robin over those up (see the module docstring).

    ``connect(address)`` makes a client for a new replica; ``probe(client)`` says whether that
    replica is ready (False or an exception: down); ``disconnect(client)`` closes one that left.
    """

    target: ReplicaTarget
    connect: Callable[[str], ClientT]
    probe: Callable[[ClientT], Awaitable[bool]]
    disconnect: Callable[[ClientT], Awaitable[None]]
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    _replicas: dict[str, Replica[ClientT]] = field(default_factory=dict, init=False)
    _order: tuple[Replica[ClientT], ...] = field(default=(), init=False)
    _turn: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._set_addresses(self.target.addresses)

    @property
    def replicas(self) -> tuple[Replica[ClientT], ...]:
        """Every replica known now, by address."""
        return self._order

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

    def mark_down(self, replica: Replica[ClientT]) -> None:
        """Take ``replica`` out of the rotation until a probe finds it ready again."""
        if replica.up:
            _LOG.warning("Triton replica %s is down; its calls go elsewhere", replica.address)
        replica.up = False

    async def check(self) -> int:
        """Resolve the target again (DNS targets) and probe every replica; replicas up."""
        if self.target.dynamic:
            await self._refresh_addresses()
        replicas = self.replicas
        states = await asyncio.gather(
            *(self._probe(replica.client) for replica in replicas)
        )
        for replica, ready in zip(replicas, states, strict=True):
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
        """Stop the background loop and close every client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        replicas, self._replicas, self._order = self._order, {}, ()
        for replica in replicas:
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
        assert self.target.dns_name is not None
        try:
            addresses = await resolve(self.target.dns_name, self.target.port)
        except OSError as exc:  # keep the replicas known until the name resolves again
            _LOG.warning("cannot resolve %s: %s", self.target.dns_name, exc)
            return
        for gone in set(self._replicas) - set(addresses):
            replica = self._replicas.pop(gone, None)  # None: a concurrent check took it
            if replica is not None:
                self._order = tuple(r for r in self._order if r is not replica)
                _LOG.info("Triton replica %s left %s", gone, self.target.dns_name)
                await self.disconnect(replica.client)
        self._set_addresses(addresses)

    def _set_addresses(self, addresses: Collection[str]) -> None:
        new = [a for a in addresses if a not in self._replicas]
        for address in new:
            self._replicas[address] = Replica(address, self.connect(address))
        if new:
            self._order = tuple(self._replicas[a] for a in sorted(self._replicas))
