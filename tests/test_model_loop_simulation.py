"""The walk-forward simulation end to end on real recorded candles: replay server with a moving clock, CCXT
over HTTP, ArcticDB on LMDB, real LightGBM training, MLflow on SQLite, real Freqtrade backtests.

One short simulation (two pairs, three weekly decisions in May 2022) is run once for the module, with every
candle the exchange returns, every store read and every set of candles handed to Freqtrade recorded beside
the clock of the step that asked for it.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import load_recorded
from tradai.cli import EXIT_USAGE, main
from tradai_assets.model_loop_simulation import log_to_mlflow, sandbox_folder, simulation_metadata
from tradai_assets.simulation_engine import (
    ClockGuardedStore,
    LookaheadError,
    SimulationResult,
    SimulationSpec,
    simulate,
)
from tradai_core.errors import ValidationError
from tradai_core.policy_simulation import POLICIES, SimulationPlan
from tradai_core.settings import PROJECT_ROOT
from tradai_resources.arcticdb_store import ArcticDBResource
from tradai_resources.ccxt_exchange import ExchangeResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource

EXCHANGE_INFO = PROJECT_ROOT / "demo_data" / "exchange" / "binance_spot_exchangeInfo.json"
PLAN = SimulationPlan(start=date(2022, 5, 2), end=date(2022, 5, 23), train_days=120)


@dataclass
class Recorder:
    """What each step saw, beside the step's clock."""

    clock: datetime | None = None
    fetched: list[tuple[datetime, str, datetime, datetime]] = field(default_factory=list)
    reads: list[tuple[datetime, str, datetime]] = field(default_factory=list)
    backtested: list[tuple[datetime, datetime]] = field(default_factory=list)


def _newest(frame: pd.DataFrame) -> datetime | None:
    if isinstance(frame.index, pd.DatetimeIndex) and len(frame):
        return frame.index.max().to_pydatetime()
    if "date" in frame.columns and len(frame):
        stamp = pd.Timestamp(frame["date"].max())
        return (stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp).to_pydatetime()
    return None


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory, demo_candles_dir: Path) -> Iterator[tuple[Any, Any]]:
    recorder = Recorder()
    fetch, read, read_frame, backtest = (
        ExchangeResource.fetch_candles,
        ArcticDBResource.read,
        ArcticDBResource.read_frame,
        FreqtradeResource.backtest,
    )

    def recording_fetch(
        self: ExchangeResource, pair: str, timeframe: str, start: datetime, end: datetime
    ) -> Any:
        fetched = fetch(self, pair, timeframe, start, end)
        assert recorder.clock is not None
        recorder.fetched.append((recorder.clock, pair, fetched.candles.index.max().to_pydatetime(), end))
        return fetched

    def recording_read(self: ArcticDBResource, *args: Any, **kwargs: Any) -> Any:
        stored = read(self, *args, **kwargs)
        newest = _newest(stored.candles)
        if recorder.clock is not None and newest is not None:
            recorder.reads.append((recorder.clock, f"candles {args[2]}", newest))
        return stored

    def recording_read_frame(self: ArcticDBResource, *args: Any, **kwargs: Any) -> Any:
        stored = read_frame(self, *args, **kwargs)
        newest = _newest(stored.frame)
        if recorder.clock is not None and newest is not None:
            recorder.reads.append((recorder.clock, f"{args[0]}/{args[1]}", newest))
        return stored

    def recording_backtest(
        self: FreqtradeResource, name: str, folder: Path, candles: Any, run: Any, **kw: Any
    ) -> Any:
        assert recorder.clock is not None
        recorder.backtested.append((recorder.clock, max(frame.index.max() for frame in candles.values())))
        return backtest(self, name, folder, candles, run, **kw)

    def on_step(at: datetime) -> None:
        recorder.clock = at

    root = tmp_path_factory.mktemp("simulation")
    spec = SimulationSpec(
        plan=PLAN, candles_dir=demo_candles_dir, exchange_info_path=EXCHANGE_INFO, challenge_looks=2
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ExchangeResource, "fetch_candles", recording_fetch)
        patch.setattr(ArcticDBResource, "read", recording_read)
        patch.setattr(ArcticDBResource, "read_frame", recording_read_frame)
        patch.setattr(FreqtradeResource, "backtest", recording_backtest)
        result = simulate(
            spec,
            root / "sandbox",
            FreqtradeResource(work_dir=str(root / "backtests")),
            run_id="test",
            on_step=on_step,
        )
    yield result, recorder


