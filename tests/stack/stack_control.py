"""Start and stop a whole production stack (`deploy/stack.sh`) for the stack tests and bench/stack.py.

The stack gets its own ports and folder, a loopback replay server of the recorded candles as its
exchange, and the model loop's story: BTC and ETH from 2020-10-12 to 2021-07-01, a 40-day holdout,
rollback limits no strategy meets, steps on one Celery worker, and the retraining job's small model
(TRADAI_RETRAINING_CONFIG) for what the daemon's drift sensor launches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus

from tests.model_loop_fixtures import retraining_config
from tradai_replay.server import ReplayServer

ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = ROOT / "deploy" / "stack.sh"
DEMO_CANDLES = ROOT / "demo_data" / "binance_spot_1h"
PAIRS = ("BTC/USDT", "ETH/USDT")
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class Stack:
    """The running stack: its resolved environment (deploy/stack.env) and where it keeps its state."""

    env: dict[str, str]
    home: Path

    @property
    def webserver_port(self) -> int:
        return int(self.env["TRADAI_WEBSERVER_PORT"])

    def instance(self) -> DagsterInstance:
        """The stack's Dagster instance (Postgres), as the daemon and webserver see it (the caller has
        the stack's environment)."""
        return DagsterInstance.get()

    def wait_for_run(self, run_id: str, timeout_s: float = 600) -> DagsterRunStatus:
        """Poll the instance until the run ends (bounded); the status it ended with."""
        deadline = time.monotonic() + timeout_s
        instance = self.instance()
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status in TERMINAL:
                return run.status
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish within {timeout_s}s")


def stack_env(overrides: dict[str, str]) -> dict[str, str]:
    """deploy/stack.env resolved by bash with `overrides`, as the stack's processes see it."""
    script = f"set -a && source {STACK_SCRIPT.parent / 'stack.env'} && env -0"
    out = subprocess.run(
        ["bash", "-c", script], env={**os.environ, **overrides}, cwd=ROOT, check=True, capture_output=True
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def run_script(command: str, env: dict[str, str], timeout_s: float = 900) -> None:
    """`deploy/stack.sh COMMAND` with `env`; its stderr's tail in the error when it fails."""
    result = subprocess.run(
        [str(STACK_SCRIPT), command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise AssertionError(f"deploy/stack.sh {command} failed:\n{result.stderr[-4000:]}")


@contextmanager
def model_loop_stack(
    home: Path, ports: dict[str, str], replay_port: int, *, reuse: bool = False
) -> Iterator[Stack]:
    """The whole stack on `ports` with its state in `home` (wiped first), over a replay server on
    `replay_port`; stopped on exit. With `reuse`, a stack already running there is used and left up."""
    with ReplayServer(DEMO_CANDLES, port=replay_port) as replay:
        overrides = {
            **ports,
            "TRADAI_STACK_HOME": str(home),
            "TRADAI_EXCHANGE_BASE_URL": replay.base_url,
            "TRADAI_PAIRS": ",".join(PAIRS),
            "TRADAI_HISTORY_START": "2020-10-12",
            # The model loop's story (tests/test_model_loop.py): history up to 2021-07-01, 40-day holdout.
            "TRADAI_HISTORY_END": "2021-07-01",
            "TRADAI_HOLDOUT_DAYS": "40",
            # Rollback limits no strategy meets, so the daemon's rollback sensor has a breach to act on.
            "TRADAI_ROLLBACK_MIN_SHARPE": "50",
            "TRADAI_ROLLBACK_MIN_TRADES": "1",
            "TRADAI_CELERY_WORKERS": "1",
            # Steps on the stack's Celery worker (Redis broker, outputs through S3), as in production.
            "TRADAI_EXECUTOR": "celery",
            # What the drift sensor launches: the model loop test's small model and 10-trade minimum.
            "TRADAI_RETRAINING_CONFIG": str(home / "retraining.json"),
        }
        env = stack_env(overrides)
        if not reuse:
            run_script("down", env)  # a stack left over by an interrupted session
            shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        (home / "retraining.json").write_text(json.dumps(retraining_config(holdout_days=40)))
        try:
            run_script("up", env)
            yield Stack(env=env, home=home)
        finally:
            if not reuse:
                run_script("down", env)
