"""Keeps a child process (the embedded Triton) running: restarts it when it dies, with bounded
retries and exponential backoff, and logs every exit and restart.

Typical usage::

    supervisor = ProcessSupervisor(lambda: subprocess.Popen(triton_argv), name="tritonserver")
    supervisor.start()            # first launch (or start(running=p) to adopt a process)
    ...
    supervisor.stop(timeout_s=10) # SIGTERM, then SIGKILL after the timeout; no restart after this

After the k-th consecutive unexpected exit the supervisor waits
``min(initial_backoff_s * backoff_factor ** (k - 1), max_backoff_s)`` and starts the process
again; a run that lasted ``stable_after_s`` or more resets k. After ``max_restarts`` consecutive
failures it gives up (state ``GAVE_UP``) and calls ``on_give_up``. Readiness is not tracked
here: the gateway's ``/readyz`` asks Triton itself, so it is false while Triton is down or
restarting and true again once the new process serves.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

_log = logging.getLogger("hetgateway.supervisor")


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how fast a dead process is started again (see the module docstring)."""

    max_restarts: int = 5
    initial_backoff_s: float = 0.5
    backoff_factor: float = 2.0
    max_backoff_s: float = 10.0
    stable_after_s: float = 60.0

    def backoff_s(self, failure: int) -> float:
        """The wait before the restart that follows the ``failure``-th consecutive exit (>= 1)."""
        backoff_s = self.initial_backoff_s * self.backoff_factor ** (failure - 1)
        return min(backoff_s, self.max_backoff_s)


class SupervisorState(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    RESTARTING = "restarting"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


class ProcessSupervisor:
    """Starts a process with ``launch`` and restarts it per ``policy`` until ``stop``."""

    def __init__(
        self,
        launch: Callable[[], subprocess.Popen],
        *,
        name: str,
        policy: RestartPolicy = RestartPolicy(),
        on_give_up: Callable[[], None] | None = None,
    ) -> None:
        self._launch = launch
        self.name = name
        self.policy = policy
        self._on_give_up = on_give_up
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen | None = None
        self._state = SupervisorState.NOT_STARTED
        self._restarts = 0
        self._watcher: threading.Thread | None = None

    @property
    def state(self) -> SupervisorState:
        return self._state

    @property
    def restarts(self) -> int:
        """Restarts performed since ``start``."""
        return self._restarts

    @property
    def process(self) -> subprocess.Popen | None:
        """The current process (a new object after each restart)."""
        return self._process

    def start(self, *, running: subprocess.Popen | None = None) -> subprocess.Popen:
        """Begin watching ``running`` (a process already launched), or launch one; returns the
        process watched."""
        if self._watcher is not None:
            raise RuntimeError(f"{self.name} supervisor already started")
        with self._lock:
            self._process = running if running is not None else self._launch()
            self._state = SupervisorState.RUNNING
        _log.info("process started", extra={"child": self.name, "pid": self._process.pid})
        self._watcher = threading.Thread(
            target=self._watch, name=f"{self.name}-supervisor", daemon=True
        )
        self._watcher.start()
        return self._process

    def stop(self, *, timeout_s: float) -> None:
        """Stop restarting, terminate the process (SIGTERM, SIGKILL after ``timeout_s``) and
        wait for the watcher to end."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _log.warning("process ignored SIGTERM, killing", extra={"child": self.name})
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=timeout_s)
        self._state = SupervisorState.STOPPED

    def _watch(self) -> None:
        failures = 0
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            returncode = process.wait()
            if self._stopping.is_set():
                return
            stable = time.monotonic() - started >= self.policy.stable_after_s
            failures = 1 if stable else failures + 1
            if failures > self.policy.max_restarts:
                self._give_up(returncode)
                return
            backoff_s = self.policy.backoff_s(failures)
            self._state = SupervisorState.RESTARTING
            _log.warning(
                "process exited unexpectedly; restarting",
                extra={
                    "child": self.name,
                    "returncode": returncode,
                    "attempt": failures,
                    "max_restarts": self.policy.max_restarts,
                    "backoff_s": backoff_s,
                },
            )
            if self._stopping.wait(backoff_s) or not self._relaunch():
                return

    def _relaunch(self) -> bool:
        """Start a new process unless stopping; False when the supervisor should end."""
        with self._lock:
            if self._stopping.is_set():
                return False
            try:
                self._process = self._launch()
            except OSError as error:
                launch_error: OSError | None = error
            else:
                launch_error = None
                self._restarts += 1
                self._state = SupervisorState.RUNNING
        if launch_error is not None:
            _log.error("restart failed", extra={"child": self.name, "error": str(launch_error)})
            self._give_up(None)
            return False
        _log.info(
            "process restarted",
            extra={"child": self.name, "pid": self._process.pid, "restarts": self._restarts},
        )
        return True

    def _give_up(self, returncode: int | None) -> None:
        self._state = SupervisorState.GAVE_UP
        _log.error(
            "process keeps dying; giving up",
            extra={"child": self.name, "returncode": returncode, "restarts": self._restarts},
        )
        if self._on_give_up is not None:
            self._on_give_up()
