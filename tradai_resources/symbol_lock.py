"""One writer per ArcticDB symbol: an exclusive `flock` per library/symbol, shared by every thread and
process of a machine.

ArcticDB does not serialize writers of one symbol: two concurrent `update`s each read the latest version,
both write "the next" version, and one window is silently lost (seen on LMDB; S3 is no better). Dagster
pools keep two runs from writing a symbol at once; this lock is the resource-level guarantee under them
(a second writer, a script, a retried step). The kernel drops a `flock` when its holder dies, so a killed
writer never leaves a stale lock. It is reentrant within a thread, so a caller may hold it across a
check and the write that depends on it. Across machines (S3), only the Dagster pools apply.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

_HELD = threading.local()


def lock_root(uri: str) -> Path:
    """Folder of the lock files of the store at `uri`: inside the LMDB folder for `lmdb://` URIs, else
    a per-user temp folder named by a hash of the URI without its query (which may hold credentials)."""
    if uri.startswith("lmdb://"):
        return Path(uri.removeprefix("lmdb://").split("?", 1)[0]) / ".tradai-write-locks"
    digest = hashlib.sha256(uri.split("?", 1)[0].encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tradai-arcticdb-locks-{os.getuid()}" / digest


def _held() -> dict[tuple[str, str, str], int]:
    if not hasattr(_HELD, "counts"):
        _HELD.counts = {}
    return _HELD.counts


@contextmanager
def symbol_lock(root: Path, library: str, symbol: str) -> Iterator[None]:
    """Hold the write lock of `library/symbol` (blocking until the current writer is done)."""
    key = (str(root), library, symbol)
    held = _held()
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    path = root / quote(library, safe="") / f"{quote(symbol, safe='')}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for the current writer of %s/%s", library, symbol)
            fcntl.flock(fd, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            del held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def symbol_locks(root: Path, symbols: Iterable[tuple[str, str]]) -> Iterator[None]:
    """Hold the write locks of several `(library, symbol)`s, taken in sorted order (no deadlock)."""
    with ExitStack() as stack:
        for library, symbol in sorted(set(symbols)):
            stack.enter_context(symbol_lock(root, library, symbol))
        yield
