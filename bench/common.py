"""Timing helpers shared by the benchmarks: repeated runs, medians, a printed table."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_CANDLES = PROJECT_ROOT.parent / "shared" / "data" / "binance_spot_1h"
DEMO_CANDLES = PROJECT_ROOT / "demo_data" / "binance_spot_1h"


def candles_dir() -> Path:
    """The 12-pair recorded history when `../shared` is beside the clone, else the bundled demo slice."""
    return SHARED_CANDLES if SHARED_CANDLES.is_dir() else DEMO_CANDLES


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked process: `base` (default this process's) plus `extra`, without
    `PYTHONDONTWRITEBYTECODE`. With it set (some shells and CI runners set it) no process caches bytecode,
    so every process — ours and the stock CLI's alike — compiles each imported module from source on every
    start (seconds for Dagster, pandas, ccxt, MLflow), and the figures measure the compiler. Without it the
    untimed warm-up writes the caches, and both sides start equally warm, as in a person's shell."""
    env = {key: value for key, value in (os.environ if base is None else base).items()}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def run_checked(
    argv: Sequence[str | os.PathLike[str]],
    cwd: Path,
    env: Mapping[str, str],
    what: str,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion (output captured); raise with `what` and the output's tail if it fails."""
    done = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done


def interleaved(
    cases: Mapping[str, Callable[[], object]],
    repeats: int,
    setups: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of every repetition of each case, the cases taking turns (A B A B …) so load from
    other processes hits them alike; each case's optional setup runs untimed right before it."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            setup = (setups or {}).get(name)
            if setup is not None:
                setup()
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return times


def trades_digest(trades: object) -> str:
    """A short fingerprint of Freqtrade's trade list (its JSON, keys sorted): equal digests, equal trades."""
    encoded = json.dumps(trades, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def exported_stats(user_data_dir: Path, strategy: str) -> dict[str, object]:
    """The statistics of the stock CLI's last exported backtest (`--export trades`) in `user_data_dir`."""
    results = user_data_dir / "backtest_results"
    archive = results / json.loads((results / ".last_result.json").read_text())["latest_backtest"]
    with zipfile.ZipFile(archive) as zipped:
        return json.loads(zipped.read(archive.with_suffix(".json").name))["strategy"][strategy]


def stock_cli_workspace(root: Path, name: str, run: Any, candles: Mapping[str, Any], api: object) -> Any:
    """The stock CLI's workspace for strategy `name` in `root` (candle files, strategy, config), its
    exchange pointed at the loopback replay server's `api` URLs: written once, outside any timing."""
    from strategies.validation import STRATEGIES_DIR, validate_strategy
    from tradai_resources.freqtrade_workspace import prepare_workspace

    checked = validate_strategy(name, STRATEGIES_DIR)
    assert checked.config is not None and checked.path is not None
    workspace = prepare_workspace(root, Path(checked.path), checked.config, run, dict(candles))
    config = json.loads(workspace.config_path.read_text())
    config["exchange"]["ccxt_config"] = {"urls": {"api": api}}
    workspace.config_path.write_text(json.dumps(config, indent=2))
    return workspace


def stock_cli_backtest(name: str, timerange: str, workspace: Any) -> dict[str, object]:
    """`python -m freqtrade backtesting ...` in `workspace`, as a user types it (trades exported); the
    statistics it exported."""
    run_checked(
        [sys.executable, "-m", "freqtrade", *workspace.backtest_argv(name, timerange, export="trades")],
        workspace.root,
        child_env(PYTHONPATH=str(PROJECT_ROOT)),
        f"the stock CLI on {name}",
    )
    return exported_stats(workspace.user_data_dir, name)


def assert_same_trades(ours: object, cli: object, what: str) -> None:
    """Our trades equal the stock CLI's, trade for trade (compared by fingerprint when given as one)."""
    mine = ours if isinstance(ours, str) else trades_digest(ours)
    theirs = cli if isinstance(cli, str) else trades_digest(cli)
    if mine != theirs:
        raise AssertionError(f"{what}: our trades differ from the stock CLI's ({mine} != {theirs})")


def median_seconds(
    fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None
) -> float:
    """Median wall time of `fn` over `repeats` runs, each after an untimed `setup`."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    """Print `(case, ours_s, baseline_s, note)` rows with the ratio ours / baseline."""
    print(f"\n## {title}")
    print(f"| {'case':<58} | {'ours (s)':>9} | {'baseline (s)':>12} | {'ratio':>6} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 14}|{'-' * 8}|")
    for case, ours, base, note in rows:
        print(f"| {case:<58} | {ours:>9.3f} | {base:>12.3f} | {ours / base:>6.2f} |  {note}")
    # into the results file too (these rows carry a median only: minimum = median, repeats 0 = not kept)
    record(
        [
            Figure(f"{title}: {case.strip()}", ours, base, "s", ours, base, 0, note)
            for case, ours, base, note in rows
        ]
    )


RESULTS_FILE = PROJECT_ROOT / ".tradai" / "bench" / "results.json"
"""Every figure of the benchmarks, merged by name (git-ignored state folder)."""


class Figure(NamedTuple):
    """One benchmark figure: medians of interleaved repetitions (and their minimums), ours / baseline."""

    name: str
    ours: float
    baseline: float
    unit: str
    ours_min: float
    baseline_min: float
    repeats: int
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @classmethod
    def of(cls, name: str, ours: list[float], baseline: list[float], unit: str, note: str = "") -> Figure:
        """The figure of repeated measurements (median and minimum of each side)."""
        return cls(
            name,
            statistics.median(ours),
            statistics.median(baseline),
            unit,
            min(ours),
            min(baseline),
            min(len(ours), len(baseline)),
            note,
        )


def report_figures(title: str, figures: list[Figure]) -> None:
    """Print figures as a table: median and minimum of each side, and the ratio of medians."""
    print(f"\n## {title}")
    print(f"| {'case':<78} | {'ours med/min':>15} | {'baseline med/min':>17} | {'ratio':>6} | unit |")
    print(f"|{'-' * 80}|{'-' * 17}|{'-' * 19}|{'-' * 8}|------|")
    for f in figures:
        print(
            f"| {f.name:<78} | {f.ours:>7.2f}/{f.ours_min:<7.2f} | {f.baseline:>8.2f}/{f.baseline_min:<8.2f} "
            f"| {f.ratio:>6.2f} | {f.unit} |  {f.note}"
        )


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def record(figures: list[Figure], path: Path = RESULTS_FILE) -> Path:
    """Merge `figures` into the JSON results file (a figure replaces the one of the same name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, dict[str, object]] = {}
    if path.is_file():
        existing = {row["name"]: row for row in json.loads(path.read_text(encoding="utf-8"))["figures"]}
    commit, cores = _commit(), os.cpu_count()
    for f in figures:
        existing[f.name] = {
            "name": f.name,
            "ours": round(f.ours, 4),
            "baseline": round(f.baseline, 4),
            "ratio": round(f.ratio, 4),
            "unit": f.unit,
            "ours_min": round(f.ours_min, 4),
            "baseline_min": round(f.baseline_min, 4),
            "repeats": f.repeats,
            "note": f.note,
            "commit": commit,
            "cores": cores,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"figures": list(existing.values())}, indent=2), encoding="utf-8")
    tmp.replace(path)
    print(f"(figures recorded in {path})")
    return path
