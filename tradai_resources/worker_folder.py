"""The shared Freqtrade worker's private folder, held open by descriptor, and what /proc says of a process.

The shared worker's socket, lock and logs live in one folder (by default `<tmp>/tradai-<uid>`, in a
world-writable /tmp). A name is checked once and then never resolved again: the folder is opened with
`O_DIRECTORY | O_NOFOLLOW` (a symbolic link or a file at that name is refused), its owner and mode are
checked on the open descriptor (`fstat`), and every later operation goes through that descriptor —
`dir_fd`-relative calls with `O_NOFOLLOW`, and `/proc/self/fd/N/NAME` for the socket calls that only take
a path. A symbolic link swapped in for the folder after the check therefore redirects nothing.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path


class UnsafeFolderError(RuntimeError):
    """The folder is missing, not a folder, a symbolic link, another user's, or open to other users."""


@dataclass(frozen=True)
class PrivateFolder:
    """A folder of this user, mode 0700, held open: `fd` is what every operation goes through."""

    path: Path
    fd: int

    def address(self, name: str) -> str:
        """A path naming `name` in this very folder (not whatever `path` names now), for socket calls that
        take no `dir_fd`: `/proc/self/fd/N/NAME` where /proc exists, else the checked path."""
        if PROC_FD.is_dir():
            return f"{PROC_FD}/{self.fd}/{name}"
        return str(self.path / name)

    def stale(self) -> bool:
        """True once the folder held open was removed (a new one may exist under the same name)."""
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return True


PROC_FD = Path("/proc/self/fd")


def open_private_folder(path: Path, *, create: bool) -> PrivateFolder:
    """Open `path` (created 0700 first if `create` and missing) and check it on the descriptor.

    Raises UnsafeFolderError, saying what is wrong, for a symbolic link, a non-folder, a folder of another
    user or one other users can enter, and FileNotFoundError when it is missing and not to be created.
    """
    path = Path(path)
    if create:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # whatever is there is checked below, without following it
        except OSError as exc:
            raise UnsafeFolderError(f"cannot create the shared worker folder {path}: {exc}") from exc
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        status = _lstat(path)
        if status is not None and stat.S_ISLNK(status.st_mode):
            what = "is a symbolic link"
        elif status is not None and not stat.S_ISDIR(status.st_mode):
            what = "is not a folder"
        else:
            what = f"cannot be opened ({exc.strerror})"
        raise UnsafeFolderError(f"the shared worker folder {path} {what}; refusing to use it") from exc
    try:
        return adopt_private_folder(path, fd)
    except UnsafeFolderError:
        os.close(fd)
        raise


def adopt_private_folder(path: Path, fd: int) -> PrivateFolder:
    """The folder open as `fd` (named `path` in messages), checked on the descriptor: a folder of this user
    that no other user can enter; UnsafeFolderError otherwise (the descriptor stays open)."""
    status = os.fstat(fd)
    if not stat.S_ISDIR(status.st_mode):
        raise UnsafeFolderError(f"the shared worker folder {path} is not a folder")
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise UnsafeFolderError(
            f"the shared worker folder {path} must belong to this user with mode 0700 "
            f"(owner uid {status.st_uid}, mode {status.st_mode & 0o777:o})"
        )
    return PrivateFolder(Path(path), fd)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def open_own_file(folder: PrivateFolder, name: str, flags: int, mode: int = 0o600) -> int:
    """Open `name` in `folder` without following a symbolic link; OSError unless it is a regular file of
    this user."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=folder.fd)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
        os.close(fd)
        raise PermissionError(f"{folder.path / name} is not a regular file of this user")
    return fd


def read_own_file(folder: PrivateFolder, name: str, limit: int = 1 << 20) -> bytes:
    """The first `limit` bytes of `name` in `folder` (see `open_own_file`)."""
    fd = open_own_file(folder, name, os.O_RDONLY)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc says of a process: its parent, process group, real user, start time (clock ticks after
    boot: with the pid, it names one process for good, even once the pid is reused) and command line."""

    pid: int
    ppid: int
    pgid: int
    uid: int
    zombie: bool
    start_ticks: int
    cmdline: tuple[str, ...]


def process_info(pid: int) -> ProcessInfo | None:
    """/proc/<pid> of a running process, None if there is none (or no /proc)."""
    if pid <= 0:
        return None
    base = Path(f"/proc/{pid}")
    try:
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        status = (base / "status").read_text().splitlines()
        uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
        raw = (base / "cmdline").read_bytes()
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    cmdline = tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])
    # fields of /proc/<pid>/stat from the 3rd on: state, ppid, pgrp, ... starttime (the 22nd)
    return ProcessInfo(pid, int(fields[1]), int(fields[2]), uid, fields[0] == "Z", int(fields[19]), cmdline)


def peer_credentials(conn: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a connected Unix socket — for a listening socket's
    client, the process that called `listen` — or None where the OS does not say (no SO_PEERCRED)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", credentials)
    return int(pid), int(uid)
