"""Run one job file in a child process of its own, the way a resource is configured to: forked from the
shared zygote (`shared`) or from this process's (`prefork`), or in a fresh interpreter (`spawn`, and the
fallback when no zygote can take the job). The backtester and the hyperopt study-workers both launch
through here, so both get the same allowlisted environment, time limit, stop and fallback.

Whatever the start method, the child runs the `main` of the module its job file's kind names
(`jobs.job_module`), is killed with its whole process group past its time limit or when the caller sets
`stop`, and its exit is reported as a `ChildExit` (CPU time and peak memory included).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tradai_core.settings import PROJECT_ROOT, WorkerMode
from tradai_resources.workers.env import child_environment
from tradai_resources.workers.jobs import job_module
from tradai_resources.workers.processes import kill_group
from tradai_resources.workers.protocol import ChildExit, ForkRequest
from tradai_resources.workers.zygote_client import (
    SharedZygote,
    WorkerZygote,
    ZygoteError,
    ZygoteStoppedError,
    ZygoteTimeoutError,
    shared_folder,
    shared_zygote_for,
    zygote_for,
)

logger = logging.getLogger(__name__)

SPAWN_POLL_S: Final[float] = 0.05


class ChildTimeoutError(TimeoutError):
    """The child ran past its time limit and was killed."""


class ChildStoppedError(RuntimeError):
    """The caller asked for the child to stop (`stop` was set); it was killed."""


class ChildLostError(RuntimeError):
    """The zygote died while the child ran: the child is gone and its work with it."""


class InterpreterError(OSError):
    """The interpreter for a fresh child could not be started."""


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a child is given: the allowlisted part of `env` (default: ours; never a secret, see
    `workers.env`), the project on its import path, unbuffered output."""
    allowed = child_environment(os.environ if env is None else env)
    path = allowed.get("PYTHONPATH", "")
    allowed["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), path) if p)
    allowed["PYTHONUNBUFFERED"] = "1"
    return allowed


@dataclass(frozen=True)
class ChildLauncher:
    """How a resource starts its children: `python`, `start_method`, and for `shared` the socket folder
    (None: `TRADAI_WORKER_DIR` or the default) and how long the shared zygote lingers idle."""

    python: str
    start_method: WorkerMode
    shared_folder: str | None = None
    shared_idle_seconds: float = 600.0

    @property
    def forks(self) -> bool:
        """True if children fork from a zygote (on a system that can fork)."""
        return self.start_method in ("prefork", "shared") and hasattr(os, "fork")

    def zygote(self) -> WorkerZygote | SharedZygote:
        """The zygote children fork from, started in the background if needed (ZygoteError if it cannot)."""
        if self.start_method == "shared":
            folder = shared_folder(self.shared_folder)
            return shared_zygote_for(self.python, child_env(), PROJECT_ROOT, folder, self.shared_idle_seconds)
        return zygote_for(self.python, child_env(), PROJECT_ROOT)

    def prestart(self) -> None:
        """Start the zygote in the background if it is not running. Never raises: if it cannot start,
        children say so in a warning and run in fresh interpreters."""
        if self.forks:
            try:
                self.zygote()
            except (ZygoteError, OSError) as exc:
                logger.warning("the Freqtrade worker zygote is unavailable (%s); children start fresh", exc)

    def run(self, request: ForkRequest, timeout: float, stop: threading.Event | None = None) -> ChildExit:
        """Run `request`'s job in a child of its own; return how it exited.

        Raises ChildTimeoutError past `timeout` seconds (counted from the fork, or the interpreter's start)
        and ChildStoppedError once `stop` is set — the child killed with its process group either way —
        ChildLostError if the zygote died while the child ran, InterpreterError if a fresh interpreter
        cannot be started. A zygote that cannot take the job is a warning: the job runs in a fresh
        interpreter instead.
        """
        if not self.forks:
            return self.spawn(request, timeout, stop)
        try:
            zygote = self.zygote()
        except (ZygoteError, OSError) as exc:
            logger.warning("the worker zygote is unavailable (%s); starting a fresh interpreter instead", exc)
            return self.spawn(request, timeout, stop)
        try:
            return zygote.run(request, timeout, stop)
        except ZygoteTimeoutError:
            raise ChildTimeoutError(f"killed after {timeout:g} s") from None
        except ZygoteStoppedError:
            raise ChildStoppedError("stopped on request") from None
        except ZygoteError as exc:
            if exc.started:
                raise ChildLostError(f"the worker process was lost: {exc}") from exc
            logger.warning("the worker zygote is unavailable (%s); starting a fresh interpreter instead", exc)
            return self.spawn(request, timeout, stop)

    def spawn(self, request: ForkRequest, timeout: float, stop: threading.Event | None = None) -> ChildExit:
        """Run the job in a fresh interpreter (`python -m MODULE JOB`), with `run`'s time limit and stop."""
        command = [self.python, "-m", job_module(Path(request.job_path)), request.job_path]
        with open(request.stdout_path, "wb") as out, open(request.stderr_path, "wb") as err:
            try:
                process = subprocess.Popen(
                    command,
                    cwd=request.cwd,
                    env=request.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                raise InterpreterError(f"cannot start the interpreter {command[0]}: {exc}") from exc
        deadline = time.monotonic() + timeout
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, with its usage
                    return ChildExit(
                        process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
                    )
                if stop is not None and stop.is_set():
                    raise ChildStoppedError("stopped on request")
                if time.monotonic() > deadline:
                    raise ChildTimeoutError(f"killed after {timeout:g} s")
                time.sleep(SPAWN_POLL_S)
        finally:
            if process.returncode is None:  # over time, stopped, or interrupted: the child goes too
                kill_group(process.pid)
                process.wait()
