"""The walk-forward simulation's engine: the clock moves step by step through recorded history and at
each step the platform's real code runs, in a sandbox of its own (ArcticDB on LMDB, MLflow on SQLite).

Per clock value `t_k` (`tradai_core.policy_simulation` has the rules and the timing):
1. the replay server's clock moves to `t_k`; the new candles come through the real exchange path (CCXT over
   HTTP to `tradai_replay`) into ArcticDB, and the features of the new days are computed and stored as
   the feature assets do;
2. the trading of the previous step, `[t_{k-1}, t_k)`, is backtested (real Freqtrade, the ML strategy
   trading each policy's champion in force) — only now, with the clock at its end;
3. for each policy: the rollback rule judges the champion's recent trading (`decide_rollback`); drift of
   the drift policy's champion is scored (`score_pair_drift`, the drift asset's code) and judged
   (`decide_drift_action`); if the policy retrains, the challenger trained at `t_k` on
   `[t_k − validation − train, t_k − validation)` is validation-backtested with the champion on
   `[t_k − validation, t_k)` (`run_model_backtest`, the validation assets' code), compared
   (`compare_champion_challenger`) and promoted or kept (`decide_promotion`).

Work is shared: at most one challenger per step (trained only when a policy asks for it) and every
backtest memoized by (model version, window). Every candle read from the store goes through
`ClockGuardedStore`, which refuses any row at or after the clock and records what was read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tradai_assets.drift import DriftConfig, score_pair_drift
from tradai_assets.features import read_candles_for_features, store_window_features
from tradai_assets.keys import features_library
from tradai_assets.models import ModelConfig, register_trained_model, store_training_set
from tradai_assets.validation import BacktestSettings, ModelBacktest, run_model_backtest
from tradai_core.comparison import ComparisonConfig, compare_champion_challenger, periods_per_year_for
from tradai_core.errors import TradAIError, ValidationError
from tradai_core.features import WARMUP_BARS
from tradai_core.labels import LabelSpec
from tradai_core.model_lifecycle import (
    AuditAction,
    AuditEntry,
    ChampionPerformance,
    ComparisonOutcome,
    DriftEvent,
    DriftPolicy,
    RollbackLimits,
    Trigger,
    decide_drift_action,
    decide_promotion,
    decide_rollback,
)
from tradai_core.policy_simulation import (
    POLICIES,
    BestPolicy,
    PolicyName,
    PolicyRow,
    SimulationPlan,
    TimelineEntry,
    best_policy,
    max_drawdown,
    policy_rows,
    stitch_returns,
    wants_retrain,
)
from tradai_core.registry import CHALLENGER, CHAMPION, default_model_name
from tradai_core.sequential_challenge import Challenge, challenge_look, look_summary
from tradai_core.settings import TradAISettings, pair_slug
from tradai_core.timeframes import timeframe_delta
from tradai_core.training import (
    TrainingWindow,
    build_training_set,
    reference_distribution,
    train_walk_forward,
)
from tradai_replay.server import ReplayServer
from tradai_resources.arcticdb_store import ArcticDBResource, StoredCandles, StoredFrame
from tradai_resources.ccxt_exchange import ExchangeResource
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.mlflow_tracking import MLflowResource

logger = logging.getLogger(__name__)


class LookaheadError(TradAIError):
    """A step read a row at or after its clock."""


class StoreRead(BaseModel):
    """One read from the candle store: when (the clock), what, and its newest row."""

    model_config = ConfigDict(frozen=True)

    clock: datetime
    what: str
    rows: int
    newest: datetime | None


def _utc(stamp: Any) -> datetime:
    moment = pd.Timestamp(stamp)
    moment = moment.tz_localize(UTC) if moment.tzinfo is None else moment.tz_convert(UTC)
    return moment.to_pydatetime()


def _newest(frame: pd.DataFrame) -> datetime | None:
    """The newest time in a frame: its time index, else its `date` column (a training set)."""
    if isinstance(frame.index, pd.DatetimeIndex) and len(frame.index):
        return _utc(frame.index.max())
    if "date" in frame.columns and len(frame):
        return _utc(frame["date"].max())
    return None


class ClockGuardedStore(ArcticDBResource):
    """The candle store as a step sees it: every read is checked against the clock and recorded.

    A read returning a row at or after the clock raises LookaheadError (nothing after the clock exists
    for the step); `reads` lists every read with its newest row, which the tests check independently.
    """

    _clock: datetime | None = PrivateAttr(default=None)
    _reads: list[StoreRead] = PrivateAttr(default_factory=list)

    def set_clock(self, at: datetime) -> None:
        """Move the store's clock (the simulation's `t_k`)."""
        self._clock = at

    @property
    def reads(self) -> list[StoreRead]:
        """Every read so far (a copy)."""
        return list(self._reads)

    def _seen(self, what: str, frame: pd.DataFrame) -> None:
        if self._clock is None:
            return
        newest = _newest(frame)
        self._reads.append(StoreRead(clock=self._clock, what=what, rows=len(frame), newest=newest))
        if newest is not None and newest >= self._clock:
            raise LookaheadError(
                f"{what}: read a row at {newest:%Y-%m-%d %H:%M}, at or after the clock "
                f"({self._clock:%Y-%m-%d %H:%M})",
                "bound every read of the step by its clock (this is a bug in the caller)",
            )

    def read(self, exchange_id: str, timeframe: str, pair: str, *args: Any, **kwargs: Any) -> StoredCandles:
        stored = super().read(exchange_id, timeframe, pair, *args, **kwargs)
        self._seen(f"candles {pair}", stored.candles)
        return stored

    def read_frame(self, library: str, symbol: str, *args: Any, **kwargs: Any) -> StoredFrame:
        stored = super().read_frame(library, symbol, *args, **kwargs)
        self._seen(f"{library}/{symbol}", stored.frame)
        return stored


class SimulationSpec(BaseModel):
    """Everything a simulation run needs besides its resources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: SimulationPlan
    pairs: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
    policies: tuple[PolicyName, ...] = POLICIES
    candles_dir: Path
    exchange_info_path: Path | None = None
    timeframe: str = "1h"
    label_horizon: int = 4
    label_threshold: float = 0.002
    n_folds: int = 3
    min_train: int = 600
    num_boost_round: int = 60
    min_data_in_leaf: int = 100
    max_open_trades: int = 2
    comparison: ComparisonConfig = ComparisonConfig(min_trades=10, n_iterations=1000)
    drift_window_days: int = 14
    drift_cooldown_hours: float = Field(default=14 * 24, ge=0)
    rollback: RollbackLimits = RollbackLimits()
    performance_days: int = Field(default=28, ge=1, description="Trading days the rollback rule judges.")
    challenge_looks: int = Field(
        default=0,
        ge=0,
        description="An inconclusive comparison becomes an A/B challenge re-tested at up to this many later "
        "steps (alpha spending, tradai_core.sequential_challenge); 0: off.",
    )

    @property
    def model_name(self) -> str:
        """The registered model the ML strategy trades."""
        return default_model_name(self.timeframe)


