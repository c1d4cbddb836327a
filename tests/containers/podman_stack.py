"""Run the services of a merged compose file with podman on a machine without Docker.

Each service becomes one ``podman run`` with the options its compose entry gives (image,
command, environment, bind and named volumes, ``read_only``, ``tmpfs``, ``user``,
``shm_size``, ``ulimits`` capped at the host's hard limits), started in ``depends_on`` order
and waited for as its condition says (``service_healthy``: the service's own health-check
command, run in the container with ``podman exec``, until it passes). Keys this module does
not translate are refused (``ComposeError``), so a new compose option cannot be skipped
silently; ``build``, ``networks``, ``expose``, ``ports``, ``profiles`` and ``restart`` are
the ones handled elsewhere or on purpose not at all (no restarts: a crash should fail the
test).

These machines give containers no network of their own (``--network=none`` or ``host``), so
the stack shares the host's network, and the compose networks become an address plan
(``HostNetwork``): every container port is moved to a free port on loopback, and the service
names resolve to 127.0.0.1 (``--add-host``). The one rewrite rule (``HostNetwork.rewrite``)
is applied to commands, environment values, health checks and read-only bind-mounted files
(the Prometheus config): ``<service>:<port>`` becomes ``<service>:<host port>``, and in a
service's own strings ``127.0.0.1:<port>``, ``=:<port>``, ``-port=<port>`` and a ``*PORT``
variable equal to ``<port>`` take its host port; ``0.0.0.0`` becomes ``127.0.0.1``.
``LOOPBACK_ARGUMENTS`` adds the bind-address flags of programs that listen on every address
unless told otherwise (Triton).

Every container and named volume carries the label ``hetserve.test-stack=<project>``;
``down`` removes them all, and ``leftovers`` lists what carries the label still.

Typical usage::

    stack = PodmanStack(config, project="hetserve-test-1234", root=ROOT, work_dir=tmp)
    stack.up(["triton", "gateway"])
    stack.url("gateway", 8080)       # http://127.0.0.1:<free port>
    stack.down()
"""

from __future__ import annotations

import json
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compose_files import ComposeError, container_ports

PODMAN = ("podman", "--runtime", "runc")
# What these machines need (crun fails on cgroups and rlimits here), on every container.
BASE_ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")
LABEL = "hetserve.test-stack"
LOOPBACK = "127.0.0.1"
TRANSLATED_KEYS = frozenset({
    "image", "command", "environment", "volumes", "read_only", "tmpfs", "user", "shm_size",
    "ulimits", "healthcheck", "depends_on",
})
HANDLED_ELSEWHERE = frozenset({"build", "networks", "expose", "ports", "profiles", "restart"})
LOOPBACK_ARGUMENTS = {
    "tritonserver": [f"--http-address={LOOPBACK}", f"--grpc-address={LOOPBACK}",
                     f"--metrics-address={LOOPBACK}"],
    "tritonserver-cpu": [f"--http-address={LOOPBACK}", f"--grpc-address={LOOPBACK}",
                         f"--metrics-address={LOOPBACK}"],
}
HEALTH_POLL_S = 1.0
STOP_TIMEOUT_S = 10


