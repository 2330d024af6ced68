"""The pre-screen inside a study-worker: the strategy's own signals, computed once per buy/sell parameter set
from the indicators the worker's Freqtrade engine computed once, scored by the compiled simulation.

`PrescreenEngine(trial_engine)` refuses (`Unmodellable`) a strategy the simulation cannot model: one
overriding a callback it does not reproduce (`tradai_core.prescreen.UNMODELLED_CALLBACKS`), adjusting
positions, shorting, or running protections or a detail timeframe. `evaluate(values)` scores one
parameter set as the worker's `TrialEngine.evaluate` would, with the same objective and statistics
functions; only the trade loop differs.
"""

from __future__ import annotations

import ast
import inspect
import logging
import textwrap
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from tradai_core.hyperopt import (
    ParamValue,
    objective_value,
    return_stats,
)
from tradai_core.prescreen import (
    UNMODELLED_CALLBACKS,
    MarketArrays,
    SimulationSettings,
    fast_daily_returns,
    market_arrays,
    simulate_trades,
    trade_statistics,
    unmodellable_reasons,
)
from tradai_core.statistics import undefined_reasons
from tradai_core.timeframes import timeframe_seconds

logger = logging.getLogger(__name__)

SIGNAL_CACHE_SIZE = 4096
"""Signal arrays kept per worker (one per distinct buy-space or sell-space value set; one byte per pair and
candle each: 4096 × 6 pairs × 4 400 candles is ~100 MB at most)."""
INDICATOR_CACHE_SIZE = 32
"""Indicator frames kept per worker when `populate_indicators` reads tuned values (one set of frames per
distinct value of those parameters: a few MB each)."""


class Unmodellable(Exception):
    """The simulation cannot model this strategy; `reasons` say why (for the study's metadata)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def overridden_callbacks(strategy: Any) -> list[str]:
    """Callbacks of `UNMODELLED_CALLBACKS` the strategy's class overrides (Freqtrade's `IStrategy` defaults
    are no-ops the simulation reproduces)."""
    from freqtrade.strategy import IStrategy

    names = []
    for name in UNMODELLED_CALLBACKS:
        own = getattr(type(strategy), name, None)
        base = getattr(IStrategy, name, None)
        if own is not None and base is not None and own is not base:
            names.append(name)
    return names


def modelling_problems(strategy: Any, config: dict[str, Any]) -> list[str]:
    """Why the simulation cannot model this strategy under `config` (empty: it can)."""
    reasons = unmodellable_reasons(
        overridden_callbacks(strategy), position_adjustment=bool(strategy.position_adjustment_enable)
    )
    if getattr(strategy, "can_short", False) and config.get("trading_mode", "spot") != "spot":
        reasons.append("it trades short")
    if config.get("timeframe_detail"):
        reasons.append("a detail timeframe is set")
    if config.get("enable_protections"):
        reasons.append("protections are enabled")
    if getattr(strategy, "use_custom_roi", False):
        reasons.append("use_custom_roi is set")
    return reasons


def _pair_blind(method: Any, startup_candles: int) -> bool:
    """Whether a `populate_*_trend` method may run on every pair's frame stacked: its source reads neither
    `metadata` (beyond its signature) nor the data provider, and the strategy has startup candles to absorb
    a look-back across the seam."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    except (OSError, TypeError, SyntaxError):
        return False
    function = tree.body[0]
    if startup_candles < 1 or not isinstance(function, ast.FunctionDef):
        return False
    for node in ast.walk(ast.Module(body=function.body, type_ignores=[])):
        if isinstance(node, ast.Name) and node.id == "metadata":
            return False
        if isinstance(node, ast.Attribute) and node.attr == "dp":
            return False
    return True


