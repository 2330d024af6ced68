"""Drift scores, the drift sensor and the drift schedule on real data: recorded candles of BTC and ETH in
ArcticDB, a champion trained by the real training-set and model assets on 2020-10-12 → 2021-01-12 and
registered in MLflow, drift scored by real Dagster runs on a real instance."""

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetMaterialization,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.test_utils import create_run_for_test

from jobs.model_loop import DRIFT_JOB, DRIFT_SCHEDULE, RETRAINING_JOB
from sensors.model_loop import DRIFT_SENSOR, build_drift_sensor
from tests.model_loop_fixtures import MODEL, NAME, PAIRS, Lab, empty_mlflow_db, make_lab
from tradai_assets.drift import drift_history, training_set_version
from tradai_assets.keys import DRIFT_KEY, META_FEATURE_SET_HASH, MODEL_KEY, TRAINING_SET_KEY, features_library
from tradai_assets.models import load_training_set
from tradai_core.drift import (
    DEFAULT_WINDOW_DAYS,
    drift_verdict,
    drift_window,
    rows_for_meaningful_psi,
    window_rows,
)
from tradai_core.errors import ValidationError
from tradai_core.features import FEATURE_NAMES, compute_window_features, feature_set_hash
from tradai_core.model_lifecycle import DriftEvent, DriftPolicy, decide_drift_action
from tradai_core.plots import MAX_PNG_BYTES
from tradai_core.psi import DriftSeverity, compute_psi, score_psi, summarize_reference
from tradai_core.registry import CHAMPION
from tradai_core.settings import pair_slug
from tradai_resources.mlflow_tracking import MLflowResource

STORED_FEATURES_END = "2021-03-01"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, demo_candles_dir: Path) -> Iterator[Lab]:
    """Candles 2020-10-12 → 2021-06-01; features stored up to 2021-03-01 only; champion v1 trained on
    2020-10-12 → 2021-01-12 by the training-set and model assets."""
    home = tmp_path_factory.mktemp("drift")
    (home / "dagster").mkdir()
    with instance_for_test(temp_dir=str(home / "dagster")) as instance:
        lab = make_lab(home, demo_candles_dir, empty_mlflow_db(home), instance, date(2021, 6, 1))
        lo, hi = pd.Timestamp("2020-10-12", tz="UTC"), pd.Timestamp(STORED_FEATURES_END, tz="UTC")
        for pair in PAIRS:
            features = compute_window_features(lab.store.read("binance", "1h", pair).candles, lo, hi)
            lab.store.write_frame_window(
                features_library("binance", "1h"),
                pair_slug(pair),
                features,
                lo,
                hi,
                metadata={META_FEATURE_SET_HASH: feature_set_hash()},
            )
        trained = lab.defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[TRAINING_SET_KEY, MODEL_KEY],
            run_config={
                "ops": {"training_set": {"config": {"train_end": "2021-01-12"}}, "model": {"config": MODEL}}
            },
        )
        assert trained.success and lab.mlflow.get_version_by_alias(NAME, CHAMPION).version == 1
        yield lab


def score(lab: Lab, pair: str = "BTC/USDT", **config: Any) -> dict[str, Any]:
    """Materialize drift_score for a pair; its metadata (plain values) and storage id."""
    result = lab.run(
        DRIFT_JOB,
        partition_key=pair_slug(pair),
        run_config={"ops": {"drift_score": {"config": config}}} if config else None,
    )
    assert result.success, [
        e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure
    ]
    [materialization] = result.asset_materializations_for_node("drift_score")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    metadata["storage_id"] = lab.instance.fetch_materializations(DRIFT_KEY, limit=1).records[0].storage_id
    metadata["run_id"] = result.run_id
    return metadata


def latest_storage_id(lab: Lab) -> int:
    records = lab.instance.fetch_materializations(DRIFT_KEY, limit=1).records
    return records[0].storage_id if records else 0


def drift_tick(lab: Lab, cursor: int, policy: DriftPolicy | None = None) -> SensorResult:
    sensor = build_drift_sensor(lab.defs.get_job_def(RETRAINING_JOB), policy) if policy else None
    sensor = sensor or lab.defs.resolve_sensor_def(DRIFT_SENSOR)
    context = build_sensor_context(
        instance=lab.instance, cursor=str(cursor), resources=lab.resources, definitions=lab.defs
    )
    return sensor.evaluate_tick(context)


def report(lab: Lab, pair: str, severity: str, psi: float, version: int = 1) -> int:
    """A drift event as a drift_score materialization reports it (for storms of controlled severity)."""
    lab.instance.report_runless_asset_event(
        AssetMaterialization(
            asset_key=DRIFT_KEY,
            partition=pair_slug(pair),
            metadata={
                "severity": severity,
                "model_name": NAME,
                "model_version": version,
                "pair": pair,
                "median_psi": psi,
                "prediction_psi": 0.05,
                "top_features": "rv_168, atr_pct_14",
            },
        )
    )
    return latest_storage_id(lab)


