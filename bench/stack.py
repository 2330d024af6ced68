"""The production stack's figures (issue #12 item 4), measured on a stack this benchmark starts and stops
itself (`deploy/stack.sh` on its own ports and folder, .tradai/stack-bench): `uv run python -m bench stack`.

1. The demo's ingestion (6 pairs x 730 days, one single-run backfill, in process) with Dagster's instance
   storage on Postgres (deploy/dagster.yaml, a database of its own on the stack's server) against SQLite
   (the one-machine default): wall time, CPU (the Postgres server's included on its side) and the cost
   per Dagster event, over interleaved repetitions. ArcticDB is LMDB in a temp folder every time, so only
   the instance storage differs; every run must store identical candles and log the same events.
2. The daemon-driven model loop: from the first severe drift score to the promotion decision (the
   `champion_model` audit entry written by the run the promotion sensor launched), against the time
   the two runs themselves took (retraining, then promotion). The difference is what the daemon adds:
   sensor ticks, the run queue, run workers starting.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psycopg2
import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bench.common import DEMO_CANDLES, PROJECT_ROOT, Figure, record, report, report_figures
from jobs.market_data import MARKET_DATA_JOB
from jobs.model_loop import PROMOTE_JOB, RETRAINING_JOB
from tests.stack.model_loop_scene import metadata, runs_of, set_the_scene, wait_until
from tests.stack.stack_control import Stack, model_loop_stack
from tradai_core.settings import TradAISettings
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource

BENCH_HOME = PROJECT_ROOT / ".tradai" / "stack-bench"
BENCH_PORTS = {
    "TRADAI_PG_PORT": "25532",
    "TRADAI_REDIS_PORT": "26479",
    "TRADAI_S3_PORT": "25100",
    "TRADAI_MLFLOW_PORT": "25600",
    "TRADAI_CODE_SERVER_PORT": "24366",
    "TRADAI_WEBSERVER_PORT": "24100",
}
"""Apart from `make stack-up` (deploy/stack.env) and the stack tests (tests/stack/conftest.py)."""
REPLAY_PORT = 28865
INGEST_DB = "bench_ingest"
PAIRS = tuple(sorted(p.name.split("-")[0].replace("_", "/") for p in DEMO_CANDLES.glob("*-1h.parquet")))


@contextmanager
def environment(values: dict[str, str], drop: tuple[str, ...] = ()) -> Iterator[None]:
    """`values` set and `drop` unset in os.environ for the block, restored after."""
    saved = dict(os.environ)
    os.environ.update(values)
    for name in drop:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ingest(
    instance: DagsterInstance, base_url: str, home: Path, days: int | None = None
) -> tuple[float, int]:
    """Seconds for the demo's market-data backfill (its first `days` days, else all) on `instance`, and
    the events it logged."""
    from tradai.definitions import build_definitions
    from tradai_assets.partitions import daily_partitions

    settings = TradAISettings(
        home=home,
        pairs=PAIRS,
        exchange_base_url=base_url,
        history_start="2020-10-12",
        history_end="2022-10-12",
        arcticdb_uri=f"lmdb://{home / 'arcticdb'}",
        mlflow_uri=f"sqlite:///{home / 'mlflow.db'}",
    )
    keys = daily_partitions(settings).get_partition_keys()[:days]
    job = build_definitions(settings).resolve_job_def(MARKET_DATA_JOB)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        # the console would print every event's DEBUG line on both sides; the events still go to storage
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=True,
    )
    elapsed = time.perf_counter() - started
    return elapsed, len(instance.all_logs(result.run_id))


def _ticks(pid: int, children: bool) -> int:
    """CPU clock ticks of process `pid` (user + system; with `children`, also its reaped children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(fields[i]) for i in ((11, 12, 13, 14) if children else (11, 12)))


