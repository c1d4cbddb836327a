"""A real OCI registry for the container tests: Debian's ``docker-registry`` (the CNCF
distribution registry, 2.8) run on loopback, on a free port, storing into a directory of its
own, with a configuration file written next to it (never the package's /etc one), and always
stopped.

The binary is the one scripts/container-deps.sh unpacks into the virtualenv (the package itself
is not installed: it would add a system service listening on every address), or one on PATH.
It speaks plain HTTP on loopback: clients push and pull with ``--tls-verify=false``.

Typical usage::

    with LocalRegistry(work_dir) as registry:
        registry.address                        # 127.0.0.1:<port>
        registry.catalog()                      # ["hetserve/gateway", ...]
        registry.manifest_digest("hetserve/gateway", "0.1.0")   # sha256:...
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# What a pull asks for: the image manifest types podman pushes (OCI, Docker v2 schema 2).
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {address}
  secret: {secret}
health:
  storagedriver:
    enabled: false
"""


class RegistryError(RuntimeError):
    """The registry did not start; the message holds its log's tail."""


def registry_binary() -> Path | None:
    """docker-registry from the virtualenv (scripts/container-deps.sh), else from PATH."""
    local = Path(sys.executable).with_name("docker-registry")
    if local.is_file():
        return local
    found = shutil.which("docker-registry")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class LocalRegistry:
    """docker-registry serving ``work_dir/storage`` on a free loopback port."""

    work_dir: Path
    binary: Path | None = None
    port: int = field(default_factory=_free_port)
    _process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        binary = self.binary or registry_binary()
        if binary is None:
            raise RegistryError("docker-registry not found: run scripts/container-deps.sh")
        config = self.work_dir / "config.yml"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(CONFIG.format(root=self.work_dir / "storage", address=self.address,
                                        secret=secrets.token_hex(16)))
        log = (self.work_dir / "registry.log").open("wb")
        self._process = subprocess.Popen([str(binary), "serve", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/v2/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = (self.work_dir / "registry.log").read_text()[-2000:]
        self.stop()
        raise RegistryError(f"docker-registry did not answer on {self.address}:\n{tail}")

    def stop(self) -> None:
        """Stop the registry (idempotent)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def catalog(self) -> list[str]:
        """The repositories the registry holds (its ``/v2/_catalog``)."""
        answer = httpx.get(f"{self.url}/v2/_catalog", timeout=10)
        answer.raise_for_status()
        return answer.json()["repositories"]

    def manifest_digest(self, repository: str, reference: str) -> str:
        """The digest the registry serves for ``repository:reference`` (a tag or a digest)."""
        answer = httpx.head(f"{self.url}/v2/{repository}/manifests/{reference}",
                            headers={"Accept": MANIFEST_TYPES}, timeout=10)
        answer.raise_for_status()
        return answer.headers["Docker-Content-Digest"]
