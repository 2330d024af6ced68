"""Benchmark figures land in one JSON file, merged by name, with commit and core count; the helpers every
benchmark shares run a command checked, start processes equally warm, interleave cases and compare trades
(issue #14)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.common import (
    Figure,
    assert_same_trades,
    child_env,
    interleaved,
    record,
    run_checked,
    trades_digest,
)


def test_figures_are_merged_by_name_with_medians_minimums_commit_and_cores(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    record([Figure.of("user path", [3.0, 1.0, 2.0], [2.0, 1.0, 4.0], "s", "target ≤ 1.5")], path)
    record([Figure.of("daemon", [4.0], [2.0], "s")], path)
    record([Figure.of("user path", [1.5, 1.0, 2.0], [1.0, 1.0, 1.0], "s")], path)

    rows = {row["name"]: row for row in json.loads(path.read_text())["figures"]}
    assert set(rows) == {"user path", "daemon"}
    latest = rows["user path"]
    assert (latest["ours"], latest["baseline"], latest["ratio"]) == (1.5, 1.0, 1.5)
    assert (latest["ours_min"], latest["baseline_min"], latest["repeats"]) == (1.0, 1.0, 3)
    assert latest["unit"] == "s" and latest["cores"] == os.cpu_count()
    assert latest["commit"] and rows["daemon"]["ratio"] == 2.0


def test_run_checked_returns_the_output_and_raises_naming_what_failed_with_its_output(tmp_path: Path) -> None:
    done = run_checked([sys.executable, "-c", "print('fine')"], tmp_path, os.environ, "a good command")
    assert done.stdout.strip() == "fine"
    failing = [sys.executable, "-c", "import sys; print('half done'); sys.exit('broken input')"]
    with pytest.raises(
        RuntimeError, match=r"(?s)the stock CLI on X failed \(exit 1\).*half done.*broken input"
    ):
        run_checked(failing, tmp_path, os.environ, "the stock CLI on X")


def test_benchmarked_processes_may_cache_bytecode_like_a_persons_shell() -> None:
    env = child_env({"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/bin"}, PYTHONPATH="/project")
    assert env == {"PATH": "/bin", "PYTHONPATH": "/project"}
    assert "PYTHONDONTWRITEBYTECODE" not in child_env()


def test_cases_take_turns_and_every_repetition_is_kept() -> None:
    calls: list[str] = []
    times = interleaved(
        {"cli": lambda: calls.append("cli"), "ours": lambda: calls.append("ours")},
        3,
        {"ours": lambda: calls.append("setup")},
    )
    assert calls == ["cli", "setup", "ours"] * 3
    assert [len(values) for values in times.values()] == [3, 3]


def test_different_trades_fail_the_comparison_equal_ones_pass() -> None:
    trades = [{"pair": "BTC/USDT", "open_rate": 1.5, "profit_abs": 0.25}]
    assert_same_trades(trades, trades_digest([dict(trades[0])]), "equal")
    with pytest.raises(AssertionError, match="differ"):
        assert_same_trades(trades, [{**trades[0], "profit_abs": 0.26}], "one trade's profit")