class PrescreenEngine:
    """Scores parameter sets with the compiled simulation, on a study-worker's Freqtrade engine."""

    def __init__(self, engine: Any) -> None:
        problems = modelling_problems(engine.strategy, engine.backtesting.config)
        if problems:
            raise Unmodellable(problems)
        self.engine = engine
        self.strategy = engine.strategy
        self._indicators: OrderedDict[tuple[Any, ...], dict[str, pd.DataFrame]] = OrderedDict()
        self.indicator_computations = 0
        backtesting = engine.backtesting
        self.config = backtesting.config
        self.min_date = pd.Timestamp(engine.min_date)
        self.max_date = pd.Timestamp(engine.max_date)
        self.timeframe_minutes = timeframe_seconds(self.config["timeframe"]) // 60
        self.fee = float(backtesting.fee)
        pairs = list(engine.preprocessed)
        exchange = backtesting.exchange
        self.step = {pair: exchange.get_precision_amount(pair) for pair in pairs}
        self.tick = {
            pair: backtesting.price_pair_prec.get(pair, exchange.get_precision_price(pair)) for pair in pairs
        }
        signals = self._signals_now()
        self.base: MarketArrays = market_arrays(
            signals, self.min_date, self.max_date, tick=self.tick, step=self.step
        )
        # where each pair's signal rows land on the grid (Freqtrade: trim, shift by one, drop the first)
        self._slices: dict[str, tuple[int, int, np.ndarray]] = {}
        for pair, frame in signals.items():
            dates = pd.DatetimeIndex(pd.to_datetime(frame["date"], utc=True))
            first = int(dates.searchsorted(self.min_date, side="left"))
            stop = int(dates.searchsorted(self.max_date, side="right"))
            where = self.base.dates.get_indexer(dates[first + 1 : stop])
            self._slices[pair] = (first, stop, where)
        self._stackable = {
            "enter": _pair_blind(
                type(self.strategy).populate_entry_trend, engine.strategy.startup_candle_count
            ),
            "exit": _pair_blind(
                type(self.strategy).populate_exit_trend, engine.strategy.startup_candle_count
            ),
        }
        self._cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self.signal_computations = 0

    def _signals_now(self) -> dict[str, pd.DataFrame]:
        """Entry/exit signals of every pair with the strategy's current parameter values."""
        frames = self._frames()
        return {
            pair: self.strategy.ft_advise_signals(frame, {"pair": pair}) for pair, frame in frames.items()
        }

    def _frames(self) -> dict[str, pd.DataFrame]:
        """Indicator frames for the strategy's current values (copies: the signals write into them).

        When `populate_indicators` reads tuned values (Freqtrade flags those parameters, the engine's
        `static_parameters`), they are computed once per distinct value set of just those parameters."""
        if self.engine.indicators_once:
            return {pair: frame.copy() for pair, frame in self.engine.preprocessed.items()}
        key = tuple((name, self.engine.params[name].value) for name in self.engine.static_parameters)
        frames = self._indicators.get(key)
        if frames is None:
            frames = self.strategy.advise_all_indicators(self.engine.data)
            self.indicator_computations += 1
            self._indicators[key] = frames
            if len(self._indicators) > INDICATOR_CACHE_SIZE:
                self._indicators.popitem(last=False)
        else:
            self._indicators.move_to_end(key)
        return {pair: frame.copy() for pair, frame in frames.items()}

    def _signal_array(self, side: str) -> np.ndarray:
        """The grid's shifted entry (`side` "enter") or exit ("exit") flags with the strategy's current
        parameter values, from its own `populate_entry_trend`/`populate_exit_trend`.

        When the method reads neither `metadata` nor the data provider, it runs once over every pair's
        frame stacked (one pandas pass instead of one per pair): a look-back across two pairs' frames only
        reaches the next pair's startup candles, which the backtest never trades."""
        target = np.zeros_like(self.base.enter)
        advise = self.strategy.advise_entry if side == "enter" else self.strategy.advise_exit
        column = f"{side}_long"
        frames = self._frames()
        if self._stackable[side]:
            lengths = [len(frame) for frame in frames.values()]
            stacked = advise(pd.concat(list(frames.values()), ignore_index=True), {"pair": ""})
            values = stacked[column].to_numpy(dtype=float) if column in stacked else np.zeros(sum(lengths))
            offsets = np.concatenate(([0], np.cumsum(lengths)))
            per_pair = {pair: values[offsets[i] : offsets[i + 1]] for i, pair in enumerate(frames)}
        else:
            per_pair = {}
            for pair, frame in frames.items():
                signals = advise(frame, {"pair": pair})
                per_pair[pair] = (
                    signals[column].to_numpy(dtype=float) if column in signals else np.zeros(len(frame))
                )
        for i, (pair, flags) in enumerate(per_pair.items()):
            first, stop, where = self._slices[pair]
            target[i, where] = flags[first : stop - 1] == 1
        return target

    def settings(self) -> SimulationSettings:
        """The strategy's exits (as the worker applied the trial's values), money and costs."""
        s = self.strategy
        stake = self.config.get("stake_amount", "unlimited")
        mot = s.max_open_trades
        return SimulationSettings(
            minimal_roi={int(k): float(v) for k, v in s.minimal_roi.items()},
            stoploss=float(s.stoploss),
            trailing_stop=bool(s.trailing_stop),
            trailing_stop_positive=None
            if s.trailing_stop_positive is None
            else float(s.trailing_stop_positive),
            trailing_stop_positive_offset=float(s.trailing_stop_positive_offset or 0.0),
            trailing_only_offset_is_reached=bool(s.trailing_only_offset_is_reached),
            use_exit_signal=bool(s.use_exit_signal),
            exit_profit_only=bool(s.exit_profit_only),
            exit_profit_offset=float(s.exit_profit_offset or 0.0),
            ignore_roi_if_entry_signal=bool(s.ignore_roi_if_entry_signal),
            max_open_trades=-1 if mot == float("inf") else int(mot),
            stake_amount=None if stake == "unlimited" else float(stake),
            starting_balance=float(self.engine.starting_balance),
            tradable_balance_ratio=float(self.config.get("tradable_balance_ratio", 0.99)),
            fee=self.fee,
            timeframe_minutes=self.timeframe_minutes,
        )

    def market_for(self, values: dict[str, ParamValue]) -> MarketArrays:
        """The simulation's input for `values` (applied to the strategy first). Entry signals are computed
        once per set of buy-space values and exit signals once per set of sell-space values (Freqtrade's
        convention: `populate_entry_trend` reads the buy space, `populate_exit_trend` the sell space; a
        strategy that does otherwise shows up in the rank-agreement check) — and, when
        `populate_indicators` reads tuned values, per value set of those too; with only ROI, stoploss or
        trailing values changing, no signal is recomputed."""
        arrays = []
        static = tuple((name, values[name]) for name in self.engine.static_parameters)
        for side, space in (("enter", "buy"), ("exit", "sell")):
            # indicators that read tuned values: signals also depend on those values
            key = (side, *static, *((p.name, values[p.name]) for p in self.engine.space.in_space(space)))
            cached = self._cache.get(key)
            if cached is None:
                cached = self._signal_array(side)
                self._cache[key] = cached
                self.signal_computations += 1
                if len(self._cache) > SIGNAL_CACHE_SIZE:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            arrays.append(cached)
        return self.base.model_copy(update={"enter": arrays[0], "exit": arrays[1]})

    def trades(self, values: dict[str, ParamValue]) -> pd.DataFrame:
        """The simulated trades of one parameter set."""
        self.engine.apply(values)
        return simulate_trades(self.market_for(values), self.settings())

    def evaluate(self, values: dict[str, ParamValue]) -> dict[str, Any]:
        """Score one parameter set: the record `TrialEngine.evaluate` makes, from the simulation."""
        started = time.perf_counter()
        trades = self.trades(values)
        balance = float(self.engine.starting_balance)
        profits = trades["profit_abs"].to_numpy(float)
        stats = trade_statistics(profits, self.min_date, self.max_date, balance)
        fees = (trades["amount"] * (trades["open_rate"] + trades["close_rate"]) * self.fee).to_numpy(float)
        cumulative = balance + np.concatenate(([0.0], np.cumsum(profits)))
        peak = np.maximum.accumulate(cumulative)
        drawdown = float(((peak - cumulative) / peak).max()) if profits.size else 0.0
        undefined = undefined_reasons(
            profits, balance, drawdown, {k: stats[k] for k in ("sharpe", "sortino", "calmar")}, fees_abs=fees
        )
        returns = fast_daily_returns(
            trades["close_date"].to_numpy("datetime64[ns]"), profits, self.min_date, self.max_date, balance
        )
        return {
            "value": objective_value(stats, self.engine.objective, self.engine.min_trades, undefined),
            "trades": int(stats["total_trades"]),
            "sharpe": float(stats["sharpe"]),
            "profit_total": float(stats["profit_total"]),
            "daily_sharpe": return_stats(returns).sharpe,
            "seconds": time.perf_counter() - started,
        }