class StackError(RuntimeError):
    """A container failed to start or to become healthy; the message holds its log's tail."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class HostNetwork:
    """Container ports moved to free loopback ports: ``ports[service][container port]``."""

    ports: Mapping[str, Mapping[int, int]]

    @classmethod
    def plan(cls, services: Mapping[str, Any]) -> HostNetwork:
        return cls({name: {port: free_port() for port in container_ports(service)}
                    for name, service in services.items()})

    def rewrite(self, text: str, own: str) -> str:
        """``text`` of service ``own`` with every address moved to the host plan."""
        for name, ports in self.ports.items():
            for port, host_port in ports.items():
                text = re.sub(rf"\b{re.escape(name)}:{port}\b", f"{name}:{host_port}", text)
        for port, host_port in self.ports.get(own, {}).items():
            text = re.sub(rf"\b(127\.0\.0\.1|localhost):{port}\b", f"{LOOPBACK}:{host_port}", text)
            text = re.sub(rf"=:{port}\b", f"={LOOPBACK}:{host_port}", text)
            text = re.sub(rf"(-port)={port}\b", rf"\g<1>={host_port}", text)
        return text.replace("0.0.0.0", LOOPBACK)

    def rewrite_environment(self, environment: Mapping[str, Any], own: str) -> dict[str, str]:
        own_ports = {str(port): str(host) for port, host in self.ports.get(own, {}).items()}
        rewritten = {}
        for key, value in environment.items():
            value = "" if value is None else str(value)
            if key.upper().endswith("PORT") and value in own_ports:
                value = own_ports[value]
            rewritten[key] = self.rewrite(value, own)
        return rewritten


@dataclass
class PodmanStack:
    """The services of ``config`` run with podman on the host network (see module docstring)."""

    config: Mapping[str, Any]
    project: str
    root: Path
    work_dir: Path
    images: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 300.0
    network: HostNetwork | None = None
    started: list[str] = field(default_factory=list)
    podman: tuple[str, ...] = PODMAN
    """The podman command: ``PODMAN``, or with ``--root``/``--runroot`` for another image store."""

    def __post_init__(self) -> None:
        if self.network is None:
            self.network = HostNetwork.plan(self.services)

    @property
    def services(self) -> Mapping[str, Any]:
        return self.config["services"]

    def container(self, service: str) -> str:
        return f"{self.project}-{service}"

    def url(self, service: str, container_port: int) -> str:
        return f"http://{LOOPBACK}:{self.network.ports[service][container_port]}"

    def image(self, service: str) -> str:
        image = self.services[service]["image"]
        return self.images.get(image, image)

    def run_arguments(self, service: str, *, detach: bool = True) -> list[str]:
        """The ``podman run`` command line of ``service`` (runs nothing; named volumes are
        created by ``up``)."""
        spec = self.services[service]
        unknown = set(spec) - TRANSLATED_KEYS - HANDLED_ELSEWHERE
        if unknown:
            raise ComposeError(f"{service}: no podman translation for {sorted(unknown)}")
        args = [*self.podman, "run", "--detach" if detach else "--rm", "--network=host",
                "--name", self.container(service), "--label", f"{LABEL}={self.project}"]
        args += [f"--add-host={name}:{LOOPBACK}" for name in self.services]
        args += [f"--ulimit={limit}" for limit in (*BASE_ULIMITS, *_ulimits(spec))]
        if spec.get("read_only"):
            args.append("--read-only")
        args += [f"--tmpfs={path}" for path in _as_list(spec.get("tmpfs"))]
        if "user" in spec:
            args.append(f"--user={spec['user']}")
        if "shm_size" in spec:
            args.append(f"--shm-size={_size(spec['shm_size'])}")
        environment = self.network.rewrite_environment(spec.get("environment", {}), service)
        args += [f"--env={key}={value}" for key, value in environment.items()]
        args += [f"--volume={volume}" for volume in self._volumes(service, spec)]
        args.append(self.image(service))
        args += self.command(service)
        return args

    def command(self, service: str) -> list[str]:
        command = [self.network.rewrite(str(part), service)
                   for part in _as_list(self.services[service].get("command"))]
        if command and command[0] in LOOPBACK_ARGUMENTS:
            command += LOOPBACK_ARGUMENTS[command[0]]
        return command

    def health_command(self, service: str) -> list[str] | None:
        """The service's health check as a command to run in its container, if it has one."""
        test = self.services[service].get("healthcheck", {}).get("test")
        if not test:
            return None
        if test[0] == "CMD":
            return [self.network.rewrite(part, service) for part in test[1:]]
        if test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", self.network.rewrite(test[1], service)]
        raise ComposeError(f"{service}: health check {test[0]!r}")

    def up(self, services: Sequence[str]) -> None:
        """Start ``services`` and what they depend on, in order; wait for each condition,
        and for every started service with a health check to pass."""
        for service in _start_order(self.services, services):
            if service not in self.started:
                self._start(service)
        for service in self.started:
            if self.health_command(service):
                self.wait_healthy(service)

    def _start(self, service: str) -> None:
        self._wait_dependencies(service)
        self._create_volumes(service)
        self._podman(self.run_arguments(service)[len(self.podman):])
        self.started.append(service)

    def _create_volumes(self, service: str) -> None:
        """The service's named volumes, labelled so that ``down`` removes them."""
        for volume in self.services[service].get("volumes", []):
            name = self._volume_name(volume) if volume["type"] == "volume" else None
            if name and not self._podman(["volume", "ls", "--quiet", "--filter",
                                          f"name=^{name}$"]):
                self._podman(["volume", "create", "--label", f"{LABEL}={self.project}", name])

    def _volume_name(self, volume: Mapping[str, Any]) -> str:
        return f"{self.project}_{volume['source']}"

    def _wait_dependencies(self, service: str) -> None:
        for dependency, spec in self.services[service].get("depends_on", {}).items():
            if spec.get("condition") == "service_healthy":
                self.wait_healthy(dependency)

    def run_once(self, service: str, *, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """``compose run --rm service``: run it to completion (after what it depends on)."""
        self.up(_start_order(self.services, [service])[:-1])
        self._wait_dependencies(service)
        self._create_volumes(service)
        args = self.run_arguments(service, detach=False)
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)

    def is_healthy(self, service: str) -> bool:
        command = self.health_command(service)
        timeout_s = _seconds(self.services[service]["healthcheck"].get("timeout", "30s"))
        try:
            result = subprocess.run([*self.podman, "exec", self.container(service), *command],
                                    capture_output=True, timeout=timeout_s + 5, check=False)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def wait_healthy(self, service: str) -> None:
        """Poll the health check until it passes, within what Compose would wait (start
        period + retries x interval), at most ``ready_timeout_s``."""
        timeout_s = min(_health_budget_s(self.services[service]), self.ready_timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state(service) != "running":
                raise StackError(f"{service} is {self.state(service)}\n{self.logs(service)}")
            if self.is_healthy(service):
                return
            time.sleep(HEALTH_POLL_S)
        raise StackError(f"{service} not healthy after {timeout_s:.0f} s\n{self.logs(service)}")

    def state(self, service: str) -> str:
        result = subprocess.run([*self.podman, "inspect", "--format", "{{.State.Status}}",
                                 self.container(service)], capture_output=True, text=True,
                                check=False)
        return result.stdout.strip() or "absent"

    def exec(self, service: str, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.podman, "exec", self.container(service), *command],
                              capture_output=True, text=True, timeout=60, check=False)

    def inspect(self, service: str) -> dict[str, Any]:
        return json.loads(self._podman(["inspect", self.container(service)]))[0]

    def logs(self, service: str, tail: int = 60) -> str:
        result = subprocess.run(
            [*self.podman, "logs", "--tail", str(tail), self.container(service)],
            capture_output=True, text=True, check=False)
        return result.stdout + result.stderr

    def down(self) -> None:
        """Stop and remove every container and named volume of the project (idempotent)."""
        for service in reversed(self.started):
            subprocess.run([*self.podman, "stop", "--time", str(STOP_TIMEOUT_S),
                            self.container(service)], capture_output=True, check=False)
        if containers := self._labelled(["ps", "--all"]):
            self._podman(["rm", "--force", *containers])
        if volumes := self._labelled(["volume", "ls"]):
            self._podman(["volume", "rm", "--force", *volumes])
        self.started.clear()

    def leftovers(self) -> list[str]:
        """Containers and volumes of this project that still exist."""
        return self._labelled(["ps", "--all"]) + self._labelled(["volume", "ls"])

    def _labelled(self, listing: list[str]) -> list[str]:
        return self._podman(
            [*listing, "--quiet", "--filter", f"label={LABEL}={self.project}"]).split()

    def _podman(self, args: Sequence[str]) -> str:
        return _podman(args, podman=self.podman)

    def _volumes(self, service: str, spec: Mapping[str, Any]) -> list[str]:
        volumes = []
        for volume in spec.get("volumes", []):
            options = ":ro" if volume.get("read_only") else ""
            if volume["type"] == "bind":
                source = self._bind_source(service, volume)
            elif volume["type"] == "volume":
                source = self._volume_name(volume)
            else:
                raise ComposeError(f"{service}: volume type {volume['type']!r}")
            volumes.append(f"{source}:{volume['target']}{options}")
        return volumes

    def _bind_source(self, service: str, volume: Mapping[str, Any]) -> Path:
        source = (self.root / volume["source"]).resolve()
        if not source.exists() and volume.get("bind", {}).get("create_host_path"):
            source.mkdir(parents=True)
        if source.is_file() and volume.get("read_only"):
            # A config file naming other services' addresses: moved to the host plan.
            copy = self.work_dir / service / source.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(self.network.rewrite(source.read_text(), service))
            copy.chmod(0o644)
            return copy
        return source


