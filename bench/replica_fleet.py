"""A rolling replacement of DNS-discovered Triton replicas under steady load, on loopback: what
``tests/integration/test_rolling_replacement.py`` asserts and ``bench/rolling_replacement.py``
measures.

- ``ReplicaFleet``: ``hetgateway triton`` replicas, each on a loopback address of its own
  (``127.0.27.N``) and the fleet's common ports (a DNS answer carries addresses, not ports),
  published under one name in a ``LoopbackDns`` and, for a gateway that can only use the
  system's resolver, in a hosts file (``HostsFile``);
- ``SteadyLoad``: clients each sending one-image predictions back to back, every answer
  recorded (status or the exception's name);
- ``replace``: start a replica, publish it, wait until the gateway counts it, then take the old
  one out in either order Kubernetes may give (``DNS_FIRST``: out of DNS, SIGTERM 0.5 s later;
  ``SIGTERM_FIRST``: SIGTERM, out of DNS 1.5 s later: the delays the issue measured with).

Typical usage::

    with LoopbackDns() as dns, ReplicaFleet(Path("model_repo"), workdir, dns) as fleet:
        first, second = fleet.start(), fleet.start()
        fleet.wait_ready(first, second)
        fleet.publish(first, second)
        gateway_url = ...               # a gateway on fleet.target(dns)
        with SteadyLoad(f"{gateway_url}/v1/predict", body, clients=8) as load:
            first = replace(fleet, gateway_url, first, order=SIGTERM_FIRST).new
        assert load.failures() == {}
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import numpy as np
from loopback_dns import LoopbackDns
from loopback_target import png

NAME = "replicas.hetserve.test"
ADDRESSES = tuple(f"127.0.27.{n}" for n in range(1, 9))
"""The loopback addresses replicas take, in turn (Linux routes all of 127.0.0.0/8 to lo)."""
DNS_FIRST = "dns-first"
SIGTERM_FIRST = "sigterm-first"
ORDERS = (DNS_FIRST, SIGTERM_FIRST)
DNS_FIRST_SIGTERM_AFTER_S = 0.5
SIGTERM_FIRST_DNS_AFTER_S = 1.5
READY_BOUND_S = 240.0
COUNTED_BOUND_S = 30.0
EXIT_BOUND_S = 60.0
ANSWER_BOUND_S = 30.0
POLL_S = 0.1
OK = 200


class HostsFile:
    """A hosts file whose lines for one name the fleet rewrites in place (same inode, so a
    bind mount of it over ``/etc/hosts`` in a gateway's private mount namespace sees each
    change; see ``private_hosts_command``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.write_text("127.0.0.1 localhost\n")

    def set(self, name: str, addresses: Sequence[str]) -> None:
        text = "127.0.0.1 localhost\n" + "".join(f"{a} {name}\n" for a in addresses)
        with open(self.path, "r+") as hosts:
            hosts.write(text)
            hosts.truncate()


def private_hosts_command(hosts: HostsFile, command: Sequence[str]) -> list[str]:
    """``command`` run in a private mount namespace where ``hosts`` is ``/etc/hosts`` (needs
    root or CAP_SYS_ADMIN; the machine's own file is not touched)."""
    script = f'mount --bind "{hosts.path}" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *command]


@dataclass
class Replica:
    """One ``hetgateway triton`` process on its own address."""

    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    metrics_port: int

    def ready(self) -> bool:
        try:
            url = f"http://{self.address}:{self.http_port}/v2/health/ready"
            return httpx.get(url, timeout=2.0).status_code == OK
        except httpx.HTTPError:
            return False

    def sigterm(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, *, timeout_s: float = EXIT_BOUND_S) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@dataclass
class ReplicaFleet:
    """Replicas of one model repository, published under ``name`` (see the module docstring).
    ``drain_s`` is each replica's drain on SIGTERM (None: the ``hetgateway`` default);
    ``python`` and ``env`` run another tree's ``hetgateway`` (a baseline)."""

    repository: Path
    workdir: Path
    dns: LoopbackDns
    name: str = NAME
    drain_s: float | None = 0.0
    hosts: HostsFile | None = None
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    addresses: tuple[str, ...] = ADDRESSES
    replicas: list[Replica] = field(default_factory=list)
    published: list[Replica] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = common_free_ports(self.addresses, 3)

    def target(self) -> str:
        """The gateway's Triton address: the name, asked of the fleet's DNS server."""
        return f"dns://{self.dns.address}/{self.name}:{self.grpc_port}"

    def system_target(self) -> str:
        """The same name for the system's resolver (a gateway reading ``self.hosts``)."""
        return f"dns:///{self.name}:{self.grpc_port}"

    def start(self) -> Replica:
        """A new replica on the next address no running replica holds (returns at once)."""
        taken = {r.address for r in self.replicas if r.process.poll() is None}
        address = next(a for a in self.addresses if a not in taken)
        log_path = self.workdir / f"replica-{address}-{len(self.replicas)}.log"
        command = [
            self.python, "-m", "hetgateway.cli", "triton",
            "--model-repository", str(self.repository), "--address", address,
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port), "--repository-poll", "0",
            "--log-level", "warning",
        ]
        env = {**os.environ, **self.env}
        if self.drain_s is not None:
            env["HETSERVE_TRITON_DRAIN_S"] = str(self.drain_s)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        replica = Replica(address, process, log_path, self.http_port, self.metrics_port)
        self.replicas.append(replica)
        return replica

    def wait_ready(self, *replicas: Replica, bound_s: float = READY_BOUND_S) -> None:
        deadline = time.monotonic() + bound_s
        for replica in replicas:
            while not replica.ready():
                if replica.process.poll() is not None:
                    raise RuntimeError(f"replica {replica.address} exited:\n{replica.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {replica.address} not ready in {bound_s} s")
                time.sleep(POLL_S)

    def publish(self, *replicas: Replica) -> None:
        """Add ``replicas`` to the name's records."""
        self.published.extend(r for r in replicas if r not in self.published)
        self._write()

    def unpublish(self, replica: Replica) -> None:
        """Take ``replica`` out of the name's records."""
        self.published.remove(replica)
        self._write()

    def stop(self) -> None:
        """SIGTERM every replica still running, SIGKILL their groups after the bound."""
        for replica in self.replicas:
            replica.sigterm()
        for replica in self.replicas:
            if replica.process.poll() is None:
                try:
                    replica.process.wait(timeout=EXIT_BOUND_S)
                except subprocess.TimeoutExpired:
                    os.killpg(replica.process.pid, signal.SIGKILL)
                    replica.process.wait()

    def __enter__(self) -> ReplicaFleet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _write(self) -> None:
        addresses = [r.address for r in self.published]
        self.dns.set(self.name, addresses)
        if self.hosts is not None:
            self.hosts.set(self.name, addresses)


