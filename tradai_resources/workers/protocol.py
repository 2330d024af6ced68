"""What the parent and the zygote say to each other: newline-terminated JSON on Unix sockets.

Job socket (one per backtest; private zygote: a socket pair handed over the control socket, shared zygote: a
connection to its listening socket): the parent writes one `ForkRequest` line; the zygote answers
`{"pid": N}` once the child is forked — or `{"error": "stale", "changed": PATH}` (shared zygote on outdated
code), `{"error": ...}` for a bad request — and `{"returncode": rc, "cpu_seconds": s, "max_rss_mb": m}`
(`ChildExit`) when the child has exited (negative rc: killed by that signal). `kill` from the parent, or the
parent closing its end, kills the child's process group.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, field_validator

from tradai_resources.workers.env import child_environment

STALE_ANSWER: Final[str] = "stale"
"""`error` a shared zygote answers when a module it preloaded changed on disk (it then stops serving)."""
KILL_COMMAND: Final[bytes] = b"kill"
"""What the parent writes on a job socket to have the zygote kill that job's child."""
MAX_REQUEST_BYTES: Final[int] = 1 << 20


class ForkRequest(BaseModel):
    """What the parent asks the zygote for: run one job file in a fresh child, with these files and env.

    `env` keeps only the allowlisted variables (`env.child_environment`), whatever it is given: a request
    travels to another process, and a secret (API key, webhook, credentials) never does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_path: str
    cwd: str
    stdout_path: str
    stderr_path: str
    env: dict[str, str]

    @field_validator("env")
    @classmethod
    def _allowlisted(cls, env: dict[str, str]) -> dict[str, str]:
        return child_environment(env)


@dataclass(frozen=True)
class ChildExit:
    """How a forked child ended: its exit code (negative: killed by that signal) and what it used."""

    returncode: int
    cpu_seconds: float
    max_rss_mb: float

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ChildExit:
        """The zygote's exit report for a child."""
        return cls(int(message["returncode"]), float(message["cpu_seconds"]), float(message["max_rss_mb"]))


def send_json(conn: socket.socket, message: dict[str, Any]) -> None:
    """Write `message` as one line; a peer that is gone is ignored (the child is reaped regardless)."""
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def read_request(conn: socket.socket, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The zygote's side: the request line on a job socket (blocking; ValueError past `limit` bytes)."""
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > limit:
            raise ValueError("request too long")
    return buffer


class LineReader:
    """The parent's side: reads the zygote's messages from a socket, each before a deadline."""

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
