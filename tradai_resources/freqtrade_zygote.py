"""The parent side of the pre-forked Freqtrade worker ("zygote"): start it once, fork a child per backtest.

A fresh interpreter per backtest pays Freqtrade's import time (seconds) every time. The zygote — a child
process running `python -m tradai_resources.freqtrade_worker --zygote FD` — imports Freqtrade once and
then `fork()`s a new process for every backtest (see the worker's docstring for the child's side). Each
backtest therefore keeps a process of its own (Freqtrade's global state and logging never leak, a crash
never reaches the caller) and starts in milliseconds.

Lifecycle, per process: `zygote_for(python, env)` starts the zygote lazily on first use — without waiting
for it, so its imports overlap whatever the caller does next — and hands the same one to every resource
and thread of the process (one per interpreter path). `run()` may be called from many threads at once:
every backtest has its own socket to the zygote. The zygote is shut down at interpreter exit (`atexit`);
if this process dies without running `atexit` (SIGKILL, `os._exit` in a multiprocessing child), the
zygote sees its control socket close, kills any backtest still running and exits. A process forked from
this one never uses the parent's zygote: it starts its own.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tradai_resources.freqtrade_worker import ForkRequest

logger = logging.getLogger(__name__)

WORKER_MODULE: Final[str] = "tradai_resources.freqtrade_worker"
BOOT_TIMEOUT_S: Final[float] = 180.0
"""How long the zygote may take to import Freqtrade and report ready."""
ANSWER_TIMEOUT_S: Final[float] = 30.0
"""How long the zygote may take to answer with a child's pid, or with its exit code after a kill."""
LOG_TAIL_LINES: Final[int] = 25


class ZygoteError(RuntimeError):
    """The zygote could not start, refused a job, or died; `started` says whether a child had been forked."""

    def __init__(self, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.started = started


class ZygoteTimeoutError(TimeoutError):
    """A forked backtest ran past its time limit and was killed."""


@dataclass(frozen=True)
class ChildExit:
    """How a forked child ended: its exit code (negative: killed by that signal) and what it used."""

    returncode: int
    cpu_seconds: float
    max_rss_mb: float


class _Lines:
    """Reads newline-terminated JSON messages from a socket, each before a deadline."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def read(self, deadline: float) -> dict[str, Any] | None:
        """The next message, None on end of stream; raises TimeoutError at `deadline` (monotonic)."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._conn.settimeout(remaining)
            try:
                chunk = self._conn.recv(65536)
            except TimeoutError:
                raise
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)


