"""The pre-forked Freqtrade worker (zygote): `python -m tradai_resources.workers.zygote_server --zygote FD`.

Importing Freqtrade, ccxt, SciPy and pandas takes seconds; the backtest itself often less. The zygote imports
all of it once (`backtest_child.PRELOAD_MODULES`: imports only — no Freqtrade code runs, no logging is
configured, no thread is started), then waits on the control socket `FD` for jobs. The preloaded objects are
frozen out of the garbage collector (`gc.freeze`), so children neither scan them nor copy their pages on
write — without it a forked backtest of 12 pairs × 2 years spent ~2 s more CPU than a fresh process. For each
job it `fork()`s, and the child becomes the job (`backtest_child.become_job`): a process of its own, started
in milliseconds. The zygote reports each child's pid and exit code back on the job's own socket
(`protocol`), kills a child when asked (time limit) or when its requester goes away, and exits — killing any
child still running — when its parent closes the control socket or dies. The parent side is
`zygote_client`. `--shared SOCKET IDLE_S` runs the same loop for every process of the user instead, on a
Unix socket (`serve_shared`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import os
import selectors
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tradai_resources.workers.backtest_child import IDLE_PRELOADS, PRELOAD_MODULES, become_job
from tradai_resources.workers.folder import (
    PrivateFolder,
    adopt_private_folder,
    open_own_file,
    open_private_folder,
)
from tradai_resources.workers.jobs import EXIT_BAD_JOB, EXIT_OK, KIND_PRELOADS, MLFLOW_RUN_KIND, kind_named
from tradai_resources.workers.processes import kill_group, peer_credentials
from tradai_resources.workers.protocol import (
    KILL_COMMAND,
    MAX_REQUEST_BYTES,
    STALE_ANSWER,
    ForkRequest,
    read_request,
    send_json,
)

IDLE_MODULES: tuple[str, ...] = (*IDLE_PRELOADS, *KIND_PRELOADS[MLFLOW_RUN_KIND])
"""Imported one at a time while no job waits, once the first job forked: what most launches need later but
none at first — the report's charts, drawn in the backtest's child, then MLflow, whose run the report
records in a child of its own. Neither the zygote's start nor any Dagster process pays for them."""


def preload(modules: tuple[str, ...] = PRELOAD_MODULES) -> tuple[list[str], dict[str, str]]:
    """Import `modules`; return (imported, {module: error}). A failure is reported, not fatal: the child
    imports the module again when the backtest needs it and fails there, with the backtest's own error."""
    imported: list[str] = []
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
            imported.append(name)
        except Exception as exc:  # a missing optional module must not stop the zygote
            failed[name] = f"{type(exc).__name__}: {exc}"
    return imported, failed


