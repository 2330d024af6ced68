"""A small demo instance for the UI tests, built through the same code paths as `make demo`, and the Dagster
webserver over it.

The demo's six pairs × 78 days of recorded candles go through the loopback replay server into ArcticDB
(the market-data job as one backfill run), then features of two pairs, a small model on them (the
bootstrapped champion), their drift scores and one backtest report — a couple of minutes instead of the
full demo's five. The webserver loads the project's own code location (`workspace.yaml`) with the same
`TRADAI_*` settings, on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from jobs.backtests import BACKTEST_JOB
from jobs.market_data import MARKET_DATA_JOB
from jobs.ml import FEATURES_JOB, TRAINING_JOB
from jobs.model_loop import DRIFT_JOB
from tradai.definitions import build_definitions
from tradai.demo import run_daily_job
from tradai_assets.keys import features_key
from tradai_assets.partitions import daily_partitions
from tradai_core.settings import DEFAULT_PAIRS, PROJECT_ROOT, TradAISettings, pair_slug

PAIRS = DEFAULT_PAIRS  # the demo's six: every strategy's YAML trades all of them
MODEL_PAIRS = ["BTC/USDT", "ETH/USDT"]  # features, the model, drift scores: two are enough to look at
HISTORY_START = date(2022, 5, 15)  # the longest feature window needs ~31 days; then ~27 days of training
HISTORY_END = date(2022, 8, 1)
HOLDOUT_DAYS = 20
STRATEGY = "RsiMeanReversion"
TRAINING_CONFIG = {
    "ops": {
        "training_set": {"config": {"holdout_days": HOLDOUT_DAYS, "pairs": MODEL_PAIRS}},
        "model": {"config": {"n_folds": 3, "min_train": 400, "num_boost_round": 60, "min_data_in_leaf": 100}},
    }
}


def ui_settings_env(home: Path, exchange_base_url: str) -> dict[str, str]:
    """The `TRADAI_*` variables of the instance: read by the tests and by the webserver's code location."""
    return {
        "TRADAI_HOME": str(home),
        "TRADAI_PAIRS": ",".join(PAIRS),
        "TRADAI_HISTORY_START": HISTORY_START.isoformat(),
        "TRADAI_HISTORY_END": HISTORY_END.isoformat(),
        "TRADAI_HOLDOUT_DAYS": str(HOLDOUT_DAYS),
        "TRADAI_EXCHANGE_BASE_URL": exchange_base_url,
    }


def settings_from(env: dict[str, str]) -> TradAISettings:
    """Settings of `ui_settings_env` (passed explicitly: the test process's environment stays as it is)."""
    return TradAISettings(
        home=Path(env["TRADAI_HOME"]),
        pairs=PAIRS,
        history_start=HISTORY_START,
        history_end=HISTORY_END,
        holdout_days=HOLDOUT_DAYS,
        exchange_base_url=env["TRADAI_EXCHANGE_BASE_URL"],
    )


def open_instance(dagster_home: Path) -> DagsterInstance:
    """A persistent instance in `dagster_home` configured by the project's dagster.yaml (SQLite storage)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    link = dagster_home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(PROJECT_ROOT / "dagster.yaml")
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home)))


def materialize_demo(settings: TradAISettings, instance: DagsterInstance) -> None:
    """Candles, features, a model, drift scores and one backtest, through the jobs `make demo` runs.

    Raises AssertionError naming the step and run when one fails, so a broken fixture is not mistaken for a
    UI problem.
    """
    run_daily_job(settings, instance, MARKET_DATA_JOB, "materializing candles")
    defs = build_definitions(settings)
    days = daily_partitions(settings).get_partition_keys()
    features = defs.resolve_job_def(FEATURES_JOB).execute_in_process(  # one backfill run, the model's pairs
        instance=instance,
        asset_selection=[features_key(pair) for pair in MODEL_PAIRS],
        tags={ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]},
        raise_on_error=False,
    )
    assert features.success, f"features run {features.run_id} failed"
    trained = defs.resolve_job_def(TRAINING_JOB).execute_in_process(
        instance=instance, run_config=TRAINING_CONFIG, raise_on_error=False
    )
    assert trained.success, f"training run {trained.run_id} failed"
    for pair in MODEL_PAIRS:  # the drift job as the drift schedule or the demo's loop runs it
        scored = defs.resolve_job_def(DRIFT_JOB).execute_in_process(
            instance=instance, partition_key=pair_slug(pair), raise_on_error=False
        )
        assert scored.success, f"drift run {scored.run_id} of {pair} failed"
    backtest = defs.resolve_job_def(BACKTEST_JOB).execute_in_process(
        instance=instance, partition_key=STRATEGY, raise_on_error=False
    )
    assert backtest.success, f"backtest run {backtest.run_id} of {STRATEGY} failed"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Webserver:
    """A running `dagster-webserver` process and where it serves."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until the webserver and its code location answer; fails with the log tail if it died or hung."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dagster-webserver exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as answer:
                    if answer.status == 200 and self.location_loaded():
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"dagster-webserver did not answer within {timeout_s:g} s:\n{self.log_tail()}")

    def location_loaded(self) -> bool:
        """True once the code location has loaded (its repository is listed over GraphQL)."""
        query = b'{"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"}'
        request = urllib.request.Request(
            f"{self.url}/graphql", data=query, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            found = json.loads(answer.read())["data"]["repositoriesOrError"]
        return bool(found.get("nodes"))

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """TERM the process group, wait, then KILL: the code-location subprocess goes too."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


def start_webserver(env: dict[str, str], dagster_home: Path, log: Path) -> Webserver:
    """`dagster-webserver` on 127.0.0.1 and a free port over the project's workspace and `dagster_home`."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TRADAI_")}
    if "TRADAI_WORKER_DIR" in os.environ:  # the suite's private shared-worker folder
        inherited["TRADAI_WORKER_DIR"] = os.environ["TRADAI_WORKER_DIR"]
    full_env = {**inherited, **env, "DAGSTER_HOME": str(dagster_home)}
    command = [
        *(str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(PROJECT_ROOT / "workspace.yaml")),
        *("-h", "127.0.0.1", "-p", str(port)),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Webserver(process=process, url=f"http://127.0.0.1:{port}", log=log)