class WorkerZygote:
    """One running zygote process, owned by the process that started it."""

    def __init__(self, python: str, env: Mapping[str, str], cwd: Path) -> None:
        self.python = python
        self._owner = os.getpid()
        self._folder = Path(tempfile.mkdtemp(prefix="tradai-zygote-"))
        self.log_path = self._folder / "zygote.log"
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    [python, "-m", WORKER_MODULE, "--zygote", str(theirs.fileno()), str(self._folder)],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
                )
        except BaseException as exc:
            mine.close()
            shutil.rmtree(self._folder, ignore_errors=True)
            if isinstance(exc, OSError):
                raise ZygoteError(f"cannot start the zygote with {python}: {exc}", started=False) from exc
            raise
        finally:
            theirs.close()
        self._control = mine
        self._send_lock = threading.Lock()
        self._ready_lock = threading.Lock()
        self._ready: dict[str, Any] | None = None
        self._broken: str | None = None
        logger.info("started the Freqtrade worker zygote (pid %d)", self._process.pid)

    @property
    def pid(self) -> int:
        """The zygote's process id."""
        return self._process.pid

    @property
    def failed_to_start(self) -> bool:
        """True if the zygote never became ready (it is not started again in this process)."""
        return self._ready is None and self._broken is not None

    @property
    def usable(self) -> bool:
        """True while the zygote runs, belongs to this process and has not failed."""
        return self._owner == os.getpid() and self._broken is None and self._process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the zygote wrote to its stderr (import errors, warnings)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _fail(self, reason: str, *, started: bool) -> ZygoteError:
        self._broken = reason
        tail = self.log_tail()
        return ZygoteError(f"{reason}\n--- zygote log ---\n{tail}" if tail else reason, started=started)

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> dict[str, Any]:
        """Block until the zygote has imported Freqtrade; returns its ready report (pid, modules, threads)."""
        with self._ready_lock:
            if self._ready is None:
                if self._broken is not None:
                    raise ZygoteError(self._broken, started=False)
                try:
                    ready = _Lines(self._control).read(time.monotonic() + timeout)
                except TimeoutError:
                    raise self._fail(
                        f"the zygote did not start within {timeout:g} s", started=False
                    ) from None
                if ready is None or not ready.get("ready"):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._process.wait(timeout=5)  # it closed the socket; its exit code follows
                    raise self._fail(
                        f"the zygote exited while starting (exit code {self._process.returncode})",
                        started=False,
                    )
                if ready.get("failed"):
                    logger.warning("the zygote could not preload %s", ready["failed"])
                logger.info(
                    "Freqtrade worker zygote ready (pid %d, %d modules preloaded)",
                    ready["pid"],
                    ready["preloaded"],
                )
                self._ready = ready
            return self._ready

    def run(self, request: ForkRequest, timeout: float) -> ChildExit:
        """Run `request` in a fresh child forked from the zygote; return how it exited.

        Raises ZygoteTimeoutError after killing a child that ran longer than `timeout` seconds, and
        ZygoteError when the zygote cannot take the job or dies meanwhile. Any other exception here (an
        interrupt) kills the child before it propagates.
        """
        self.wait_ready()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid: int | None = None
        finished = False
        try:
            try:
                mine.sendall(request.model_dump_json().encode() + b"\n")
                with self._send_lock:
                    socket.send_fds(self._control, [b"J"], [theirs.fileno()])
            except OSError as exc:
                raise self._fail(f"the zygote does not take jobs any more: {exc}", started=False) from exc
            finally:
                theirs.close()
            lines = _Lines(mine)
            try:
                answer = lines.read(time.monotonic() + ANSWER_TIMEOUT_S)
            except TimeoutError:
                raise self._fail("the zygote did not fork the backtest", started=False) from None
            if answer is None or "pid" not in answer:
                raise self._fail(f"the zygote did not fork the backtest: {answer}", started=False)
            pid = int(answer["pid"])
            try:
                done = lines.read(time.monotonic() + timeout)
            except TimeoutError:
                killed = None
                with contextlib.suppress(OSError, TimeoutError):
                    mine.sendall(b"kill\n")
                    killed = lines.read(time.monotonic() + ANSWER_TIMEOUT_S)
                if killed is None:
                    _kill_group(pid)
                finished = True
                raise ZygoteTimeoutError(f"killed after {timeout:g} s") from None
            if done is None:
                raise self._fail("the zygote exited while a backtest ran", started=True)
            finished = True
            return ChildExit(int(done["returncode"]), float(done["cpu_seconds"]), float(done["max_rss_mb"]))
        finally:
            if pid is not None and not finished:  # interrupted, or the zygote died: the child goes too
                with contextlib.suppress(OSError):
                    mine.sendall(b"kill\n")
                _kill_group(pid)
            mine.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the zygote (it kills any child still running) and remove its folder."""
        with contextlib.suppress(OSError):
            self._control.close()
        if self._owner != os.getpid():
            return
        self._broken = self._broken or "closed"
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


_registry_lock = threading.Lock()
_zygotes: dict[str, WorkerZygote] = {}
_retired: list[WorkerZygote] = []


def zygote_for(python: str, env: Mapping[str, str], cwd: Path) -> WorkerZygote:
    """This process's zygote for interpreter `python`, started (without waiting for it) if there is none
    or the previous one stopped. `env` and `cwd` apply to the zygote itself; each job brings its own env.

    A zygote that failed to start is handed out again, not restarted: its `run` fails at once with the
    reason, so the caller falls back to a fresh interpreter without paying a failing start-up each time.
    Raises ZygoteError if the interpreter cannot even be started.
    """
    with _registry_lock:
        zygote = _zygotes.get(python)
        if zygote is not None and (zygote.usable or zygote.failed_to_start):
            return zygote
        if zygote is not None:  # it stopped: closed at exit, so backtests still running in it can finish
            _retired.append(zygote)
        zygote = WorkerZygote(python, env, cwd)
        _zygotes[python] = zygote
        return zygote


def shutdown_zygotes() -> None:
    """Stop every zygote this process started (registered with `atexit`; safe to call any time)."""
    with _registry_lock:
        zygotes = [*_zygotes.values(), *_retired]
        _zygotes.clear()
        _retired.clear()
    for zygote in zygotes:
        zygote.close()


def running_zygotes() -> list[WorkerZygote]:
    """The zygotes this process has started and that still run."""
    with _registry_lock:
        return [zygote for zygote in _zygotes.values() if zygote.usable]


def _forget_after_fork() -> None:
    """In a process forked from this one: drop the parent's zygotes (closing only our copy of their
    sockets); the child starts its own if it backtests."""
    global _registry_lock
    _registry_lock = threading.Lock()  # it may have been held by another thread at fork time
    for zygote in [*_zygotes.values(), *_retired]:
        with contextlib.suppress(OSError):
            zygote._control.close()
    _zygotes.clear()
    _retired.clear()


atexit.register(shutdown_zygotes)
os.register_at_fork(after_in_child=_forget_after_fork)