def postgres_cpu_seconds(stack: Stack) -> float:
    """CPU seconds the stack's Postgres server has used so far: the postmaster, the backends it reaped
    and the ones still running (from /proc; the server runs as another user on this machine)."""
    datadir = Path((stack.home / "postgres.datadir").read_text().strip())
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    ticks = _ticks(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                ticks += _ticks(int(stat.parent.name), children=False)
        except (OSError, ValueError):
            continue  # a backend that ended while we looked
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process (every thread, the in-process replay server included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def assert_same_candles(one: Path, other: Path) -> int:
    """The candles both ingestions stored, pair by pair, are identical; how many there are."""
    a, b = ArcticDBResource(uri=f"lmdb://{one}"), ArcticDBResource(uri=f"lmdb://{other}")
    rows = 0
    for pair in PAIRS:
        left, right = a.read("binance", "1h", pair).candles, b.read("binance", "1h", pair).candles
        pd.testing.assert_frame_equal(left, right)
        rows += len(left)
    assert rows > 6 * 700 * 24, f"only {rows} candles stored"
    return rows


def fresh_database(env: dict[str, str], name: str) -> None:
    """Drop and create database `name` on the stack's Postgres (the benchmark's own instance storage)."""
    conn = psycopg2.connect(
        host=env["TRADAI_PG_HOST"], port=env["TRADAI_PG_PORT"], user=env["TRADAI_PG_USER"], dbname="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


INGEST_REPEATS = 2
"""Interleaved repetitions of each side (SQLite, Postgres, SQLite, Postgres): load that changes during the
benchmark falls on both sides alike."""


def ingestion(stack: Stack, repeats: int = INGEST_REPEATS) -> None:
    """Print the demo's ingestion on Postgres instance storage against the same on SQLite: wall time,
    CPU (this process, plus the Postgres server for the Postgres side) and time per event."""
    pg = {k: v for k, v in stack.env.items() if k.startswith("TRADAI_PG_")}
    storage = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())["storage"]
    storage["postgres"]["postgres_db"]["db_name"] = INGEST_DB
    wall: dict[str, list[float]] = {"sqlite": [], "pg": []}
    cpu: dict[str, list[float]] = {"sqlite": [], "pg": []}
    per_event: dict[str, list[float]] = {"sqlite": [], "pg": []}
    events: set[int] = set()
    with (
        environment(pg, drop=("TRADAI_EXECUTOR", "TRADAI_IO_BUCKET", "DAGSTER_HOME")),
        ReplayServer(DEMO_CANDLES) as replay,
        tempfile.TemporaryDirectory() as tmp,
    ):
        root = Path(tmp)
        (root / "warm").mkdir()
        with DagsterInstance.local_temp(str(root / "warm")) as warm:  # imports, first connections
            ingest(warm, replay.base_url, root / "warm-home", days=2)
        stored: dict[str, Path] = {}
        for rep in range(repeats):
            for side in ("sqlite", "pg"):
                folder = root / f"{side}-{rep}"
                folder.mkdir()
                cpu_before = own_cpu_seconds() + (postgres_cpu_seconds(stack) if side == "pg" else 0.0)
                if side == "sqlite":
                    with DagsterInstance.local_temp(str(folder)) as sqlite:
                        seconds, logged = ingest(sqlite, replay.base_url, folder / "home")
                else:
                    fresh_database(stack.env, INGEST_DB)
                    (folder / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage}))
                    with DagsterInstance.from_config(str(folder)) as postgres:
                        seconds, logged = ingest(postgres, replay.base_url, folder / "home")
                cpu_after = own_cpu_seconds() + (postgres_cpu_seconds(stack) if side == "pg" else 0.0)
                wall[side].append(seconds)
                cpu[side].append(cpu_after - cpu_before)
                per_event[side].append(1000 * seconds / logged)
                events.add(logged)
                if rep > 0:  # the repetition stored exactly what the first did
                    assert_same_candles(stored[side], folder / "home" / "arcticdb")
                stored.setdefault(side, folder / "home" / "arcticdb")
        rows = assert_same_candles(stored["sqlite"], stored["pg"])
    assert len(events) == 1, f"the runs logged different numbers of events: {sorted(events)}"
    note = f"{events.pop()} events each run, identical candles ({rows}), SQLite then Postgres x{repeats}"
    title = (
        f"Demo ingestion ({len(PAIRS)} pairs x 730 days, one run): instance storage Postgres (ours) vs "
        "SQLite (baseline)"
    )
    figures = [
        Figure.of("whole run, wall", wall["pg"], wall["sqlite"], "s", note),
        Figure.of(
            "whole run, CPU (bench process; + Postgres server for ours)", cpu["pg"], cpu["sqlite"], "s", note
        ),
        Figure.of("per event, wall", per_event["pg"], per_event["sqlite"], "ms", "run time / events logged"),
    ]
    report_figures(title, figures)
    record([f._replace(name=f"{title}: {f.name}") for f in figures])


def model_loop(stack: Stack) -> None:
    """Print the daemon-driven loop's wall time from the first severe drift score to the promotion
    decision, against the time its two runs took."""
    from tradai.definitions import build_definitions

    instance = stack.instance()
    set_the_scene(stack, build_definitions())
    scores = instance.fetch_materializations(AssetKey("drift_score"), limit=10).records
    scored_at = min(record.timestamp for record in scores)
    retraining = wait_until(
        "the retraining run the drift sensor requests",
        lambda: next(iter(runs_of(instance, RETRAINING_JOB, "drift")), None),
        600,
    )
    assert stack.wait_for_run(retraining.run_id, timeout_s=1800) == DagsterRunStatus.SUCCESS
    decided = wait_until(
        "the promotion sensor's run",
        lambda: next(iter(runs_of(instance, PROMOTE_JOB, "comparison")), None),
        600,
    )
    assert stack.wait_for_run(decided.run_id, timeout_s=600) == DagsterRunStatus.SUCCESS
    comparison = metadata(stack, retraining.run_id, "model_comparison")
    audit = metadata(stack, decided.run_id, "champion_model")
    assert audit["decision"] == comparison["decision"]  # the decision the comparison made, acted on
    [decision] = [
        e
        for e in instance.all_logs(decided.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        if e.dagster_event is not None and e.dagster_event.asset_key == AssetKey("champion_model")
    ]
    records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
    first, second = records[retraining.run_id], records[decided.run_id]
    assert all(t is not None for t in (first.start_time, first.end_time, second.start_time, second.end_time))
    wall = decision.timestamp - scored_at
    in_runs = (first.end_time - first.start_time) + (second.end_time - second.start_time)  # type: ignore[operator]
    report(
        "Daemon-driven model loop: first severe drift score -> promotion decision (ours) vs the time its "
        "two runs took (baseline)",
        [
            (
                "drift score -> decision",
                wall,
                in_runs,
                f"decision {audit['decision']} ({audit['action']}); sensor to retraining run "
                f"{first.create_timestamp.timestamp() - scored_at:.0f} s, queue "
                f"{first.start_time - first.create_timestamp.timestamp():.0f} s, retraining end to "
                f"promotion run {second.create_timestamp.timestamp() - first.end_time:.0f} s",  # type: ignore[operator]
            )
        ],
    )


def run() -> None:
    """Start a stack, print both measurements, stop the stack."""
    with model_loop_stack(BENCH_HOME, BENCH_PORTS, REPLAY_PORT) as stack:
        ingestion(stack)
        with environment(stack.env):
            model_loop(stack)


if __name__ == "__main__":
    run()
