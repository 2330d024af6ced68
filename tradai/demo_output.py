"""What the demo prints about a run: one line per result, a gate's refusal as a result with its reason, and
an unexpected error in full.

Dagster's console logger prints every event of an in-process run, and a blocking check that refuses
stops the steps behind it with a `DagsterAssetCheckFailedError` whose stack trace it prints too, although
the refusal is an outcome. The demo runs with `QUIET_LOGGERS` (the console logger only passes critical
messages; every event is still stored in the instance for the UI) and reads the outcome from the run's
events instead.

The demo also ticks the loop's sensors itself (`build_sensor_context`), and a sensor's `context.log` prints
each decision at INFO through its own console handler, whose level Dagster does not let a caller set.
`quiet_sensor_context` gives those ticks a logger that prints warnings and errors only and keeps every
record in the instance's compute logs under the tick's log key, as a daemon tick does.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    SensorEvaluationContext,
)
from dagster._core.definitions.instigation_logger import InstigationLogger
from dagster._core.execution.build_resources import wrap_resources_for_execution
from dagster._utils.log import create_console_logger

QUIET_LOGGERS = {"console": {"config": {"log_level": "CRITICAL"}}}
"""Run config `loggers` section for demo runs: Dagster's console logger shows critical messages only."""
QUIET_RUN_CONFIG = {"loggers": QUIET_LOGGERS}
_CHECK_FAILED = "DagsterAssetCheckFailedError"


DEMO_REPOSITORY = "tradai-demo"
"""Repository name of the demo's own sensor ticks (the first part of their compute-log key)."""


class QuietSensorContext(SensorEvaluationContext):
    """A sensor context whose `context.log` prints only records at `console_level` or above, and captures
    every record in the instance's compute logs under `log_key` (Dagster's own context always prints at
    INFO)."""

    def __init__(self, *, console_level: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._console_level = console_level

    @property
    def log(self) -> logging.Logger:
        if self._logger is None:
            self._logger = self._exit_stack.enter_context(
                InstigationLogger(
                    self.log_key,
                    self.instance,
                    repository_name=DEMO_REPOSITORY,
                    instigator_name=self._sensor_name,
                    console_logger=create_console_logger("dagster", self._console_level),
                )
            )
        return cast("logging.Logger", self._logger)


def quiet_sensor_context(
    *,
    instance: DagsterInstance,
    sensor_name: str,
    cursor: str | None = None,
    resources: Mapping[str, object] | None = None,
    definitions: Definitions | None = None,
    console_level: int = logging.WARNING,
) -> SensorEvaluationContext:
    """What `build_sensor_context` builds, for a tick the demo runs itself: its decisions (INFO) go to the
    instance's compute logs only (key `tradai-demo/<sensor>/<UTC time>`, see `tick_log_key`), its
    warnings and errors to the console too. Use it as a context manager, so the captured log is closed."""
    return QuietSensorContext(
        console_level=console_level,
        instance_ref=None,
        instance=instance,
        cursor=cursor,
        log_key=tick_log_key(sensor_name),
        repository_name=DEMO_REPOSITORY,
        sensor_name=sensor_name,
        resources=wrap_resources_for_execution(resources),
        definitions=definitions,
    )


def tick_log_key(sensor_name: str, at: datetime | None = None) -> Sequence[str]:
    """Compute-log key of one demo tick of `sensor_name` (microseconds: two ticks never share one)."""
    return [DEMO_REPOSITORY, sensor_name, f"{at or datetime.now(tz=UTC):%Y%m%d_%H%M%S_%f}"]


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