def _preload_and_freeze(modules: tuple[str, ...] = PRELOAD_MODULES) -> tuple[list[str], dict[str, str]]:
    """Import `modules` with the collector off, then freeze them out of it (see the module doc)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # whoever started us owns our lifetime, not the terminal
    gc.disable()  # no collections while importing: everything imported stays alive anyway
    imported, failed = preload(modules)
    gc.collect()
    gc.freeze()  # children never scan (nor copy-on-write) the preloaded heap: ~2 s CPU less per backtest
    gc.enable()
    return imported, failed


def loaded_sources() -> dict[str, tuple[int, int]]:
    """(mtime ns, size) of the file of every module imported so far: what a forked child runs as is."""
    sources: dict[str, tuple[int, int]] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path not in sources:
            with contextlib.suppress(OSError):
                status = os.stat(path)
                sources[path] = (status.st_mtime_ns, status.st_size)
    return sources


def changed_source(recorded: Mapping[str, tuple[int, int]]) -> str | None:
    """The first recorded module file that changed or vanished since `loaded_sources()`, else None."""
    for path, stamp in recorded.items():
        try:
            status = os.stat(path)
        except OSError:
            return path
        if (status.st_mtime_ns, status.st_size) != stamp:
            return path
    return None


def _regular_job_kind(job_path: str) -> str | None:
    """The kind a job file names, if it is a regular file of at most `MAX_REQUEST_BYTES` — read without
    ever blocking the zygote (a FIFO or a device is the child's business); None otherwise, or for a file
    the child will refuse."""
    try:
        fd = os.open(job_path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_REQUEST_BYTES:
            return None
        return kind_named(os.read(fd, MAX_REQUEST_BYTES), job_path)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


class _Forker:
    """The zygote's loop: fork one child per job socket, report its pid and exit on that socket, kill it
    on request or when the requester goes away. Job sources (the control socket, a listening socket) are
    registered by the caller and handed back by `poll`."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector through wake_w
        self.stop_requested = False

        def request_stop(signum: int, frame: object) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.children: dict[int, socket.socket] = {}
        self.closers: list[Callable[[], None]] = []
        """What a forked child must close besides the forker's own descriptors (sources, the lock)."""
        self.preloaded_kinds: set[str] = set()
        self.idle_queue: list[str] = []
        """Modules still to import while no job waits (`IDLE_MODULES`), queued once the first job forked."""
        self.idle_queued = False
        self.loaded_more = False
        """True once modules were imported after start (`jobs.KIND_PRELOADS`, `IDLE_MODULES`)."""

    def add_source(self, source: socket.socket) -> None:
        """Watch `source`: `poll` returns it when it is readable."""
        self._selector.register(source, selectors.EVENT_READ, None)

    def remove_source(self, source: socket.socket) -> None:
        """Stop watching `source`."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(source)

    def _inherited(self) -> list[Callable[[], None]]:
        return [
            self._selector.close,
            *self.closers,
            *(conn.close for conn in self.children.values()),
            lambda: os.close(self._wake_r),
            lambda: os.close(self._wake_w),
        ]

    def fork_job(self, conn: socket.socket) -> None:
        """Read one `ForkRequest` from `conn` and run it in a forked child (answering `{"pid": N}`)."""
        conn.settimeout(10.0)
        try:
            request = ForkRequest.model_validate_json(read_request(conn))
        except Exception as exc:  # the message names the problem, never the values (the env holds secrets)
            send_json(conn, {"error": f"bad request ({type(exc).__name__})"})
            conn.close()
            return
        self._preload_kind(request.job_path)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            become_job(request, [*self._inherited(), conn.close])
        self.children[pid] = conn
        send_json(conn, {"pid": pid})
        self._selector.register(conn, selectors.EVENT_READ, pid)
        if not self.idle_queued:
            self.idle_queued = True
            self.idle_queue.extend(IDLE_MODULES)

    def idle_timeout(self, timeout: float | None) -> float | None:
        """How long `poll` may wait: `timeout`, or not at all while idle modules are queued."""
        return 0.0 if self.idle_queue else timeout

    def preload_idle_step(self) -> None:
        """Import the next queued idle module (`IDLE_MODULES`). One per pass of the loop, between polls:
        a job that arrives meanwhile waits for one import at most, never for all of them."""
        if self.idle_queue:
            self._preload_more((self.idle_queue.pop(0),), "jobs to come")

    def _preload_kind(self, job_path: str) -> None:
        """Before the first job of a kind with modules of its own (`jobs.KIND_PRELOADS`), import them here,
        once: that child and every later one of the kind start with them loaded, and a zygote that only
        ever runs backtests never pays for them."""
        kind = _regular_job_kind(job_path)
        modules = KIND_PRELOADS.get(kind or "", ())
        if not modules or kind in self.preloaded_kinds:
            return
        self.preloaded_kinds.add(kind)
        self._preload_more(modules, f"{kind} jobs")

    def _preload_more(self, modules: tuple[str, ...], purpose: str) -> None:
        """Import `modules` after start (a failure is reported: the child imports them itself)."""
        _, failed = _preload_and_freeze(modules)
        self.loaded_more = True
        if failed:
            sys.stderr.write(f"zygote: could not preload {failed} for {purpose}\n")
        if threading.active_count() != 1:
            sys.stderr.write(
                f"zygote: {threading.active_count()} threads after preload; fork may be unsafe\n"
            )

    def kill_all(self) -> None:
        """Kill every running child (each is reaped and reported as usual)."""
        for pid in list(self.children):
            kill_group(pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                send_json(
                    conn,
                    {
                        "returncode": os.waitstatus_to_exitcode(status),
                        "cpu_seconds": usage.ru_utime + usage.ru_stime,
                        "max_rss_mb": usage.ru_maxrss / 1024,
                    },
                )
                self.remove_source(conn)
                conn.close()

    def poll(self, timeout: float | None) -> list[socket.socket]:
        """Wait up to `timeout` s; handle job sockets (kill requests, requesters gone) and exited
        children; return the readable sources."""
        ready: list[socket.socket] = []
        for key, _ in self._selector.select(timeout=timeout):
            if key.fileobj == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
            elif key.data is None:
                assert isinstance(key.fileobj, socket.socket)
                ready.append(key.fileobj)
            else:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                if not data or KILL_COMMAND in data:
                    kill_group(key.data)
                    if not data:
                        self.remove_source(conn)  # still reaped; nobody left to tell
        self._reap()
        return ready


def serve(control: socket.socket) -> int:
    """Run as a process's private zygote on `control` (a Unix socket to the parent) until the parent goes.

    Protocol — control socket, parent → zygote: one byte with a job socket attached (SCM_RIGHTS); zygote →
    parent, once: a `{"ready": ...}` line after the preload. Job socket: the parent writes one `ForkRequest`
    line; the zygote answers `{"pid": N}` once the child is forked and `{"returncode": rc, "cpu_seconds": s,
    "max_rss_mb": m}` when it has exited (negative rc: killed by that signal). `kill` from the parent, or the
    parent closing its end, kills the child's process group. EOF on the control socket kills every child and
    exits.
    """
    imported, failed = _preload_and_freeze()
    forker = _Forker()
    forker.add_source(control)
    forker.closers.append(control.close)
    send_json(
        control,
        {
            "ready": True,
            "pid": os.getpid(),
            "preloaded": len(imported),
            "failed": failed,
            "threads": threading.active_count(),
        },
    )
    if threading.active_count() != 1:  # fork() copies only this thread: say so loudly
        sys.stderr.write(f"zygote: {threading.active_count()} threads after preload; fork may be unsafe\n")
    serving = True
    while serving or forker.children:
        ready = forker.poll(forker.idle_timeout(None) if serving else 0.2)
        if serving and not ready:
            forker.preload_idle_step()
        for _ in ready:
            try:
                message, fds, _, _ = socket.recv_fds(control, 1, 4)
            except OSError:
                message, fds = b"", []
            if not message:  # the parent closed the control socket or died
                serving = False
                forker.remove_source(control)
                forker.kill_all()
            for fd in fds:
                forker.fork_job(socket.socket(fileno=fd))
    return EXIT_OK


# --- the shared zygote: one per user and interpreter, for every process on the machine ----------------------


def _win_election(folder: PrivateFolder, lock_name: str, socket_name: str) -> int | None:
    """Become the one zygote serving `socket_name` in `folder`: return the descriptor of the held lock, or
    None once another zygote answers there. A zygote that is still starting holds the lock without answering
    yet: wait until it answers (then leave it the job) or dies (then take over)."""
    fd = open_own_file(folder, lock_name, os.O_RDWR | os.O_CREAT)
    socket_path = folder.address(socket_name)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(socket_path)
                os.close(fd)
                return None
            except OSError:
                time.sleep(0.05)
            finally:
                probe.close()
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


def serve_shared(
    folder: PrivateFolder, socket_name: str, idle_timeout: float, log_name: str | None = None
) -> int:
    """Run as the shared zygote answering on the socket `socket_name` in `folder` until idle for
    `idle_timeout` s. Every file operation goes through the folder's descriptor (`worker_folder`).

    Any process of the same user connects to the socket and speaks the job-socket protocol of `serve`
    (one `ForkRequest` line; `{"pid"}`, then `{"returncode", ...}`; `kill`). Of several zygotes started for
    the same path, one serves (`<path>.lock`, holding its pid) and the others exit (0) once it answers.
    The socket appears only once Freqtrade is imported, so a successful connect means ready. Before each job
    the zygote checks that no module it imported changed on disk; if one did, it answers
    `{"error": "stale", ...}` and stops serving, so the next caller starts a zygote on the new code. It
    also stops when idle, on SIGTERM, or when another zygote took over the path; it stops by removing the
    socket (no new jobs), serving what was already queued, and exiting once its running backtests end.
    `log_name`, this process's start-up log, becomes `<socket>.log` if it wins.
    """
    at = folder.fd
    try:
        lock = _win_election(folder, f"{socket_name}.lock", socket_name)
    except OSError as exc:
        sys.stderr.write(f"shared zygote: cannot take the lock in {folder.path}: {exc}\n")
        return EXIT_BAD_JOB
    if lock is None:
        if log_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(log_name, dir_fd=at)
        return EXIT_OK
    if log_name is not None:
        with contextlib.suppress(OSError):
            os.replace(log_name, f"{socket_name}.log", src_dir_fd=at, dst_dir_fd=at)
    imported, failed = _preload_and_freeze()
    sources = loaded_sources()
    if failed:
        sys.stderr.write(f"shared zygote: could not preload {failed}\n")
    forker = _Forker()

    def release_lock() -> None:  # also run in each forked child: it must not keep the election lock
        nonlocal lock
        if lock >= 0:
            os.close(lock)
            lock = -1

    forker.closers.append(release_lock)
    forker.closers.append(lambda: os.close(at))  # a backtest has no business in the worker's folder
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{socket_name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging, dir_fd=at)
    listener.bind(folder.address(staging))
    os.chmod(staging, 0o600, dir_fd=at)
    listener.listen(64)
    listener.setblocking(False)
    os.replace(staging, socket_name, src_dir_fd=at, dst_dir_fd=at)  # ready: connects succeed from now on
    served_inode = os.stat(socket_name, dir_fd=at, follow_symlinks=False).st_ino
    forker.add_source(listener)
    forker.closers.append(listener.close)
    sys.stderr.write(
        f"shared zygote {os.getpid()} serving {folder.path / socket_name} "
        f"({len(imported)} modules preloaded, "
        f"{threading.active_count()} thread(s))\n"
    )
    stale: str | None = None

    def ours() -> bool:
        try:
            return os.stat(socket_name, dir_fd=at, follow_symlinks=False).st_ino == served_inode
        except OSError:
            return False

    def step_aside() -> None:
        """Take no new connections and let a new zygote start (running backtests carry on)."""
        if ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_name, dir_fd=at)
        release_lock()

    def accept_all() -> None:
        """Fork every queued job, or answer `stale` once a preloaded module changed on disk."""
        nonlocal stale
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(True)
            peer = peer_credentials(conn)
            if peer is not None and peer[1] != os.getuid():
                conn.close()
                continue
            if stale is None and (changed := changed_source(sources)) is not None:
                stale = changed
                sys.stderr.write(f"shared zygote: {changed} changed since start-up; stopping\n")
                step_aside()  # before answering: the caller's next connect must not reach us again
            if stale is not None:
                send_json(conn, {"error": STALE_ANSWER, "changed": stale})
                conn.close()
            else:
                forker.fork_job(conn)
                watch_loaded()

    def watch_loaded() -> None:
        """Watch the modules imported after start (a job kind's, idle ones) from their import on."""
        if forker.loaded_more:
            forker.loaded_more = False
            for path, stamp in loaded_sources().items():
                sources.setdefault(path, stamp)

    listening = True
    last_busy = time.monotonic()
    while listening or forker.children:
        if forker.poll(forker.idle_timeout(1.0) if listening else 0.2):
            accept_all()
        elif listening:
            forker.preload_idle_step()
            watch_loaded()
        if forker.children:
            last_busy = time.monotonic()
        idle = time.monotonic() - last_busy > idle_timeout
        if listening and (stale is not None or forker.stop_requested or idle or not ours()):
            step_aside()
            accept_all()  # whoever connected before the unlink is still answered
            forker.remove_source(listener)
            listener.close()
            listening = False
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: `--zygote FD [FOLDER]` serves jobs from the control socket `FD` as a process's private
    zygote (`serve`), then removes FOLDER (the zygote's private folder, holding its log).
    `--shared SOCKET IDLE_S [LOG [DIR_FD]]` serves every process of this user on the Unix socket SOCKET
    until idle (`serve_shared`); LOG is the name of its start-up log in SOCKET's folder, DIR_FD that folder
    held open by whoever started it (else the folder is opened and checked here).
    """
    argv = sys.argv[1:] if argv is None else argv
    if 3 <= len(argv) <= 5 and argv[0] == "--shared":
        socket_path = Path(argv[1])
        try:
            if len(argv) == 5:
                folder = adopt_private_folder(socket_path.parent, int(argv[4]))
            else:
                folder = open_private_folder(socket_path.parent, create=True)
        except (OSError, RuntimeError) as exc:
            sys.stderr.write(f"shared zygote: {exc}\n")
            return EXIT_BAD_JOB
        log = argv[3] if len(argv) >= 4 else None
        return serve_shared(folder, socket_path.name, float(argv[2]), log)
    if len(argv) in (2, 3) and argv[0] == "--zygote":
        code = serve(socket.socket(fileno=int(argv[1])))
        if len(argv) == 3:  # our private folder (its log): gone with us, even if the parent died first
            shutil.rmtree(argv[2], ignore_errors=True)
        return code
    sys.stderr.write(
        "usage: python -m tradai_resources.workers.zygote_server --zygote FD [FOLDER] "
        "| --shared SOCKET IDLE_S [LOG [DIR_FD]]\n"
    )
    return EXIT_BAD_JOB


if __name__ == "__main__":
    sys.exit(main())
