"""One real production stack per test session (marker `stack`): `deploy/stack.sh up` on its own ports and
folder (.tradai/stack-test), pointed at a loopback replay server of the recorded candles; `down` at the end.

Each test's process gets the stack's environment for its duration (DAGSTER_HOME, Postgres, AWS endpoint
and test credentials of moto), so `DagsterInstance.get()` is the stack's instance and boto3 talks to
the stack's moto.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from tests.model_loop_fixtures import retraining_config
from tradai_replay.server import ReplayServer

ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = ROOT / "deploy" / "stack.sh"
DEMO_CANDLES = ROOT / "demo_data" / "binance_spot_1h"
PAIRS = ("BTC/USDT", "ETH/USDT")
# Ports apart from a developer's `make stack-up` (deploy/stack.env defaults), so both can run at once.
TEST_PORTS = {
    "TRADAI_PG_PORT": "56432",
    "TRADAI_REDIS_PORT": "57379",
    "TRADAI_S3_PORT": "56000",
    "TRADAI_MLFLOW_PORT": "56500",
    "TRADAI_CODE_SERVER_PORT": "55266",
    "TRADAI_WEBSERVER_PORT": "54000",
}
REPLAY_PORT = 58765
REUSE = os.environ.get("TRADAI_STACK_TEST_REUSE") == "1"
"""Developer switch: use (and leave running) a stack already started with this module's settings."""
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
        """The stack's Dagster instance (Postgres), as the daemon and webserver see it."""
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
    result = subprocess.run(
        [str(STACK_SCRIPT), command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise AssertionError(f"deploy/stack.sh {command} failed:\n{result.stderr[-4000:]}")


@pytest.fixture(scope="package")
def running_stack() -> Iterator[Stack]:
    """The whole stack, started once for the tests of this package (stopped when they are done, so the
    rest of a `make test-all` session runs without it), over a replay server of the recorded candles."""
    home = ROOT / ".tradai" / "stack-test"
    with ReplayServer(DEMO_CANDLES, port=REPLAY_PORT) as replay:
        overrides = {
            **TEST_PORTS,
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
        if not REUSE:
            run_script("down", env)  # a stack left over by an interrupted session
            shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        (home / "retraining.json").write_text(json.dumps(retraining_config(holdout_days=40)))
        try:
            run_script("up", env)
            yield Stack(env=env, home=home)
        finally:
            if not REUSE:
                run_script("down", env)


@pytest.fixture
def stack(running_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The running stack, with its environment in this test's process (restored after the test)."""
    for key, value in running_stack.env.items():
        monkeypatch.setenv(key, value)
    return running_stack
