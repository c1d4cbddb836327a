"""The embedded launcher's supervisor restarts a dead Triton with bounded, backed-off retries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hetgateway.embedded.supervisor import ProcessSupervisor, RestartPolicy, SupervisorState

FAST_POLICY = RestartPolicy(max_restarts=3, initial_backoff_s=0.05, backoff_factor=2.0,
                            max_backoff_s=0.2, stable_after_s=30.0)
WAIT_S = 10.0


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_for(condition, *, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_backoff_grows_geometrically_up_to_its_cap() -> None:
    policy = RestartPolicy(initial_backoff_s=0.5, backoff_factor=2.0, max_backoff_s=3.0)
    assert [policy.backoff_s(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_killed_process_is_restarted_and_stop_leaves_nothing_running() -> None:
    supervisor = ProcessSupervisor(lambda: _python("import time; time.sleep(60)"),
                                   name="sleeper", policy=FAST_POLICY)
    first = supervisor.start()
    try:
        os.kill(first.pid, signal.SIGKILL)
        _wait_for(lambda: supervisor.restarts == 1 and supervisor.process is not first)
        assert supervisor.state is SupervisorState.RUNNING
        second = supervisor.process
        assert second is not None and second.poll() is None
    finally:
        supervisor.stop(timeout_s=5)
    assert second.poll() is not None
    assert supervisor.state is SupervisorState.STOPPED
    time.sleep(FAST_POLICY.max_backoff_s * 2)
    assert supervisor.process is second, "no restart after stop"


def test_a_process_that_keeps_dying_is_given_up_after_the_bounded_retries() -> None:
    gave_up = threading.Event()
    launches: list[float] = []

    def launch() -> subprocess.Popen:
        launches.append(time.monotonic())
        return _python("import sys; sys.exit(3)")

    supervisor = ProcessSupervisor(launch, name="crasher", policy=FAST_POLICY,
                                   on_give_up=gave_up.set)
    supervisor.start()
    try:
        assert gave_up.wait(WAIT_S)
    finally:
        supervisor.stop(timeout_s=5)
    assert len(launches) == 1 + FAST_POLICY.max_restarts
    assert supervisor.restarts == FAST_POLICY.max_restarts
    gaps = [later - earlier for earlier, later in zip(launches, launches[1:], strict=False)]
    for failure, gap in enumerate(gaps, start=1):
        assert gap >= FAST_POLICY.backoff_s(failure)


def test_stop_during_the_backoff_cancels_the_restart() -> None:
    slow_policy = RestartPolicy(max_restarts=3, initial_backoff_s=30.0)
    supervisor = ProcessSupervisor(lambda: _python("pass"), name="quick", policy=slow_policy)
    first = supervisor.start()
    _wait_for(lambda: supervisor.state is SupervisorState.RESTARTING)
    started = time.monotonic()
    supervisor.stop(timeout_s=5)
    assert time.monotonic() - started < 2.0
    assert supervisor.process is first and supervisor.restarts == 0


def test_a_supervisor_starts_once() -> None:
    supervisor = ProcessSupervisor(lambda: _python("import time; time.sleep(60)"),
                                   name="once", policy=FAST_POLICY)
    supervisor.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            supervisor.start()
    finally:
        supervisor.stop(timeout_s=5)


def test_an_adopted_running_process_is_watched_and_restarted() -> None:
    launched: list[subprocess.Popen] = []

    def launch() -> subprocess.Popen:
        launched.append(_python("import time; time.sleep(60)"))
        return launched[-1]

    adopted = _python("import time; time.sleep(60)")
    supervisor = ProcessSupervisor(launch, name="adopted", policy=FAST_POLICY)
    assert supervisor.start(running=adopted) is adopted
    try:
        assert launched == []
        adopted.kill()
        _wait_for(lambda: len(launched) == 1 and supervisor.process is launched[0])
    finally:
        supervisor.stop(timeout_s=5)
    assert launched[0].poll() is not None