class ModelRecord(BaseModel):
    """A model the simulation trained."""

    model_config = ConfigDict(frozen=True)

    version: int
    trained_at: datetime
    train_start: datetime
    train_end: datetime
    rows: int
    oos_auc: float | None
    rejected: str | None
    seconds: float


class ComparisonRecord(BaseModel):
    """A comparison the simulation ran (shared by every policy that asked for it with that champion)."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    champion: int
    challenger: int
    window: tuple[datetime, datetime]
    decision: str
    p_value: float
    sharpe_diff: float
    reason: str


class SimulationResult(BaseModel):
    """What the simulation found: each policy's timeline, returns and row, and what it cost."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    plan: SimulationPlan
    pairs: tuple[str, ...]
    timelines: dict[str, list[TimelineEntry]]
    returns: dict[str, pd.Series]
    rows: list[PolicyRow]
    best: BestPolicy
    models: list[ModelRecord]
    comparisons: list[ComparisonRecord]
    challenges: dict[str, list[Challenge]] = Field(default_factory=dict)
    backtests_run: int
    backtests_reused: int
    wall_seconds: float
    reads: list[StoreRead]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class _PolicyState:
    """One policy's running state: its champion, its audit history, what it used."""

    def __init__(self, name: PolicyName) -> None:
        self.name = name
        self.champion: int | None = None
        self.entries: list[AuditEntry] = []
        self.timeline: list[TimelineEntry] = []
        self.last_retrain_at: datetime | None = None
        self.costs: set[tuple[Any, ...]] = set()
        self.pieces: list[pd.Series] = []
        self.spans: list[tuple[datetime, datetime, int, int]] = []  # start, end, version, trades
        self.challenge: Challenge | None = None
        self.challenge_returns: list[tuple[pd.Series, pd.Series]] = []
        self.challenges: list[Challenge] = []
        self.note = ""  # how a challenge ended, for the step's timeline entry

    def close_challenge(self, challenge: Challenge | None = None) -> None:
        """End the open challenge (with its last look, when given)."""
        if self.challenge is not None:
            self.challenges.append(challenge or self.challenge)
        self.challenge, self.challenge_returns = None, []

    def audit(self, action: AuditAction, at: datetime, to: int, reason: str, **extra: Any) -> None:
        self.entries.append(
            AuditEntry(
                action=action,
                model="simulation",
                from_version=self.champion,
                to_version=to,
                at=at,
                reason=reason,
                trigger=Trigger.SENSOR,
                **extra,
            )
        )


