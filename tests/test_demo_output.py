"""The demo's output machinery: a refusing gate is one line with its reason (no stack trace), an unexpected
error shows in full, and MLflow's model logging and loading print no progress bars or warnings."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from dagster import AssetCheckResult, AssetCheckSpec, MaterializeResult, asset, materialize

from tradai.demo_output import QUIET_RUN_CONFIG, outcome_lines, progress, refusals, unexpected_errors
from tradai_resources.mlflow_tracking import MLflowResource

NOISE = re.compile(
    r"Traceback|DagsterAssetCheckFailedError|Downloading artifacts|\d+%\|"
    r"|Detected uv project|Failed to resolve installed pip version"
)


@asset(check_specs=[AssetCheckSpec("overfitting_gate", asset="study", blocking=True)])
def study() -> MaterializeResult:
    return MaterializeResult(
        check_results=[
            AssetCheckResult(
                check_name="overfitting_gate", passed=False, description="DSR 0.41 < 0.95: likely overfit"
            )
        ]
    )


@asset(deps=[study])
def tuned_parameters() -> None:
    """Only runs when the gate passes."""


@asset
def crashing() -> None:
    raise RuntimeError("engine crash on purpose")


def test_a_refusing_gate_is_one_line_with_its_reason_and_no_stack_trace(
    capfd: pytest.CaptureFixture[str],
) -> None:
    result = materialize([study, tuned_parameters], run_config=QUIET_RUN_CONFIG, raise_on_error=False)
    captured = capfd.readouterr()
    assert not result.success
    assert outcome_lines(result) == ["study check overfitting_gate refused: DSR 0.41 < 0.95: likely overfit"]
    assert not NOISE.search(captured.out + captured.err), (captured.out + captured.err)[-2000:]


def test_an_unexpected_error_is_shown_in_full(capfd: pytest.CaptureFixture[str]) -> None:
    result = materialize([crashing], run_config=QUIET_RUN_CONFIG, raise_on_error=False)
    capfd.readouterr()
    assert refusals(result) == []
    [error] = unexpected_errors(result)
    assert "RuntimeError: engine crash on purpose" in error
    assert 'raise RuntimeError("engine crash on purpose")' in error  # the stack, down to the line


def test_logging_and_loading_a_model_prints_no_progress_bar_or_requirement_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"  # a uv project, as the demo's working directory is
    project.mkdir()
    for name in ("uv.lock", "pyproject.toml"):
        shutil.copy(Path(__file__).parents[1] / name, project / name)
    monkeypatch.chdir(project)
    rng = np.random.default_rng(7)
    features = rng.normal(size=(200, 3))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 5},
        lgb.Dataset(features, (features[:, 0] > 0).astype(int)),
        num_boost_round=5,
    )
    resource = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_prefix="test")
    capfd.readouterr()
    with resource.start_run("models", "fit", dagster_run_id="demo") as run:
        run.log_model(booster, "model", flavor="lightgbm")
        run.log_dict({"a": 1}, "report/a.json")
    version = resource.register_model(run.run_id, "model", "demo-model")
    resource.set_alias("demo-model", "champion", version)
    model = resource.load_model("demo-model", "champion", flavor="lightgbm")
    assert resource.load_dict(run.run_id, "report/a.json") == {"a": 1}
    captured = capfd.readouterr()
    assert model.predict(features[:2]).shape == (2,)
    assert not NOISE.search(captured.out + captured.err), (captured.out + captured.err)[-2000:]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_line_rewritten_in_place_on_a_terminal_and_nothing_in_a_log() -> None:
    log, terminal = io.StringIO(), Terminal()
    for stream in (log, terminal):
        with progress("backtesting", stream=stream, every=0.05):
            time.sleep(0.3)
    assert log.getvalue() == ""
    text = terminal.getvalue()
    assert "\n" not in text and text.count("\r  … backtesting (") >= 2
    assert text.endswith("\r\033[K")  # the line is cleared before the result is printed