def _podman(args: Sequence[str], *, podman: Sequence[str] = PODMAN) -> str:
    result = subprocess.run([*podman, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"podman {' '.join(args[:3])}... failed: {result.stderr.strip()}")
    return result.stdout


def _start_order(services: Mapping[str, Any], wanted: Iterable[str]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dependency in services[name].get("depends_on", {}):
            visit(dependency)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _ulimits(spec: Mapping[str, Any]) -> list[str]:
    """The service's ``ulimits`` as podman writes them, each at most the host's hard limit: a
    container cannot raise a limit its host lacks the privilege for (here: memlock, 8 MiB;
    ``-1`` would fail with "error setting rlimit type 8")."""
    limits = []
    for name, value in spec.get("ulimits", {}).items():
        soft, hard = (value["soft"], value["hard"]) if isinstance(value, dict) else (value, value)
        ceiling = _host_hard_limit(name)
        soft, hard = (_at_most(int(soft), ceiling), _at_most(int(hard), ceiling))
        limits.append(f"{name}={soft}:{hard}")
    return limits


def _host_hard_limit(name: str) -> int:
    """The host's hard limit of ``name`` (``memlock``, ``stack``, ...) in podman's units;
    -1 when unlimited."""
    limit = getattr(resource, f"RLIMIT_{name.upper()}")
    hard = resource.getrlimit(limit)[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


def _at_most(value: int, ceiling: int) -> int:
    if ceiling == -1:
        return value
    return ceiling if value == -1 else min(value, ceiling)


def _size(value: Any) -> str:
    """Compose sizes (``1gb``) as podman writes them (``1g``)."""
    return re.sub(r"(?i)([kmg])b$", r"\1", str(value))


def _seconds(value: Any) -> float:
    """Compose durations (``5s``, ``1m30s``, ``600s``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value))
    return sum(float(number) * units[unit] for number, unit in parts) if parts else float(value)


def _health_budget_s(service: Mapping[str, Any]) -> float:
    """How long Compose would wait for ``service`` to turn healthy (start period + retries)."""
    check = service.get("healthcheck", {})
    return (_seconds(check.get("start_period", "0s"))
            + int(check.get("retries", 3)) * _seconds(check.get("interval", "30s")))
