"""The parent side of the pre-forked Freqtrade worker ("zygote"): start it once, fork a child per backtest.

A fresh interpreter per backtest pays Freqtrade's import time (seconds) every time. The zygote — a child
process running `python -m tradai_resources.workers.zygote_server --zygote FD` — imports Freqtrade once and
then `fork()`s a new process for every backtest (`zygote_server`, `backtest_child.become_job`). Each
backtest therefore keeps a process of its own (Freqtrade's global state and logging never leak, a crash
never reaches the caller) and starts in milliseconds.

Lifecycle, per process: `zygote_for(python, env)` starts the zygote lazily on first use — without waiting
for it, so its imports overlap whatever the caller does next — and hands the same one to every resource
and thread of the process (one per interpreter path). `run()` may be called from many threads at once:
every backtest has its own socket to the zygote. The zygote is shut down at interpreter exit (`atexit`);
if this process dies without running `atexit` (SIGKILL, `os._exit` in a multiprocessing child), the
zygote sees its control socket close, kills any backtest still running and exits. A process forked from
this one never uses the parent's zygote: it starts its own.

Lifecycle, shared (`shared_zygote_for`): one zygote per user, interpreter, import path and working folder,
answering on a Unix socket in a private (0700) folder, for every process of the machine — Dagster's step
processes and runs each skip the start-up, not only the second backtest of a process. Whoever needs it
first starts it, detached (its own session); zygotes started at the same time elect one through a lock
file. It stops after an idle period, on SIGTERM (`stop_shared_zygotes`), or as soon as a module it
imported changed on disk — it refuses the job as `stale`, and the caller transparently starts one on the
current code. A requester that goes away still takes its backtest with it.

Trust, shared mode: the socket folder (by default in a world-writable /tmp) is opened once, refusing a
symbolic link, a non-folder and anything not ours and private, and then used only through that descriptor
(`folder`), which the zygote inherits. Job requests carry an allowlisted environment, never a secret
(`env`). The requester signals a pid the zygote reported only if /proc shows it is a child of the
process serving the socket (`SO_PEERCRED`) and ours; `stop_shared_zygotes` signals a pid from a lock file
only if it runs our `--shared` zygote for that lock's socket in that very folder.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import fnmatch
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from tradai_core.settings import TradAISettings
from tradai_resources.workers.env import child_environment
from tradai_resources.workers.folder import (
    PROC_FD,
    PrivateFolder,
    UnsafeFolderError,
    open_own_file,
    open_private_folder,
    read_own_file,
)
from tradai_resources.workers.processes import (
    ProcessInfo,
    kill_group,
    last_lines,
    log_tail,
    peer_credentials,
    process_info,
)
from tradai_resources.workers.protocol import (
    KILL_COMMAND,
    STALE_ANSWER,
    ChildExit,
    ForkRequest,
    LineReader,
)

logger = logging.getLogger(__name__)

ZYGOTE_MODULE: Final[str] = "tradai_resources.workers.zygote_server"
BOOT_TIMEOUT_S: Final[float] = 180.0
"""How long the zygote may take to import Freqtrade and report ready."""
ANSWER_TIMEOUT_S: Final[float] = 30.0
"""How long the zygote may take to answer with a child's pid, or with its exit code after a kill."""
STOP_POLL_S: Final[float] = 0.2
"""How often a requester waiting for its child looks at its `stop` event."""
LOG_TAIL_LINES: Final[int] = 25


