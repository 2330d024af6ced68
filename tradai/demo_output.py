"""What the demo prints about a run: one line per result, a gate's refusal as a result with its reason, and
an unexpected error in full.

Dagster's console logger prints every event of an in-process run, and a blocking check that refuses
stops the steps behind it with a `DagsterAssetCheckFailedError` whose stack trace it prints too, although
the refusal is an outcome. The demo runs with `QUIET_LOGGERS` (the console logger only passes critical
messages; every event is still stored in the instance for the UI) and reads the outcome from the run's
events instead.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from dagster import DagsterEventType, ExecuteInProcessResult

QUIET_LOGGERS = {"console": {"config": {"log_level": "CRITICAL"}}}
"""Run config `loggers` section for demo runs: Dagster's console logger shows critical messages only."""
QUIET_RUN_CONFIG = {"loggers": QUIET_LOGGERS}
_CHECK_FAILED = "DagsterAssetCheckFailedError"


def refusals(result: ExecuteInProcessResult) -> list[str]:
    """One line per failed asset check of the run: which gate refused and why."""
    lines = []
    for event in result.all_events:
        if event.event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        check = event.asset_check_evaluation_data
        if check.passed:
            continue
        reason = (check.description or "no reason given").strip().splitlines()[0]
        said = reason if reason.lower().startswith("refused") else f"refused: {reason}"
        lines.append(f"{check.asset_key.to_user_string()} check {check.check_name} {said}")
    return lines


def unexpected_errors(result: ExecuteInProcessResult) -> list[str]:
    """The full error (stack trace and causes) of every step that failed for another reason than a
    blocking check's refusal."""
    errors = []
    for event in result.all_events:
        if event.event_type != DagsterEventType.STEP_FAILURE or event.step_failure_data is None:
            continue
        error = event.step_failure_data.error
        if error is None or error.cls_name == _CHECK_FAILED:
            continue
        errors.append(f"step {event.step_key} failed:\n{error.to_string()}")
    return errors


def outcome_lines(result: ExecuteInProcessResult) -> list[str]:
    """What to print after a run: refusals (one line each), then unexpected errors in full."""
    return refusals(result) + unexpected_errors(result)


@contextmanager
def progress(what: str, stream: TextIO | None = None, every: float = 1.0) -> Iterator[None]:
    """An in-place `… what (12 s)` line while a long step runs, cleared when it ends; nothing when the
    output is not a terminal (a log file gets only the results)."""
    out = stream or sys.stdout
    if not out.isatty():
        yield
        return
    started, done = time.perf_counter(), threading.Event()

    def tick() -> None:
        while not done.wait(every):
            out.write(f"\r  … {what} ({time.perf_counter() - started:.0f} s)")
            out.flush()

    thread = threading.Thread(target=tick, name="demo-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out.write("\r\033[K")
        out.flush()