class WalkForwardSimulation:
    """Runs one `SimulationSpec` against a sandbox store, MLflow store and Freqtrade."""

    def __init__(
        self,
        spec: SimulationSpec,
        *,
        store: ClockGuardedStore,
        mlflow: MLflowResource,
        freqtrade: FreqtradeResource,
        run_id: str,
        log: logging.Logger | Any = logger,
        on_step: Callable[[datetime], None] | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.mlflow = mlflow
        self.freqtrade = freqtrade
        self.run_id = run_id
        self.log = log
        self.on_step = on_step
        self.settings = TradAISettings(
            home=Path(store.uri.removeprefix("lmdb://")).parent,
            pairs=spec.pairs,
            timeframe=spec.timeframe,
            history_start=spec.plan.history_start.date(),
            arcticdb_uri=store.uri,
            mlflow_uri=mlflow.tracking_uri,
        )
        self.ppy = periods_per_year_for(spec.timeframe)
        self._backtests: dict[tuple[int, datetime, datetime], ModelBacktest] = {}
        self._seconds: dict[tuple[Any, ...], float] = {}
        self._challengers: dict[datetime, int | None] = {}
        self._comparisons: dict[tuple[int, int, datetime], ComparisonRecord] = {}
        self._drift: dict[tuple[int, datetime], tuple[bool, str]] = {}
        self.models: list[ModelRecord] = []
        self.backtests_reused = 0
        self._features_end: dict[str, datetime] = {}
        self._candles_end: dict[str, datetime] = {}

    # -- the clock's work ------------------------------------------------------------------------------

    def _at(self, at: datetime) -> TradAISettings:
        return self.settings.model_copy(update={"now": at})

    def _ingest(self, exchange: ExchangeResource, at: datetime) -> None:
        """New candles up to the clock through CCXT → ArcticDB, then the features of the new days."""
        tf, ex = self.spec.timeframe, self.settings.exchange_id
        warmup = WARMUP_BARS * timeframe_delta(tf)
        for pair in self.spec.pairs:
            start = self._candles_end.get(pair, self.spec.plan.history_start - 2 * warmup - timedelta(days=1))
            start = start - timedelta(days=1)  # re-read the last day: an open candle dropped before is closed
            fetched = exchange.fetch_candles(pair, tf, start, at)
            self.store.write_window(
                ex,
                tf,
                pair,
                fetched.candles,
                start,
                at,
                metadata={"simulation": self.run_id, "clock": str(at)},
            )
            self._candles_end[pair] = at
            first = self._features_end.get(pair, self.spec.plan.history_start - timedelta(days=1))
            candles = read_candles_for_features(self.store, ex, tf, pair, first, at)
            store_window_features(self.store, ex, tf, pair, candles, first, at, {"simulation": self.run_id})
            self._features_end[pair] = at

    def _challenger(self, at: datetime) -> int | None:
        """The model trained at clock `at` (trained on first request, shared by every policy)."""
        if at in self._challengers:
            return self._challengers[at]
        started = time.perf_counter()
        spec, ex, tf = self.spec, self.settings.exchange_id, self.spec.timeframe
        lo, hi = spec.plan.training_window(at)
        window = TrainingWindow(start=lo, end=hi, holdout_end=at)
        features, candles, versions = {}, {}, {}
        for pair in spec.pairs:
            stored = self.store.read_frame(features_library(ex, tf), pair_slug(pair), lo, hi)
            stored_candles = self.store.read(ex, tf, pair, lo, hi)
            features[pair], candles[pair] = stored.frame, stored_candles.candles
            versions[f"features/{pair_slug(pair)}"] = stored.version
            versions[f"ohlcv/{pair_slug(pair)}"] = stored_candles.version
        label = LabelSpec(horizon=spec.label_horizon, threshold=spec.label_threshold, timeframe=tf)
        training = build_training_set(features, candles, label, window)
        stored_set = store_training_set(self.store, ex, training, versions, self.run_id)
        config = ModelConfig(
            n_folds=spec.n_folds,
            min_train=spec.min_train,
            num_boost_round=spec.num_boost_round,
            min_data_in_leaf=spec.min_data_in_leaf,
        )
        result = train_walk_forward(
            stored_set.frame,
            label.kind,
            config.walk_forward_spec(label.horizon),
            config.lightgbm_params(),
            stored_set.feature_names,
        )
        reference = reference_distribution(stored_set.frame, window, stored_set.feature_names)
        registered = register_trained_model(
            self.mlflow, spec.model_name, result, reference, stored_set, self.run_id
        )
        seconds = time.perf_counter() - started
        self._seconds[("train", at)] = seconds
        auc = result.oos_metrics.get("auc")
        self.models.append(
            ModelRecord(
                version=registered.version,
                trained_at=at,
                train_start=lo,
                train_end=hi,
                rows=result.n_rows,
                oos_auc=float(auc) if auc is not None else None,
                rejected=registered.rejected,
                seconds=seconds,
            )
        )
        self.log.info(
            "clock %s: trained v%s on [%s, %s), %d rows, OOS AUC %s, %.1fs",
            f"{at:%Y-%m-%d}",
            registered.version,
            f"{lo:%Y-%m-%d}",
            f"{hi:%Y-%m-%d}",
            result.n_rows,
            auc,
            seconds,
        )
        version = None if registered.rejected else registered.version
        self._challengers[at] = version
        return version

    def _backtest(self, version: int, start: datetime, end: datetime, at: datetime) -> ModelBacktest:
        """Freqtrade trading `version` on `[start, end)` (never past the clock `at`); memoized."""
        if end > at:
            raise LookaheadError(
                f"backtest of v{version} on [{start:%Y-%m-%d}, {end:%Y-%m-%d}) asked at clock {at:%Y-%m-%d}",
                "backtest a window only once the clock has passed its end",
            )
        key = (version, start, end)
        if key in self._backtests:
            self.backtests_reused += 1
            return self._backtests[key]
        started = time.perf_counter()
        self.mlflow.set_alias(self.spec.model_name, CHALLENGER, version)
        backtest = run_model_backtest(
            settings=self._at(at),
            config=BacktestSettings(max_open_trades=self.spec.max_open_trades),
            alias=CHALLENGER,
            version=self.mlflow.get_version(self.spec.model_name, version),
            pairs=self.spec.pairs,
            start=start.date(),
            end=end.date(),
            candle_store=self.store,
            freqtrade=self.freqtrade,
            mlflow=self.mlflow,
            # one ArcticDB pin per backtest: the pin is named after the run id and the alias
            dagster_run_id=f"{self.run_id}.v{version}.{start:%Y%m%d}-{end:%Y%m%d}",
            purpose="simulation",
        )
        self._seconds[("backtest", *key)] = time.perf_counter() - started
        self._backtests[key] = backtest
        return backtest

    def _drift_says_retrain(
        self, version: int, at: datetime, last_retrain_at: datetime | None
    ) -> tuple[bool, str]:
        """Drift of `version` on every pair at clock `at`, judged by the drift sensor's rule."""
        key = (version, at)
        if key in self._drift:
            return self._drift[key]
        started = time.perf_counter()
        self.mlflow.set_alias(self.spec.model_name, CHAMPION, version)
        config = DriftConfig(
            end=at.isoformat(), window_days=self.spec.drift_window_days, prediction_drift=False
        )
        policy = DriftPolicy(cooldown_hours=self.spec.drift_cooldown_hours)
        retrain, reasons = False, []
        for number, pair in enumerate(self.spec.pairs):
            try:
                scored = score_pair_drift(self._at(at), config, pair, self.mlflow, self.store)
                severity, psi = scored.verdict.severity.value, scored.verdict.median_psi
            except ValidationError as exc:  # e.g. the window lies inside the training period
                severity, psi = "insufficient", 0.0
                reasons.append(f"{pair}: not scored ({exc.args[0] if exc.args else exc})")
            event = DriftEvent(
                model=self.spec.model_name,
                model_version=version,
                pair=pair,
                severity=severity,
                psi=psi,
                at=at,
                storage_id=int(at.timestamp()) * 100 + number,
            )
            decision = decide_drift_action(event, version, last_retrain_at, policy)
            retrain |= decision.action == "retrain"
            reasons.append(decision.reason)
        self._seconds[("drift", *key)] = time.perf_counter() - started
        self._drift[key] = (retrain, "; ".join(reasons))
        return self._drift[key]

    # -- one policy at one step ------------------------------------------------------------------------

    def _rollback(self, state: _PolicyState, at: datetime) -> TimelineEntry | None:
        champion = state.champion
        assert champion is not None
        since = at - timedelta(days=self.spec.performance_days)
        spans = [s for s in state.spans if s[2] == champion and s[0] >= since]
        if not spans:
            return None
        pieces = [self._backtests[(champion, a, b)].bar_returns for a, b, _, _ in spans]
        returns = stitch_returns(pieces)
        values = returns.to_numpy()
        sharpe = None
        if len(values) > 2 and values.std() > 0:
            from tradai_core.comparison import annualized_sharpe

            sharpe = annualized_sharpe(values, self.ppy)
        performance = ChampionPerformance(
            model="simulation",
            version=champion,
            window_start=spans[0][0],
            window_end=spans[-1][1],
            trade_count=sum(s[3] for s in spans),
            total_profit=float((1 + returns).prod() - 1),
            max_drawdown=max_drawdown(returns),
            sharpe=sharpe,
            sharpe_undefined=None if sharpe is not None else "no variance",
            storage_id=int(at.timestamp()),
            at=at,
        )
        decision = decide_rollback(performance, champion, state.entries, self.spec.rollback)
        if decision.action == "rollback" and decision.to_version is not None:
            event_key = performance.event_key
            state.audit(AuditAction.ROLLBACK, at, decision.to_version, decision.reason, event_key=event_key)
            state.champion = decision.to_version
            return TimelineEntry(
                policy=state.name,
                at=at,
                action="rollback",
                champion=decision.to_version,
                reason=decision.reason,
            )
        if decision.action == "alert":
            return TimelineEntry(
                policy=state.name, at=at, action="alert", champion=champion, reason=decision.reason
            )
        return None

    def _compare(self, champion: int, challenger: int, at: datetime) -> ComparisonRecord:
        key = (champion, challenger, at)
        if key in self._comparisons:
            return self._comparisons[key]
        lo, hi = self.spec.plan.validation_window(at)
        a = self._backtest(champion, lo, hi, at)
        b = self._backtest(challenger, lo, hi, at)
        result = compare_champion_challenger(
            a.bar_returns,
            b.bar_returns,
            list(a.trade_returns),
            list(b.trade_returns),
            timeframe=self.spec.timeframe,
            config=self.spec.comparison,
        )
        record = ComparisonRecord(
            at=at,
            champion=champion,
            challenger=challenger,
            window=(lo, hi),
            decision=result.decision.value,
            p_value=result.p_value,
            sharpe_diff=result.sharpe_diff,
            reason=result.reason,
        )
        self._comparisons[key] = record
        return record

    def _decide(self, state: _PolicyState, at: datetime) -> TimelineEntry:
        champion = state.champion
        assert champion is not None
        drift_retrain, drift_reason = False, ""
        if state.name == "drift":
            drift_retrain, drift_reason = self._drift_says_retrain(champion, at, state.last_retrain_at)
            state.costs.add(("drift", champion, at))
        retrain, why = wants_retrain(state.name, at, state.last_retrain_at, drift_retrain)
        if drift_reason:
            why = f"{why} ({drift_reason})"
        if not retrain:
            return TimelineEntry(policy=state.name, at=at, action="hold", champion=champion, reason=why)
        state.last_retrain_at = at
        challenger = self._challenger(at)
        state.costs.add(("train", at))
        training = self.spec.plan.training_window(at)
        validation = self.spec.plan.validation_window(at)
        if challenger is None:
            return TimelineEntry(
                policy=state.name,
                at=at,
                action="keep",
                champion=champion,
                reason=f"{why}; the challenger failed its sanity checks (rejected)",
                retrained=True,
                training_window=training,
            )
        record = self._compare(champion, challenger, at)
        state.costs.update({("backtest", champion, *validation), ("backtest", challenger, *validation)})
        outcome = ComparisonOutcome(
            model="simulation",
            decision=record.decision,
            reason=record.reason,
            champion_version=champion,
            challenger_version=challenger,
            p_value=record.p_value,
            storage_id=int(at.timestamp()),
            at=at,
        )
        decision = decide_promotion(outcome, champion, state.entries)
        action: Any = "keep"
        opened = ""
        if decision.action == "promote":
            state.close_challenge()  # the champion it challenged is gone
            action = "promote"
            state.audit(
                AuditAction.PROMOTE,
                at,
                challenger,
                decision.reason,
                event_key=outcome.event_key,
                challenger_version=challenger,
                p_value=record.p_value,
                decision=record.decision,
            )
            state.champion = challenger
        elif decision.action == "keep":
            state.audit(
                AuditAction.KEEP,
                at,
                champion,
                decision.reason,
                event_key=outcome.event_key,
                challenger_version=challenger,
                p_value=record.p_value,
                decision=record.decision,
            )
            if record.decision == "inconclusive" and self.spec.challenge_looks and state.challenge is None:
                state.challenge = Challenge(
                    champion=champion,
                    challenger=challenger,
                    started_at=at,
                    max_looks=self.spec.challenge_looks,
                    alpha=self.spec.comparison.alpha,
                )
                opened = f"; A/B challenge of v{challenger} opened (up to {self.spec.challenge_looks} looks)"
        return TimelineEntry(
            policy=state.name,
            at=at,
            action=action,
            champion=state.champion,
            challenger=challenger,
            p_value=record.p_value,
            sharpe_diff=record.sharpe_diff,
            reason=f"{why}; {decision.reason}{opened}",
            retrained=True,
            training_window=training,
            validation_window=validation,
        )

    # -- the run ---------------------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        """Step the clock through the plan; returns every policy's timeline, returns and table row."""
        started = time.perf_counter()
        plan, spec = self.spec.plan, self.spec
        steps = plan.steps
        states = {name: _PolicyState(name) for name in spec.policies}
        with ReplayServer(spec.candles_dir, spec.exchange_info_path, now_ms=_ms(steps[0])) as server:
            missing = sorted(set(spec.pairs) - set(server.pairs))
            if missing:
                raise ValidationError(
                    f"no recorded candles for {missing} in {spec.candles_dir}",
                    f"simulate pairs among {', '.join(server.pairs)}",
                )
            exchange = ExchangeResource(exchange_id=self.settings.exchange_id, base_url=server.base_url)
            for k, at in enumerate(steps):
                server.advance(to_ms=_ms(at))
                self.store.set_clock(at)
                if self.on_step is not None:
                    self.on_step(at)
                self._ingest(exchange, at)
                if k > 0:
                    self._evaluate_trading(states, steps[k - 1], at)
                if k == len(steps) - 1:
                    break
                for state in states.values():
                    state.timeline.append(self._step(state, at, first=k == 0))
                self.log.info(
                    "clock %s: %s",
                    f"{at:%Y-%m-%d}",
                    ", ".join(f"{s.name} v{s.champion}" for s in states.values()),
                )
        returns = {name: stitch_returns(state.pieces) for name, state in states.items()}
        trades = {name: sum(span[3] for span in state.spans) for name, state in states.items()}
        timelines = {name: state.timeline for name, state in states.items()}
        compute = {
            name: sum(self._seconds.get(c, 0.0) for c in state.costs) for name, state in states.items()
        }
        rows = policy_rows(
            returns, trades, timelines, compute, self.ppy, n_iterations=spec.comparison.n_iterations
        )
        return SimulationResult(
            plan=plan,
            pairs=spec.pairs,
            timelines=timelines,
            returns=returns,
            rows=rows,
            best=best_policy(rows, returns),
            challenges={
                name: [*state.challenges, *([state.challenge] if state.challenge else [])]
                for name, state in states.items()
            },
            models=self.models,
            comparisons=list(self._comparisons.values()),
            backtests_run=len(self._backtests),
            backtests_reused=self.backtests_reused,
            wall_seconds=time.perf_counter() - started,
            reads=self.store.reads,
        )

    def _step(self, state: _PolicyState, at: datetime, first: bool) -> TimelineEntry:
        if first:
            version = self._challenger(at)
            if version is None:
                raise ValidationError(
                    f"the bootstrap model trained at {at:%Y-%m-%d} failed its sanity checks",
                    "start the simulation later (more training data) or change the model config",
                )
            state.costs.add(("train", at))
            state.audit(AuditAction.BOOTSTRAP, at, version, "first model of the simulation")
            state.champion = version
            state.last_retrain_at = at
            return TimelineEntry(
                policy=state.name,
                at=at,
                action="bootstrap",
                champion=version,
                reason="first model of the simulation: champion by bootstrap",
                retrained=False,
                training_window=self.spec.plan.training_window(at),
            )
        rolled = self._rollback(state, at)
        if rolled is not None and rolled.action == "rollback":
            state.close_challenge()
            return rolled
        promoted = self._challenge_look(state, at)
        entry = self._decide(state, at)
        notes = [text for text in (rolled.reason if rolled is not None else "", state.note) if text]
        state.note = ""
        if notes:  # an alert, a challenge's look
            entry = entry.model_copy(update={"reason": "; ".join([*notes, entry.reason])})
        if promoted and entry.action in ("hold", "keep"):
            entry = entry.model_copy(update={"action": "promote"})
        return entry

    def _challenge_look(self, state: _PolicyState, at: datetime) -> bool:
        """Re-test the open A/B challenge with the step that just ended; True when it promoted the
        challenger (the step then goes on with it as champion). The look's summary is the step's note."""
        challenge = state.challenge
        if challenge is None:
            return False
        if challenge.champion != state.champion:
            state.close_challenge()
            return False
        start = at - timedelta(days=self.spec.plan.step_days)
        champion = self._backtest(challenge.champion, start, at, at)
        challenger = self._backtest(challenge.challenger, start, at, at)
        state.costs.add(("backtest", challenge.challenger, start, at))
        state.challenge_returns.append((champion.bar_returns, challenger.bar_returns))
        a = pd.concat([pair[0] for pair in state.challenge_returns])
        b = pd.concat([pair[1] for pair in state.challenge_returns])
        looked = challenge_look(
            challenge,
            a.to_numpy(),
            b.to_numpy(),
            at,
            periods_per_year=self.ppy,
            n_iterations=self.spec.comparison.n_iterations,
        )
        state.note = look_summary(looked)
        if looked.open:
            state.challenge = looked
            return False
        state.close_challenge(looked)
        if looked.outcome != "promote":
            return False
        outcome = ComparisonOutcome(
            model="simulation",
            decision="promote",
            reason=state.note,
            champion_version=challenge.champion,
            challenger_version=challenge.challenger,
            p_value=looked.looks[-1].p_value,
            storage_id=int(at.timestamp()) * 10 + 1,
            at=at,
        )
        decision = decide_promotion(outcome, state.champion, state.entries)
        if decision.action != "promote":
            return False
        state.audit(
            AuditAction.PROMOTE,
            at,
            challenge.challenger,
            state.note,
            event_key=outcome.event_key,
            challenger_version=challenge.challenger,
            p_value=outcome.p_value,
            decision="promote",
        )
        state.champion = challenge.challenger
        return True

    def _evaluate_trading(self, states: dict[str, _PolicyState], start: datetime, at: datetime) -> None:
        """Backtest `[start, at)` for each policy's champion in force (chosen at `start`), now that the clock
        is at its end."""
        for state in states.values():
            version = state.timeline[-1].champion
            backtest = self._backtest(version, start, at, at)
            state.pieces.append(backtest.bar_returns)
            state.spans.append((start, at, version, backtest.metrics.trade_count))


def simulate(
    spec: SimulationSpec,
    sandbox: Path,
    freqtrade: FreqtradeResource,
    *,
    run_id: str,
    log: logging.Logger | Any = logger,
    on_step: Callable[[datetime], None] | None = None,
) -> SimulationResult:
    """Run `spec` in a fresh sandbox folder (its own ArcticDB and MLflow stores); refuses a used folder."""
    if sandbox.exists() and any(sandbox.iterdir()):
        raise ValidationError(
            f"the simulation folder {sandbox} is not empty",
            "give each simulation a fresh folder (a walk-forward starts from nothing)",
        )
    sandbox.mkdir(parents=True, exist_ok=True)
    store = ClockGuardedStore(uri=f"lmdb://{sandbox / 'arcticdb'}")
    mlflow = MLflowResource(tracking_uri=f"sqlite:///{sandbox / 'mlflow.db'}")
    engine = WalkForwardSimulation(
        spec, store=store, mlflow=mlflow, freqtrade=freqtrade, run_id=run_id, log=log, on_step=on_step
    )
    return engine.run()


def check_policies(names: Sequence[str]) -> tuple[PolicyName, ...]:
    """Validated policy names, in the canonical order."""
    unknown = sorted(set(names) - set(POLICIES))
    if unknown:
        raise ValidationError(f"unknown policies {unknown}", f"choose among {', '.join(POLICIES)}")
    return tuple(p for p in POLICIES if p in names)


__all__ = [
    "ClockGuardedStore",
    "LookaheadError",
    "SimulationResult",
    "SimulationSpec",
    "WalkForwardSimulation",
    "check_policies",
    "simulate",
]
