"""The production stack's figures: the demo's ingestion (6 pairs × 730 days, one single-run backfill) on
Dagster instance storage in SQLite (the one-machine default) vs Postgres (deploy/dagster.yaml), and the
cost per Dagster event each pays. ArcticDB is LMDB in a temp folder both times, so only the instance
storage differs. Needs a running stack (`make stack-up`); runs alone: `uv run python -m bench.stack`.

Not measured yet: the wall time of the daemon-driven model loop (drift score → promotion decision).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from dagster import DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bench.common import DEMO_CANDLES, PROJECT_ROOT, report
from jobs.market_data import MARKET_DATA_JOB
from tradai_core.settings import TradAISettings
from tradai_replay.server import ReplayServer


def stack_env() -> dict[str, str]:
    """deploy/stack.env as the running stack resolved it (ports overridable from the environment)."""
    out = subprocess.run(
        ["bash", "-c", "set -a && source deploy/stack.env && env -0"],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def ingest(instance: DagsterInstance, base_url: str, home: Path) -> tuple[float, int]:
    """Seconds for the demo's market-data backfill on `instance`, and the events it logged."""
    from tradai.definitions import build_definitions
    from tradai_assets.partitions import daily_partitions

    settings = TradAISettings(
        home=home,
        exchange_base_url=base_url,
        history_start="2020-10-12",
        history_end="2022-10-12",
        arcticdb_uri=f"lmdb://{home / 'arcticdb'}",
        mlflow_uri=f"sqlite:///{home / 'mlflow.db'}",
    )
    keys = daily_partitions(settings).get_partition_keys()
    job = build_definitions(settings).resolve_job_def(MARKET_DATA_JOB)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=True,
    )
    elapsed = time.perf_counter() - started
    return elapsed, len(instance.all_logs(result.run_id))


def run() -> None:
    """Print the ingestion on Postgres against the same on SQLite, and the cost per event."""
    env = stack_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith(("TRADAI_PG_", "TRADAI_DAGSTER_DB"))})
    os.environ.pop("TRADAI_IO_BUCKET", None)  # in-process run: no IO manager needed
    postgres_config = yaml.safe_load((Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    with ReplayServer(DEMO_CANDLES) as replay, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sqlite").mkdir()
        with DagsterInstance.local_temp(str(root / "sqlite")) as sqlite:
            sqlite_s, sqlite_events = ingest(sqlite, replay.base_url, root / "a")
        (root / "pg").mkdir()
        (root / "pg" / "dagster.yaml").write_text(yaml.safe_dump({"storage": postgres_config["storage"]}))
        with DagsterInstance.from_config(str(root / "pg")) as postgres:
            postgres_s, postgres_events = ingest(postgres, replay.base_url, root / "b")
    report(
        "Demo ingestion (6 pairs x 730 days, one run): instance storage Postgres vs SQLite",
        [
            ("whole run", postgres_s, sqlite_s, f"{postgres_events} / {sqlite_events} events"),
            (
                "per event (ms)",
                1000 * postgres_s / postgres_events,
                1000 * sqlite_s / sqlite_events,
                "run time / events logged",
            ),
        ],
    )


if __name__ == "__main__":
    run()