class ZygoteError(RuntimeError):
    """The zygote could not start, refused a job, or died; `started` says whether a child had been forked."""

    def __init__(self, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.started = started


class ZygoteStaleError(ZygoteError):
    """A shared zygote refused a job because code it preloaded changed on disk (it stops serving)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, started=False)


class ZygoteTimeoutError(TimeoutError):
    """A forked child (backtest, check or study-worker) ran past its time limit and was killed."""


class ZygoteStoppedError(RuntimeError):
    """A forked child was killed because its requester asked it to stop (`stop` set)."""


def _with_log(reason: str, tail: str, started: bool) -> ZygoteError:
    """A ZygoteError saying `reason`, followed by the zygote's last log lines when there are any."""
    return ZygoteError(f"{reason}\n--- zygote log ---\n{tail}" if tail else reason, started=started)


def _verified_child(pid: int, zygote_pid: int | None) -> ProcessInfo | None:
    """The process a zygote reported as its newly forked child, if /proc confirms it is that zygote's child
    and ours; else None, and it is never signalled (a pid taken on a zygote's word alone could name any
    process). Checked when reported, while the zygote surely is its parent; `_kill_child` later only checks
    it is still the same process, so a child orphaned by a dead zygote can still be killed."""
    info = process_info(pid) if zygote_pid is not None else None
    if info is None:  # already exited and reaped (or no /proc): nothing to signal later
        return None
    if info.ppid != zygote_pid or info.uid != os.getuid():
        logger.warning(
            "the worker zygote %s reported pid %d, which is not its child; it will not be signalled",
            zygote_pid,
            pid,
        )
        return None
    return info


def _kill_child(child: ProcessInfo | None) -> None:
    """SIGKILL a verified backtest child — its process group once it leads one — if it is still the same
    process (same start time, ours). The zygote kills the child itself when our socket closes; this is the
    fallback for a zygote that is gone."""
    if child is None:
        return
    now = process_info(child.pid)
    if now is None or now.start_ticks != child.start_ticks or now.uid != os.getuid():
        return
    kill_group(child.pid)


def _kill_through(conn: socket.socket, lines: LineReader, child: ProcessInfo | None) -> None:
    """Have the zygote kill the child on `conn` and wait for its exit report; kill it ourselves if the
    zygote does not answer."""
    killed = None
    with contextlib.suppress(OSError, TimeoutError):
        conn.sendall(KILL_COMMAND + b"\n")
        killed = lines.read(time.monotonic() + ANSWER_TIMEOUT_S)
    if killed is None:
        _kill_child(child)


def _await_child(
    conn: socket.socket,
    timeout: float,
    fail: Callable[[str, bool], ZygoteError],
    zygote_pid: int | None,
    stop: threading.Event | None = None,
) -> ChildExit:
    """After a `ForkRequest` went out on `conn` to the zygote `zygote_pid`: wait for the child's pid, then
    for its exit.

    Raises ZygoteTimeoutError after killing a child that ran longer than `timeout` seconds,
    ZygoteStoppedError after killing it once `stop` is set, ZygoteStaleError when a shared zygote runs
    outdated code, and `fail(reason, started)` when the zygote did not fork or died meanwhile. Any other
    exception here (an interrupt) kills the child before it propagates.
    """
    lines = LineReader(conn)
    try:
        answer = lines.read(time.monotonic() + ANSWER_TIMEOUT_S)
    except TimeoutError:
        raise fail("the zygote did not fork the job", False) from None
    if answer is not None and answer.get("error") == STALE_ANSWER:
        raise ZygoteStaleError(f"the shared zygote runs outdated code ({answer.get('changed')} changed)")
    if answer is None or "pid" not in answer:
        raise fail(f"the zygote did not fork the job: {answer}", False)
    try:
        pid = int(answer["pid"])
    except (TypeError, ValueError):
        raise fail(f"the zygote answered no valid pid: {answer}", False) from None
    child = _verified_child(pid, zygote_pid)
    finished = False
    end = time.monotonic() + timeout
    try:
        while True:
            try:
                done = lines.read(end if stop is None else min(end, time.monotonic() + STOP_POLL_S))
                break
            except TimeoutError:
                stopped = stop is not None and stop.is_set()
                if stopped or time.monotonic() >= end:
                    _kill_through(conn, lines, child)
                    finished = True
                    if stopped:
                        raise ZygoteStoppedError("stopped on request") from None
                    raise ZygoteTimeoutError(f"killed after {timeout:g} s") from None
        if done is None:
            raise fail("the zygote exited while its child ran", True)
        finished = True
        return ChildExit.from_message(done)
    finally:
        if not finished:  # interrupted, or the zygote died: the child goes too
            with contextlib.suppress(OSError):
                conn.sendall(KILL_COMMAND + b"\n")
            _kill_child(child)


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
                    [python, "-m", ZYGOTE_MODULE, "--zygote", str(theirs.fileno()), str(self._folder)],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=child_environment(env),  # never a secret: see workers.env
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
        return log_tail(self.log_path, lines)

    def _fail(self, reason: str, started: bool) -> ZygoteError:
        self._broken = reason
        return _with_log(reason, self.log_tail(), started)

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> dict[str, Any]:
        """Block until the zygote has imported Freqtrade; returns its ready report (pid, modules, threads)."""
        with self._ready_lock:
            if self._ready is None:
                if self._broken is not None:
                    raise ZygoteError(self._broken, started=False)
                try:
                    ready = LineReader(self._control).read(time.monotonic() + timeout)
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

    def run(self, request: ForkRequest, timeout: float, stop: threading.Event | None = None) -> ChildExit:
        """Run `request` in a fresh child forked from the zygote; return how it exited.

        Raises ZygoteTimeoutError after killing a child that ran longer than `timeout` seconds,
        ZygoteStoppedError after killing it once `stop` is set, and ZygoteError when the zygote cannot take
        the job or dies meanwhile. Any other exception here (an interrupt) kills the child before it
        propagates.
        """
        self.wait_ready()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                mine.sendall(request.model_dump_json().encode() + b"\n")
                with self._send_lock:
                    socket.send_fds(self._control, [b"J"], [theirs.fileno()])
            except OSError as exc:
                raise self._fail(f"the zygote does not take jobs any more: {exc}", started=False) from exc
            finally:
                theirs.close()
            return _await_child(mine, timeout, self._fail, self.pid, stop)
        finally:
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


SHARED_BOOT_POLL_S: Final[float] = 0.05
MAX_UNIX_SOCKET_PATH: Final[int] = 107


def default_shared_folder() -> Path:
    """Where shared zygotes put their sockets: `$XDG_RUNTIME_DIR/tradai`, else `<tmp>/tradai-<uid>`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "tradai"
    return Path(tempfile.gettempdir()) / f"tradai-{os.getuid()}"


def shared_folder(configured: str | Path | None = None) -> Path:
    """The shared workers' folder: `configured`, else `TRADAI_WORKER_DIR`, else `default_shared_folder()` —
    the same answer for the resource that starts them and `tradai workers stop`."""
    if configured:
        return Path(configured)
    try:
        folder = TradAISettings().worker_dir
    except ValueError as exc:  # pydantic's ValidationError; its text may quote a secret, so it is not shown
        raise ZygoteError(
            f"the TRADAI_* settings are invalid ({type(exc).__name__}); cannot find the shared worker folder",
            started=False,
        ) from None
    return folder or default_shared_folder()


_folders: dict[str, PrivateFolder] = {}
_folders_lock = threading.Lock()


def private_folder(folder: Path) -> PrivateFolder:
    """`folder`, created 0700 if missing, opened and checked once per process (`folder`): ZygoteError
    for a symbolic link, a non-folder, or a folder that is not ours or is open to other users (its sockets
    take jobs). Later calls hand back the same open folder, unless it was removed meanwhile."""
    key = os.path.abspath(folder)
    with _folders_lock:
        held = _folders.get(key)
        if held is not None and not held.stale():
            return held
        try:
            opened = open_private_folder(Path(key), create=True)
        except (UnsafeFolderError, OSError) as exc:
            raise ZygoteError(str(exc), started=False) from exc
        _folders[key] = opened  # a removed folder's descriptor stays open: a running job may still use it
        return opened


def shared_socket_path(folder: Path | PrivateFolder, python: str, env: Mapping[str, str], cwd: Path) -> Path:
    """The socket of the shared zygote for this interpreter, import path and folder: processes that would
    import the same code meet at the same socket; any other set-up gets a zygote of its own."""
    base = folder.path if isinstance(folder, PrivateFolder) else Path(folder)
    key = "\0".join((os.path.realpath(python), env.get("PYTHONPATH", ""), str(Path(cwd).resolve())))
    path = Path(os.path.abspath(base)) / f"freqtrade-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"
    if not PROC_FD.is_dir() and len(os.fsencode(path)) + len(".4194304") > MAX_UNIX_SOCKET_PATH:
        raise ZygoteError(  # bound as <path>.<pid> first; with /proc it is bound by a short fd path
            f"the shared worker socket path {path} is too long for a Unix socket", started=False
        )
    return path


class SharedZygote:
    """The zygote of this user on a Unix socket, shared by every process of the machine (Dagster's step
    processes, runs, the code server): started by whichever process needs it first, detached from it, and
    gone after `idle_timeout` s without a backtest (see `zygote_server.serve_shared`).

    `run` and `wait_ready` work as WorkerZygote's. Backtests from other processes run side by side in it;
    each child still takes its requester's environment and files, and is killed when its requester goes.
    """

    def __init__(
        self,
        python: str,
        env: Mapping[str, str],
        cwd: Path,
        path: Path,
        idle_timeout: float,
        folder: PrivateFolder | None = None,
    ) -> None:
        self.python = python
        self.socket_path = path
        self.log_path = path.with_name(path.name + ".log")
        self._folder = folder or private_folder(path.parent)
        self._name = path.name
        self._env = child_environment(env)  # the zygote's own environment: never a secret
        self._cwd = cwd
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._spawned: subprocess.Popen[bytes] | None = None
        self._spawn_log: str | None = None
        self._broken: str | None = None

    @property
    def pid(self) -> int | None:
        """The serving zygote's process id (from its lock file), None if none is known."""
        try:
            return int(read_own_file(self._folder, f"{self._name}.lock", 64).strip())
        except (OSError, ValueError):
            return None

    @property
    def failed_to_start(self) -> bool:
        """True if a zygote this process started exited with an error (not started again here)."""
        return self._broken is not None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the start-up log of the zygote this process spawned, else the serving one's."""
        for name in (self._spawn_log, self.log_path.name):
            if name is None:
                continue
            try:
                text = read_own_file(self._folder, name, 1 << 22).decode("utf-8", errors="replace")
            except OSError:
                continue
            return last_lines(text, lines)
        return ""

    def _fail(self, reason: str, started: bool) -> ZygoteError:
        return _with_log(reason, self.log_tail(), started)

    def _connect(self) -> socket.socket | None:
        """A connection to the zygote serving the socket, None if none answers; ZygoteError if the process
        answering is another user's (it must not see our jobs)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self._folder.address(self._name))
        except OSError:
            conn.close()
            return None
        peer = peer_credentials(conn)
        if peer is not None and peer[1] != os.getuid():
            conn.close()
            raise ZygoteError(
                f"the shared worker socket {self.socket_path} is served by user {peer[1]}; not using it",
                started=False,
            )
        return conn

    def start(self) -> None:
        """Start a zygote on the socket unless one answers there or ours is starting; do not wait."""
        with self._lock:
            if self._broken is not None:
                raise ZygoteError(self._broken, started=False)
            if self._spawned is not None and self._spawned.poll() is None:
                return
            probe = self._connect()
            if probe is not None:
                probe.close()
                return
            name = f"{self._name}.start-{os.getpid()}-{time.time_ns()}.log"
            at = self._folder.fd
            command = [self.python, "-m", ZYGOTE_MODULE, "--shared", str(self.socket_path)]
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                log = os.open(name, flags, 0o600, dir_fd=at)
            except OSError as exc:  # e.g. the folder was removed: back to a fresh process, not a crash
                raise ZygoteError(
                    f"cannot write in the shared worker folder {self._folder.path}: {exc}", started=False
                ) from exc
            try:
                self._spawned = subprocess.Popen(
                    [*command, f"{self._idle_timeout:g}", name, str(at)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(at,),  # the checked folder itself, whatever its name points at by now
                    env=self._env,
                    cwd=self._cwd,
                    start_new_session=True,  # outlives this process; the terminal's Ctrl-C is not its
                )
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=at)
                self._broken = f"cannot start the shared zygote with {self.python}: {exc}"
                raise ZygoteError(self._broken, started=False) from exc
            finally:
                os.close(log)
            self._spawn_log = name
            _spawned_shared.append(self._spawned)
            logger.info("starting the shared Freqtrade worker zygote on %s", self.socket_path)

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> dict[str, Any]:
        """Block until a zygote answers on the socket (starting one if needed); returns {"pid": ...}."""
        deadline = time.monotonic() + timeout
        self.start()
        while True:
            probe = self._connect()
            if probe is not None:
                probe.close()
                return {"pid": self.pid, "socket": str(self.socket_path)}
            spawned = self._spawned
            code = spawned.poll() if spawned is not None else 0
            if code not in (None, 0):
                error = self._fail(f"the shared zygote exited while starting (exit code {code})", False)
                self._broken = str(error)
                raise error
            if time.monotonic() > deadline:
                raise self._fail(f"the shared zygote did not start within {timeout:g} s", False)
            if code == 0:  # ours lost the election to one that has since gone (or idled out): try again
                self.start()
            time.sleep(SHARED_BOOT_POLL_S)

    def run(self, request: ForkRequest, timeout: float, stop: threading.Event | None = None) -> ChildExit:
        """Run `request` in a fresh child forked from the shared zygote (see `WorkerZygote.run`). A zygote
        on outdated code, or one that idled out between connect attempts, is replaced transparently."""
        for _ in range(3):
            conn = self._connect()
            if conn is None:
                self.wait_ready()
                continue
            try:
                try:
                    conn.sendall(request.model_dump_json().encode() + b"\n")
                except OSError:
                    continue  # it stopped listening between our connect and send
                peer = peer_credentials(conn)
                return _await_child(conn, timeout, self._fail, peer[0] if peer else None, stop)
            except ZygoteStaleError as exc:
                logger.info("%s; starting one on the current code", exc)
            finally:
                conn.close()
        raise self._fail(f"no shared zygote took the job on {self.socket_path}", False)


_spawned_shared: list[subprocess.Popen[bytes]] = []
"""Shared zygotes this process started: kept referenced, so they are never reported as leaked children."""


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


_shared: dict[Path, SharedZygote] = {}


def shared_zygote_for(
    python: str, env: Mapping[str, str], cwd: Path, folder: Path, idle_timeout: float
) -> SharedZygote:
    """The machine-wide zygote for `python` (and the import path in `env`, and `cwd`) with its socket in
    `folder`, started in the background if none answers. `folder` must be private to this user (it is
    created 0700); ZygoteError otherwise. `env`, `cwd` and `idle_timeout` apply when this call starts it."""
    held = private_folder(folder)
    path = shared_socket_path(held, python, env, cwd)
    with _registry_lock:
        zygote = _shared.get(path)
        if zygote is not None and zygote._folder == held:  # it reconnects or restarts as needed
            return zygote
        zygote = _shared[path] = SharedZygote(python, env, cwd, path, idle_timeout, held)
    zygote.start()  # in the background, on this process's first use only: no probe per backtest
    return zygote


def stop_shared_zygotes(folder: Path, timeout: float = 30.0) -> list[int]:
    """Ask every shared zygote with its socket in `folder` to stop (SIGTERM: no new jobs, running ones
    finish) and wait up to `timeout` s for them to exit; returns their pids.

    Only a zygote is signalled: the folder must be ours and private (ZygoteError otherwise), each lock a
    regular file of ours, and the pid it names a process of ours running `zygote_server --shared` for
    that lock's socket in this very folder — a forged lock naming another process is skipped, with a
    warning. A missing folder has nothing to stop."""
    try:
        held = open_private_folder(Path(folder), create=False)
    except FileNotFoundError:
        return []
    except (UnsafeFolderError, OSError) as exc:
        raise ZygoteError(str(exc), started=False) from exc
    pids: list[int] = []
    try:
        for name in sorted(os.listdir(held.fd)):
            if not fnmatch.fnmatch(name, "freqtrade-*.sock.lock"):
                continue
            pid = _locked_pid(held, name)
            if pid is None:
                continue
            if not _is_shared_zygote(pid, held, name.removesuffix(".lock")):
                logger.warning(
                    "not stopping pid %d named by %s: it is not a shared worker of this folder",
                    pid,
                    held.path / name,
                )
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
    finally:
        os.close(held.fd)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return pids


def _locked_pid(folder: PrivateFolder, lock_name: str) -> int | None:
    """The pid a held lock file names; None if nobody holds it, or it is no regular file of ours."""
    try:
        fd = open_own_file(folder, lock_name, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it: no zygote behind this lock
            return None
        except BlockingIOError:
            return int(os.read(fd, 64).strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _is_shared_zygote(pid: int, folder: PrivateFolder, socket_name: str) -> bool:
    """True if `pid` is a process of ours running `zygote_server --shared` for `socket_name` in `folder`
    (the folder it holds open, else the one its command line names, is this very folder)."""
    info = process_info(pid)
    if info is None or info.uid != os.getuid() or info.zombie or "--shared" not in info.cmdline:
        return False
    at = info.cmdline.index("--shared")
    args = info.cmdline[at + 1 :]
    if info.cmdline[max(at - 2, 0) : at] != ("-m", ZYGOTE_MODULE) or not args:
        return False
    if Path(args[0]).name != socket_name:
        return False
    ours = os.fstat(folder.fd)
    candidates = [f"/proc/{pid}/fd/{args[3]}"] if len(args) >= 4 and args[3].isdigit() else []
    for candidate in [*candidates, str(Path(args[0]).parent)]:
        with contextlib.suppress(OSError):
            status = os.stat(candidate)
            return (status.st_dev, status.st_ino) == (ours.st_dev, ours.st_ino)
    return False


def _alive(pid: int) -> bool:
    for spawned in _spawned_shared:  # our own child: reap it, or it lingers as a zombie that looks alive
        if spawned.pid == pid:
            return spawned.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    global _registry_lock, _folders_lock
    _registry_lock = threading.Lock()  # it may have been held by another thread at fork time
    _folders_lock = threading.Lock()  # the open folders stay valid in the child
    for zygote in [*_zygotes.values(), *_retired]:
        with contextlib.suppress(OSError):
            zygote._control.close()
    _zygotes.clear()
    _retired.clear()
    _shared.clear()  # shared zygotes are not ours to stop; the child meets them at the same socket
    _spawned_shared.clear()  # not the child's children


atexit.register(shutdown_zygotes)
os.register_at_fork(after_in_child=_forget_after_fork)