# -- the score -------------------------------------------------------------------------------------------


def test_the_default_window_is_the_shortest_whole_week_count_psi_can_band_at_1h() -> None:
    needed = rows_for_meaningful_psi(10)
    assert window_rows(7, "1h") == 168 < needed <= 336 == window_rows(DEFAULT_WINDOW_DAYS, "1h")
    seven_days = compute_psi(
        np.random.default_rng(0).normal(size=5000), np.random.default_rng(1).normal(size=168)
    )
    assert seven_days.severity is DriftSeverity.INSUFFICIENT


def test_a_window_is_never_scored_inside_the_models_training_period() -> None:
    trained_until = datetime(2021, 1, 12, tzinfo=UTC)
    with pytest.raises(ValidationError, match="inside the model's training period"):
        drift_window(datetime(2020, 12, 24, tzinfo=UTC), 14, trained_until)
    with pytest.raises(ValidationError, match="inside the model's training period"):
        drift_window(trained_until, 14, trained_until)  # ends exactly where the training data ends
    cut = drift_window(datetime(2021, 1, 20, tzinfo=UTC), 14, trained_until)
    assert (cut.start, cut.end) == (trained_until, datetime(2021, 1, 20, tzinfo=UTC))
    assert "cut to start at the end of the model's training data (2021-01-12 00:00)" in cut.note
    after = drift_window(datetime(2021, 2, 1, tzinfo=UTC), 14, trained_until)
    assert (after.start, after.note) == (datetime(2021, 1, 18, tzinfo=UTC), "")


def test_the_drift_asset_refuses_a_window_inside_the_champions_training_data(lab: Lab) -> None:
    before = latest_storage_id(lab)
    result = lab.run(
        DRIFT_JOB,
        partition_key=pair_slug("BTC/USDT"),
        run_config={"ops": {"drift_score": {"config": {"end": "2020-12-24"}}}},
    )
    assert not result.success
    [error] = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    assert "lies inside the model's training period (trained until 2021-01-12 00:00)" in error.to_string()
    assert "score a window that ends after 2021-01-12" in error.to_string()
    assert latest_storage_id(lab) == before  # no score recorded: nothing for the sensor to act on


def test_a_window_reaching_into_the_training_data_is_cut_at_its_end(lab: Lab) -> None:
    metadata = score(lab, end="2021-01-20")  # 14 days would start 2021-01-06, inside the training data
    assert metadata["window_start"] == datetime(2021, 1, 12, tzinfo=UTC).timestamp()
    assert metadata["trained_until"] == datetime(2021, 1, 12, tzinfo=UTC).timestamp()
    assert metadata["rows"] == 8 * 24
    assert metadata["window_note"].startswith("window cut to start at the end of the model's training data")


def test_a_much_later_window_is_severe_with_every_feature_ranked_beside_its_noise_floor(lab: Lab) -> None:
    metadata = score(lab)  # the window ends after the newest candle: 2021-05-18 → 2021-06-01, the May crash
    assert metadata["severity"] == "severe" and metadata["feature_severity"] == "severe"
    assert metadata["median_psi"] >= 0.25
    assert (metadata["window_start"], metadata["window_end"]) == (
        datetime(2021, 5, 18, tzinfo=UTC).timestamp(),
        datetime(2021, 6, 1, tzinfo=UTC).timestamp(),
    )
    assert metadata["rows"] == metadata["candles_in_window"] == 336
    assert metadata["feature_source"].startswith("computed from candles ohlcv.binance.1h/BTC_USDT v")
    assert "(feature store: not every candle of the window)" in metadata["feature_source"]
    rows = [line.split("|") for line in metadata["features"].splitlines()[2:]]
    assert len(rows) == len(FEATURE_NAMES)
    psi = [float(row[3]) for row in rows]
    assert psi == sorted(psi, reverse=True) and psi[0] == pytest.approx(metadata["max_psi"], abs=1e-4)
    assert {row[4].strip() for row in rows} <= {"none", "moderate", "severe"}
    assert all(0 < float(row[5]) < float(row[6]) < 0.1 for row in rows)  # noise floor mean < q95 < band
    assert metadata["top_features"].split(", ")[0] == rows[0][2].strip()
    assert metadata["features_severe"] + metadata["features_moderate"] + metadata["features_none"] == 29
    assert metadata["reason"].startswith("severe: median feature PSI")
    assert 1 <= metadata["median_feature_n_eff"] < 336  # hourly features are autocorrelated
    assert metadata["autocorrelated_noise_gate"] > metadata["noise_floor_q95"]
    assert "3.7%" in metadata["calibrated_false_alarm_rate"]
    assert all(float(row[9]) < 336 for row in rows)  # n_eff column of the features table


