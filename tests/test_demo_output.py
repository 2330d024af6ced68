"""The demo's output machinery: a refusing gate is one line with its reason (no stack trace), an unexpected
error shows in full, and MLflow's model logging and loading print no progress bars or warnings."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    MaterializeResult,
    SensorEvaluationContext,
    SkipReason,
    asset,
    build_sensor_context,
    instance_for_test,
    materialize,
    sensor,
)

from tradai.demo_output import (
    QUIET_RUN_CONFIG,
    outcome_lines,
    progress,
    quiet_sensor_context,
    refusals,
    unexpected_errors,
)
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


@sensor(name="talkative_sensor")
def talkative_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Logs like the loop's sensors: a decision per event at INFO, a malformed event at WARNING."""
    context.log.info("drift_score:17: retrain — severe drift of the champion")
    context.log.warning("drift score 18 lacks the sensor's fields; skipped")
    return SkipReason("decided")


def test_a_quiet_sensor_tick_prints_only_warnings_and_keeps_its_decisions_in_the_tick_log(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with instance_for_test() as instance:
        capfd.readouterr()
        with quiet_sensor_context(instance=instance, sensor_name="talkative_sensor", cursor="0") as context:
            tick = talkative_sensor.evaluate_tick(context)
        printed = capfd.readouterr()
        stored = instance.compute_log_manager.get_log_data(context.log_key).stderr or b""

        assert tick.skip_message == "decided"
        console = printed.out + printed.err
        assert "retrain — severe drift" not in console  # the decision is the demo's to print
        assert "lacks the sensor's fields" in console  # a warning still shows
        records = [json.loads(line) for line in stored.decode().splitlines()]
        messages = [record["msg"] for record in records]
        assert any("drift_score:17: retrain — severe drift of the champion" in m for m in messages), messages
        assert any("lacks the sensor's fields" in m for m in messages), messages

        # Dagster's own context prints the decision at INFO: what the demo avoids
        build = build_sensor_context(instance=instance, cursor="0")
        talkative_sensor.evaluate_tick(build)
        assert "retrain — severe drift" in "".join(capfd.readouterr())


def test_two_quiet_ticks_keep_separate_logs() -> None:
    with instance_for_test() as instance:
        keys = []
        for _ in range(2):
            with quiet_sensor_context(instance=instance, sensor_name="talkative_sensor") as context:
                talkative_sensor.evaluate_tick(context)
            keys.append(tuple(context.log_key))
        assert keys[0] != keys[1]
        for key in keys:
            stored = instance.compute_log_manager.get_log_data(list(key)).stderr or b""
            messages = [json.loads(line)["msg"] for line in stored.decode().splitlines()]
            assert sum("retrain — severe drift" in m for m in messages) == 1, messages
