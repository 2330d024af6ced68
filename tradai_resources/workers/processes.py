"""What /proc says of a process, who is at the other end of a Unix socket, how a child is killed, and the
last lines of its log: the process helpers every side of the workers shares."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path


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


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (a child in a session of its own), or `pid` alone if it leads
    none yet (forked, before its `setsid`). A process already gone, or not ours, is left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)


def last_lines(text: str, lines: int) -> str:
    """The last `lines` lines of `text`, trailing whitespace dropped."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of the text file `path` ("" if it is missing or cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return last_lines(text, lines)