def test_prediction_drift_is_the_psi_of_the_champions_probabilities_against_its_training_rows(
    lab: Lab,
) -> None:
    metadata = score(lab, end="2021-05-01")
    version = lab.mlflow.get_version_by_alias(NAME, CHAMPION)
    booster = lab.mlflow.load_model(NAME, CHAMPION, flavor="lightgbm")
    training = load_training_set(lab.store, "binance", "1h", as_of=training_set_version(version))
    rows = training.frame[training.frame["pair"] == "BTC/USDT"]
    reference = summarize_reference(booster.predict(rows[list(FEATURE_NAMES)]), "prediction")
    lo, hi = pd.Timestamp("2021-04-17", tz="UTC"), pd.Timestamp("2021-05-01", tz="UTC")
    window = compute_window_features(lab.store.read("binance", "1h", "BTC/USDT").candles, lo, hi)
    expected = score_psi(reference, booster.predict(window[list(FEATURE_NAMES)]))
    assert metadata["prediction_psi"] == pytest.approx(expected.psi, rel=1e-9)
    assert metadata["prediction_severity"] == expected.severity.value
    assert metadata["prediction_drift"].startswith(f"PSI {expected.psi:.4f} ({expected.severity.value})")
    assert "contribution" in metadata["prediction_drift"]


def test_a_window_too_small_to_mean_anything_is_insufficient_not_an_alarm(lab: Lab) -> None:
    before = latest_storage_id(lab)
    metadata = score(lab, "ETH/USDT", window_days=3)
    assert metadata["severity"] == "insufficient" and metadata["rows"] == 72
    assert metadata["features_insufficient"] == len(FEATURE_NAMES)
    assert "only 0 of 29 features could be banded" in metadata["reason"]
    result = drift_tick(lab, before)
    assert result.run_requests == [] and result.cursor == str(metadata["storage_id"])


def test_psi_over_time_is_drawn_from_the_partitions_previous_materializations(lab: Lab) -> None:
    for end in ("2021-02-01", "2021-03-01"):
        score(lab, "ETH/USDT", end=end)
    metadata = score(lab, "ETH/USDT", end="2021-04-01")
    history = metadata["psi_history"].splitlines()[2:]
    ends = [line.split("|")[1].strip() for line in history]
    scored = ["2021-04-01 00:00", "2021-03-01 00:00", "2021-02-01 00:00"]
    assert [end for end in ends if end in scored] == scored  # newest first, earlier scores included
    assert all("| v1 |" in line for line in history)
    assert metadata["psi_over_time"].startswith("![PSI over time](data:image/png;base64,")


def test_psi_per_feature_over_time_is_a_small_heat_map_of_every_scored_window(lab: Lab) -> None:
    for end in ("2021-02-15", "2021-03-15"):
        score(lab, "BTC/USDT", end=end)
    metadata = score(lab, "BTC/USDT", end="2021-04-15")
    assert set(metadata["feature_psi"]) == set(FEATURE_NAMES)
    assert all(psi >= 0 for psi in metadata["feature_psi"].values())
    prefix = "![PSI per feature over time](data:image/png;base64,"
    assert metadata["feature_psi_over_time"].startswith(prefix)
    image = base64.b64decode(metadata["feature_psi_over_time"].removeprefix(prefix).removesuffix(")"))
    assert image.startswith(b"\x89PNG") and len(image) <= MAX_PNG_BYTES
    history = drift_history(lab.instance, pair_slug("BTC/USDT"), limit=60)
    scored = [p for p in history if p.feature_psi]
    assert len(scored) >= 3 and scored[-1].feature_psi == pytest.approx(metadata["feature_psi"], abs=1e-6)


# -- the sensor ------------------------------------------------------------------------------------------