@pytest.mark.slow
def test_no_step_sees_a_candle_after_its_clock(simulated: tuple[SimulationResult, Recorder]) -> None:
    result, recorder = simulated
    steps = PLAN.steps
    # the exchange: every step fetched, and nothing at or after its clock came back
    assert {clock for clock, *_ in recorder.fetched} == set(steps)
    for clock, pair, newest, end in recorder.fetched:
        assert end == clock and newest < clock, (clock, pair, newest)
    # the candle store: candles, features, training sets — every read of every step
    kinds = {what.split("/")[0].split(" ")[0] for _, what, _ in recorder.reads}
    assert {"candles", "features.binance.1h", "training.binance.1h"} <= kinds
    for clock, what, newest in recorder.reads:
        assert newest < clock, (clock, what, newest)
    # Freqtrade: every set of candles handed to a backtest ends before the clock of the step that ran it
    assert len(recorder.backtested) == result.backtests_run > 0
    for clock, newest in recorder.backtested:
        assert newest < clock, (clock, newest)
    # the engine's own guard saw the same reads and found none past its clock
    assert result.reads and all(r.newest is None or r.newest < r.clock for r in result.reads)
    # training and validation windows end before the clock of the step that used them
    for model in result.models:
        assert model.train_end <= model.trained_at - timedelta(days=PLAN.validation_days)
    for comparison in result.comparisons:
        assert comparison.window[1] <= comparison.at
        trained = {m.version: m for m in result.models}
        assert trained[comparison.challenger].train_end <= comparison.window[0]
        assert trained[comparison.champion].train_end <= comparison.window[0]
    # a model trades only after it was trained and chosen: each span's version was trained before it
    trained_at = {m.version: m.trained_at for m in result.models}
    for timeline in result.timelines.values():
        for entry in timeline:
            assert trained_at[entry.champion] <= entry.at


@pytest.mark.slow
def test_short_simulation_end_to_end(simulated: tuple[SimulationResult, Recorder]) -> None:
    result, _ = simulated
    decisions = PLAN.steps[:-1]  # the last clock value only evaluates the last step's trading
    assert [row.policy for row in result.rows] == list(POLICIES)
    for name, timeline in result.timelines.items():
        assert [entry.at for entry in timeline] == decisions, name
        assert timeline[0].action == "bootstrap" and timeline[0].champion == 1
    by = {row.policy: row for row in result.rows}
    never, weekly = result.timelines["never"], result.timelines["weekly"]
    assert not any(entry.retrained for entry in never) and by["never"].retrains == 0
    assert all(entry.retrained for entry in weekly[1:]) and by["weekly"].retrains == len(decisions) - 1
    assert {entry.champion for entry in never} == {1}
    # one challenger per step, shared: v1 at the bootstrap, then one per weekly retraining
    assert [m.version for m in result.models] == list(range(1, len(decisions) + 1))
    # every weekly retraining compared a newer model with the champion, with a real p-value
    compared = {(c.at, c.challenger) for c in result.comparisons}
    assert {(e.at, e.challenger) for e in weekly[1:]} <= compared
    assert all(c.challenger != c.champion and 0 < c.p_value <= 1 for c in result.comparisons)
    # out-of-sample returns of every policy cover the same bars: every bar of the traded period, the
    # first bar of each weekly span included (no hour lost at a seam)
    bars = (PLAN.steps[-1] - PLAN.steps[0]) // timedelta(hours=1)
    assert all(len(series) == bars for series in result.returns.values())
    assert result.returns["never"].index[0] == pd.Timestamp(PLAN.steps[0])
    assert result.returns["never"].index[-1] == pd.Timestamp(PLAN.steps[-1]) - timedelta(hours=1)
    assert by["never"].p_value_vs_never is None and by["weekly"].bars == bars
    # backtests are shared: never's trading of v1 is reused by every policy still on v1
    assert result.backtests_reused > 0
    # an inconclusive comparison opened an A/B challenge, re-tested on the next step's new candles
    assert not result.challenges["never"]
    first = next(c for c in result.comparisons if c.decision == "inconclusive")
    [challenge] = [c for c in result.challenges["weekly"] if c.started_at == first.at]
    assert (challenge.champion, challenge.challenger) == (first.champion, first.challenger)
    assert challenge.looks and challenge.looks[0].at == first.at + timedelta(days=PLAN.step_days)
    assert challenge.looks[0].n_bars == PLAN.step_days * 24
    assert 0 < challenge.looks[0].threshold < 0.05


