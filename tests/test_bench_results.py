"""Benchmark figures land in one JSON file, merged by name, with commit and core count (issue #14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.common import Figure, record


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
