"""How the study-workers of one pre-screened study tell each other what they explored and confirmed.

Each worker appends JSON lines to its own file in a folder of the study's workspace (one writer per file, no
lock) and reads the other workers' files from where it left off, whole lines only. A line is one message:
a parameter set the pre-screen scored (`set`, `record`), a Freqtrade confirmation (`confirmed`, `value`),
or the end of a worker's exploration (`done`, with its counts). The files live only as long as the
workspace; nothing here is durable or shared across machines (the Optuna storage is).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.05


class WorkerExchange:
    """Worker `index` of `workers` on the folder `folder` (created by the study's resource)."""

    def __init__(self, folder: str | Path, index: int, workers: int) -> None:
        self.folder = Path(folder)
        self.index = index
        self.workers = workers
        self._out = (self.folder / f"worker-{index}.jsonl").open("a", encoding="utf-8")
        self._offsets = {peer: 0 for peer in range(workers) if peer != index}

    def close(self) -> None:
        """Close this worker's file."""
        self._out.close()

    def publish(self, message: dict[str, Any]) -> None:
        """Append one message for the other workers (flushed at once; no fsync: nothing outlives the run)."""
        self._out.write(json.dumps(message, separators=(",", ":")) + "\n")
        self._out.flush()

    def receive(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """The other workers' messages not read yet, in each worker's order: (worker, message)."""
        for peer, offset in self._offsets.items():
            path = self.folder / f"worker-{peer}.jsonl"
            if not path.is_file():
                continue
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            self._offsets[peer] = offset + end
            for line in chunk[:end].splitlines():
                if line.strip():
                    yield peer, json.loads(line)

    def wait(self, ready: Callable[[], bool], absorb: Callable[[], None], what: str, limit: float) -> None:
        """Absorb messages until `ready()`; RuntimeError after `limit` seconds (a peer died or hangs; the
        study's resource stops every worker when one fails)."""
        deadline = time.monotonic() + limit
        absorb()
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"study-worker {self.index} waited {limit:g} s for {what}")
            time.sleep(POLL_SECONDS)
            absorb()
