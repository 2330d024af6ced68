"""Nothing decides on the wall clock behind the platform clock's back (issue #15 item 1).

Every `datetime.now`/`date.today`/`time.time` call in the platform's packages is listed here with why it
may read real time; a new one fails this test until it asks `TradAISettings.clock` instead (or is listed
with a reason a reviewer accepts).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tradai_core", "strategies", "tradai_resources", "tradai_assets", "jobs", "sensors", "tradai")

ALLOWED: dict[tuple[str, str], str] = {
    ("tradai_core/clock.py", "now"): "the clock itself: real time when no moment is pinned",
    (
        "tradai_core/training.py",
        "training_window",
    ): "fallback; callers pass the clock's end",
    (
        "tradai_assets/features.py",
        "days_without_candles",
    ): "fallback; the asset passes the clock",
    ("tradai_assets/model_lifecycle.py", "apply_champion_change"): "fallback; the asset passes the clock",
    (
        "tradai_assets/hyperopt.py",
        "_log_to_mlflow",
    ): "when the study was recorded (no decision)",
    ("tradai_resources/notifier.py", "<lambda>"): "when a notification was sent",
    ("tradai_resources/mlflow_records.py", "log_metrics"): "MLflow's own metric timestamp",
    ("tradai/demo_output.py", "tick_log_key"): "a unique tick id for the demo's sensor ticks",
}

WALL_CLOCK = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("time", "time")}


def wall_clock_reads() -> set[tuple[str, str]]:
    """(file, enclosing function) of every wall-clock read in the platform's packages."""
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for scope in ast.walk(tree):
                if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    continue
                name = scope.name if not isinstance(scope, ast.Lambda) else "<lambda>"
                for node in ast.walk(scope):
                    func = node.func if isinstance(node, ast.Call) else None
                    if (
                        isinstance(func, ast.Attribute)
                        and isinstance(func.value, ast.Name)
                        and (func.value.id, func.attr) in WALL_CLOCK
                    ):
                        found.add((str(path.relative_to(ROOT)), name))
    return found


def test_every_wall_clock_read_is_listed_with_its_reason() -> None:
    unlisted = wall_clock_reads() - set(ALLOWED)
    assert not unlisted, f"wall-clock reads that should ask TradAISettings.clock: {sorted(unlisted)}"


def test_the_list_holds_no_stale_entry() -> None:
    assert set(ALLOWED) <= wall_clock_reads()