def test_the_store_guard_refuses_rows_after_the_clock(tmp_path: Path, demo_candles_dir: Path) -> None:
    store = ClockGuardedStore(uri=f"lmdb://{tmp_path / 'arcticdb'}")
    candles = load_recorded(demo_candles_dir, "BTC/USDT")
    lo, hi = datetime(2022, 5, 1, tzinfo=UTC), datetime(2022, 5, 10, tzinfo=UTC)
    store.write_window(
        "binance", "1h", "BTC/USDT", candles[(candles.index >= lo) & (candles.index < hi)], lo, hi
    )
    store.set_clock(datetime(2022, 5, 5, tzinfo=UTC))
    assert len(store.read("binance", "1h", "BTC/USDT", lo, datetime(2022, 5, 5, tzinfo=UTC)).candles) == 96
    with pytest.raises(LookaheadError, match="at or after the clock"):
        store.read("binance", "1h", "BTC/USDT", lo, hi)
    assert [r.rows for r in store.reads] == [96, 9 * 24]


def test_simulation_refuses_a_used_sandbox(tmp_path: Path, demo_candles_dir: Path) -> None:
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "left-over").write_text("x")
    spec = SimulationSpec(plan=PLAN, candles_dir=demo_candles_dir)
    with pytest.raises(ValidationError, match="not empty"):
        simulate(spec, tmp_path / "sandbox", FreqtradeResource(work_dir=str(tmp_path / "bt")), run_id="x")
    assert (tmp_path / "sandbox" / "left-over").read_text() == "x"


def _filled_sandbox(root: Path) -> Path:
    sandbox = root / "simulation" / "run-1"
    (sandbox / "arcticdb").mkdir(parents=True)
    (sandbox / "arcticdb" / "data.mdb").write_bytes(b"\0" * 64)
    (sandbox / "mlflow.db").write_text("x")
    return sandbox


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_simulation_removes_its_sandbox_unless_asked_to_keep_it(
    tmp_path: Path, keep: bool
) -> None:
    sandbox = _filled_sandbox(tmp_path)
    with sandbox_folder(sandbox, keep=keep) as where:
        assert (sandbox / "mlflow.db").exists()  # the run works in it until its report is recorded
    assert sandbox.exists() is keep
    assert where["sandbox"] == (str(sandbox) if keep else "removed after the report (keep_sandbox keeps it)")


def test_a_failed_simulation_keeps_its_sandbox_and_says_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = _filled_sandbox(tmp_path)
    with (
        pytest.raises(ValidationError, match="boom"),
        caplog.at_level("ERROR"),
        sandbox_folder(sandbox, keep=False),
    ):
        raise ValidationError("boom", "fix it")
    assert (sandbox / "arcticdb" / "data.mdb").read_bytes() == b"\0" * 64
    assert f"its sandbox is kept for diagnosis: {sandbox}" in caplog.text


def test_cli_refuses_a_bad_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("TRADAI_HOME", str(tmp_path))
    assert main(["simulate", "--start", "2022-05-20", "--end", "2022-05-10"]) == EXIT_USAGE
    assert "invalid simulation period" in capsys.readouterr().err
    assert not (tmp_path / "data" / "simulation").exists()


@pytest.mark.slow
def test_report_in_metadata_and_mlflow(simulated: tuple[SimulationResult, Recorder], tmp_path: Path) -> None:
    result, _ = simulated
    spec = SimulationSpec(plan=PLAN, candles_dir=PROJECT_ROOT / "demo_data" / "binance_spot_1h")
    metadata = simulation_metadata(result, spec)
    table = metadata["policy_table"].value
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == list(POLICIES)
    for policy in POLICIES:
        assert metadata[f"equity_{policy}"].value.startswith(f"![equity {policy}](data:image/png;base64,")
        assert metadata[f"timeline_{policy}"].value.count("\n") == len(PLAN.steps) - 1 + 1
    assert "v2 vs v1" in metadata["challenges"].value
    mlflow = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id, _ = log_to_mlflow(mlflow, result, spec, "test-run")
    run = mlflow.get_run(run_id)
    by = {row.policy: row for row in result.rows}
    assert run.data.metrics["weekly.retrains"] == by["weekly"].retrains == len(PLAN.steps) - 2
    assert run.data.metrics["never.retrains"] == 0
    assert run.data.metrics["never.total_return"] == pytest.approx(by["never"].total_return)
    assert "| weekly |" in mlflow.load_text(run_id, "simulation/policy_table.md")