def common_free_ports(addresses: Sequence[str], count: int) -> tuple[int, ...]:
    """``count`` TCP ports free on every one of ``addresses`` right now."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        if port not in ports and all(_free(address, port) for address in addresses):
            ports.append(port)
    return tuple(ports)


def _free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def one_image_body(image: np.ndarray) -> dict[str, object]:
    """A predict body with one image (uint8 [H, W]) as PNG."""
    return {"inputs": [{"image": base64.b64encode(png(image)).decode()}], "top_k": 1}


@dataclass(frozen=True)
class Answer:
    """One request's outcome: when it ended (monotonic s), its status (or the exception's
    name) and the error code of a non-200 answer."""

    at_s: float
    status: int | str
    code: str | None = None


class SteadyLoad:
    """``clients`` threads POSTing ``body`` to ``url`` back to back until stopped."""

    def __init__(self, url: str, body: dict[str, object], *, clients: int = 8) -> None:
        self.url = url
        self.body = body
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(clients)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ANSWER_BOUND_S * 2)

    def since(self, start_s: float) -> list[Answer]:
        """The answers that ended at or after ``start_s`` (monotonic)."""
        with self._lock:
            return [a for a in self.answers if a.at_s >= start_s]

    def failures(self, answers: Sequence[Answer] | None = None) -> Counter[str]:
        """Non-200 outcomes by ``status code`` (all answers, or ``answers``)."""
        with self._lock:
            chosen = list(self.answers if answers is None else answers)
        return Counter(f"{a.status} {a.code}" if a.code else str(a.status)
                       for a in chosen if a.status != OK)

    def _client(self) -> None:
        with httpx.Client(timeout=ANSWER_BOUND_S) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=self.body)
                    code = None
                    if response.status_code != OK:
                        code = _error_code(response)
                    answer = Answer(time.monotonic(), response.status_code, code)
                except httpx.HTTPError as error:
                    answer = Answer(time.monotonic(), type(error).__name__)
                with self._lock:
                    self.answers.append(answer)


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return response.text[:60]


def gateway_counts(gateway_url: str) -> tuple[int, int]:
    """(replicas ready, replicas known) as the gateway's ``/readyz`` says."""
    answer = httpx.get(f"{gateway_url}/readyz", timeout=10.0).json()
    return int(answer.get("replicas_ready", 0)), int(answer.get("replicas", 0))


def wait_counted(gateway_url: str, replicas: int, *, bound_s: float = COUNTED_BOUND_S) -> None:
    """Until the gateway counts ``replicas`` replicas, all ready."""
    deadline = time.monotonic() + bound_s
    while gateway_counts(gateway_url) != (replicas, replicas):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not count {replicas} replicas in {bound_s} s: "
                               f"{gateway_counts(gateway_url)}")
        time.sleep(POLL_S)


@dataclass(frozen=True)
class Replacement:
    """One replacement: the replica that came in, the one that left (exiting, or gone), the
    order it left in, and when it started (monotonic s)."""

    new: Replica
    old: Replica
    order: str
    started_s: float


def replace(fleet: ReplicaFleet, gateway_url: str, old: Replica, *, order: str) -> Replacement:
    """Start a replica, publish it, wait until the gateway counts it (with ``old`` still
    there), then take ``old`` out in ``order``; returns without waiting for ``old`` to exit."""
    started_s = time.monotonic()
    new = fleet.start()
    fleet.wait_ready(new)
    fleet.publish(new)
    wait_counted(gateway_url, len(fleet.published))
    if order == DNS_FIRST:
        fleet.unpublish(old)
        time.sleep(DNS_FIRST_SIGTERM_AFTER_S)
        old.sigterm()
    elif order == SIGTERM_FIRST:
        old.sigterm()
        time.sleep(SIGTERM_FIRST_DNS_AFTER_S)
        fleet.unpublish(old)
    else:
        raise ValueError(f"order {order!r} is not one of {ORDERS}")
    return Replacement(new, old, order, started_s)


def served_by(replicas: Sequence[Replica]) -> Iterator[tuple[str, int]]:
    """(address, successful inferences) from each running replica's Triton metrics."""
    for replica in replicas:
        if replica.process.poll() is not None:
            continue
        text = httpx.get(f"http://{replica.address}:{replica.metrics_port}/metrics",
                         timeout=5.0).text
        count = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                    if line.startswith("nv_inference_request_success{"))
        yield replica.address, count