def test_severe_drift_requests_a_retraining_run_keyed_by_the_event_and_notifies(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    before = latest_storage_id(lab)
    severe = score(lab, end="2021-06-01")
    with caplog.at_level(logging.INFO, logger="tradai.notify"):
        result = drift_tick(lab, before, DriftPolicy(cooldown_hours=0))
    [request] = result.run_requests
    assert request.run_key == f"retrain:drift_score:{severe['storage_id']}"
    assert request.tags["tradai/trigger"] == "drift" and request.tags["tradai/drift_pair"] == "BTC/USDT"
    assert request.tags["tradai/drift_event"] == f"drift_score:{severe['storage_id']}"
    assert result.cursor == str(severe["storage_id"])
    assert "[CRITICAL] severe drift on BTC/USDT for tradai-lgbm-1h v1" in caplog.text
    assert f"dagster run: {severe['run_id']}" in caplog.text
    assert (
        drift_tick(lab, severe["storage_id"]).skip_message
        == f"no drift scores after storage id {severe['storage_id']}"
    )


def test_moderate_drift_only_notifies_and_no_drift_does_nothing(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    before = latest_storage_id(lab)
    report(lab, "ETH/USDT", "moderate", 0.17)
    report(lab, "BTC/USDT", "none", 0.04)
    with caplog.at_level(logging.INFO, logger="tradai.notify"):
        result = drift_tick(lab, before, DriftPolicy(cooldown_hours=0))
    assert result.run_requests == []
    assert caplog.text.count("drift on") == 1 and "[WARNING] moderate drift on ETH/USDT" in caplog.text


def test_a_storm_of_severe_drift_causes_one_retraining_and_the_cooldown_holds_until_it_expires(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    before = latest_storage_id(lab)
    storm = [report(lab, pair, "severe", 0.4 + i / 10) for i in range(3) for pair in PAIRS]
    first = drift_tick(lab, before, DriftPolicy(cooldown_hours=24))
    assert [r.run_key for r in first.run_requests] == [f"retrain:drift_score:{storm[0]}"]
    create_run_for_test(lab.instance, job_name=RETRAINING_JOB)  # the daemon launched it
    with caplog.at_level(logging.INFO, logger="tradai.notify"):
        again = drift_tick(lab, int(first.cursor or 0), DriftPolicy(cooldown_hours=24))
    assert again.skip_message is not None  # nothing new since the storm
    later = report(lab, "BTC/USDT", "severe", 0.6)
    with caplog.at_level(logging.INFO, logger="tradai.notify"):
        held = drift_tick(lab, int(first.cursor or 0), DriftPolicy(cooldown_hours=24))
    assert held.run_requests == [] and "cooldown 24 h" in caplog.text
    expired = drift_tick(lab, int(first.cursor or 0), DriftPolicy(cooldown_hours=0))
    assert [r.run_key for r in expired.run_requests] == [f"retrain:drift_score:{later}"]


def test_drift_of_a_version_that_is_no_longer_champion_is_ignored(lab: Lab) -> None:
    before = latest_storage_id(lab)
    report(lab, "BTC/USDT", "severe", 0.9, version=7)
    assert drift_tick(lab, before, DriftPolicy(cooldown_hours=0)).run_requests == []
    event = DriftEvent(
        model=NAME,
        model_version=7,
        pair="BTC/USDT",
        severity="severe",
        psi=0.9,
        at=datetime.now(tz=UTC),
        storage_id=1,
    )
    assert "no longer champion (now v1)" in decide_drift_action(event, 1, None).reason


def test_the_median_is_the_pair_verdict_so_a_few_slow_features_cannot_raise_the_alarm() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=4000)
    calm = [compute_psi(reference, rng.normal(size=336), f"f{i}") for i in range(9)]
    slow = [compute_psi(reference, rng.normal(loc=2.0, size=336), f"slow{i}") for i in range(4)]
    verdict = drift_verdict([*calm, *slow], None)
    assert verdict.max_psi >= 0.25 and verdict.severity is DriftSeverity.NONE
    moved = drift_verdict(
        [compute_psi(reference, rng.normal(loc=1.0, size=336), f"m{i}") for i in range(9)], None
    )
    assert moved.severity is DriftSeverity.SEVERE


# -- the schedule ----------------------------------------------------------------------------------------


def test_the_drift_schedule_scores_every_pair_once_per_new_window_and_skips_without_a_champion(
    lab: Lab, tmp_path: Path
) -> None:
    schedule = lab.defs.resolve_schedule_def(DRIFT_SCHEDULE)
    repository = lab.defs.get_repository_def()
    context = build_schedule_context(
        instance=lab.instance, resources=lab.resources, repository_def=repository
    )
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("BTC_USDT", "drift:BTC_USDT:v1:20210601T0000"),
        ("ETH_USDT", "drift:ETH_USDT:v1:20210601T0000"),
    ]
    assert requests[0].run_config == {
        "ops": {"drift_score": {"config": {"end": "2021-06-01T00:00:00+00:00"}}}
    }
    assert lab.launch(DRIFT_JOB, requests[0]).success
    empty = MLflowResource(tracking_uri=f"sqlite:///{empty_mlflow_db(tmp_path)}")
    skipped = schedule.evaluate_tick(
        build_schedule_context(
            instance=lab.instance, resources={**lab.resources, "mlflow": empty}, repository_def=repository
        )
    )
    assert (
        skipped.skip_message
        == "no champion of tradai-lgbm-1h yet: train one (features → training_set → model)"
    )
