"""Child process running one study-worker: `python -m tradai_resources.workers.hyperopt_child JOB`, or,
as a rule, a child forked from the pre-loaded Freqtrade worker (`zygote_server`) that calls `main([JOB])`.

One study-worker is one process (Freqtrade keeps process-global state and replaces the root logging
handlers, as for a backtest) that evaluates its share of a study's trials against the shared Optuna
storage. It does the expensive work once and only the per-trial work per trial, as Freqtrade's own
hyperopt does:

1. **once per worker**: Freqtrade's argument parser and config loader build a hyperopt-mode config from
   the job's `freqtrade hyperopt` argument list (the stock CLI takes the same list); `Backtesting` is
   built with markets answered from the recorded exchangeInfo snapshot (the same offline hook as the
   backtest worker, `tradai_resources.workers.backtest_child.offline_markets`, with every socket refused while
   Freqtrade starts); the candles are loaded; and the strategy's indicators are computed, in Freqtrade's
   `INDICATORS` state, so a parameter's `.range` yields every value of its space;
2. **per trial**: the sampled values are set on the strategy (`strategy.<param>.value`, `minimal_roi`
   through the strategy's ROI-table generator, `stoploss`), the entry/exit signals are computed on a copy
   of the indicator frames, and `Backtesting.backtest` runs; the objective comes from Freqtrade's own
   statistics functions.

If `populate_indicators` reads the *value* of a tuned parameter (Freqtrade detects this and warns that the
optimizer would never see its effect), indicators are instead recomputed per trial, like
`freqtrade hyperopt --analyze-per-epoch`: correct first, fast where the strategy allows it.

Every trial records, as Optuna user attributes, Freqtrade's Sharpe/Sortino/Calmar/profit/trade count,
the per-day Sharpe ratio, skewness and kurtosis of its realized daily returns (for the Deflated Sharpe
Ratio), and the applied values per space. A trial whose parameters an earlier finished trial already had
is not backtested again (the engine is deterministic): it repeats that trial's value and says so.

The job file (JSON) names the argument list, snapshot, storage, study, this worker's trial count and
sampler seed; a summary is written to `result_path` (atomically), or `error.json` and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tradai_core.hyperopt import (
    PARAMETER_SPACES,
    Objective,
    ParamValue,
    SearchSpace,
    daily_returns,
    objective_value,
    return_stats,
)
from tradai_core.statistics import undefined_reasons
from tradai_resources.workers.backtest_child import (
    network_guard,
    no_guard,
    offline_markets,
    vectorized_tick_size,
)
from tradai_resources.workers.jobs import HyperoptJob, run_job_file
from tradai_resources.workers.prescreen_study import run_prescreened

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 120
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 300


def make_storage(url: str) -> Any:
    """Optuna RDB storage for `url`: SQLite waits for its lock instead of failing when two workers write
    at once, and trials keep a heartbeat, so a trial left RUNNING by a killed worker is failed (and not
    counted) when the study resumes — on this machine or another."""
    import optuna

    engine_kwargs: dict[str, Any] = {}
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if path:

        def connect() -> sqlite3.Connection:
            # write-ahead log: readers never block the writer; NORMAL sync is safe with WAL
            connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection

        engine_kwargs["creator"] = connect
    elif url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
        )


def make_sampler(seed: int, startup_trials: int) -> Any:
    """The study's sampler: multivariate TPE, seeded; `constant_liar` keeps parallel workers apart."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials, multivariate=True, constant_liar=True
        )


def trade_fees(results: Any) -> list[float]:
    """Each trade's round-trip fee in stake currency from Freqtrade's results frame (entry fee on the
    value at the open, exit fee on the value at the close: `tradai_core.backtest_result.round_trip_fee`)."""
    if not len(results):
        return []
    fees = results["amount"] * (
        results["open_rate"] * results["fee_open"] + results["close_rate"] * results["fee_close"]
    )
    return [float(fee) for fee in fees]


class TrialEngine:
    """Freqtrade's `Backtesting` for one study-worker: built once, candles loaded once, indicators
    computed once where the strategy allows it; `evaluate` runs one trial."""

    def __init__(self, config: dict[str, Any], space: SearchSpace, objective: Objective, min_trades: int):
        from freqtrade.data.converter import trim_dataframes
        from freqtrade.data.history import get_timerange
        from freqtrade.enums import HyperoptState
        from freqtrade.optimize.backtesting import Backtesting
        from freqtrade.optimize.hyperopt.hyperopt_auto import HyperOptAuto
        from freqtrade.optimize.hyperopt_tools import HyperoptStateContainer
        from freqtrade.util.dry_run_wallet import get_dry_run_wallet

        self.space = space
        self.objective = objective
        self.min_trades = min_trades
        self.backtesting = Backtesting(config)
        self.backtesting._set_strategy(self.backtesting.strategylist[0])
        self.strategy = self.backtesting.strategy
        self.roi_helper = HyperOptAuto(config)
        self.roi_helper.strategy = self.strategy
        self.starting_balance = float(get_dry_run_wallet(config))
        self.params = {
            name: param
            for name, param in self.strategy.enumerate_parameters()
            if param.space in PARAMETER_SPACES and name in space.names
        }
        missing = sorted(
            p.name for p in space.parameters if p.space in PARAMETER_SPACES and p.name not in self.params
        )
        if missing:
            raise RuntimeError(f"strategy {space.strategy} has no parameters {missing}")
        self.data, timerange = self.backtesting.load_bt_data()
        HyperoptStateContainer.set_state(HyperoptState.INDICATORS)
        try:
            self.preprocessed = self.strategy.advise_all_indicators(self.data)
        finally:
            HyperoptStateContainer.set_state(HyperoptState.OPTIMIZE)
        # Freqtrade flags a tuned parameter whose value is read while indicators are computed.
        self.static_parameters = sorted(
            name
            for name, param in self.params.items()
            if param.in_space and param.optimize and getattr(param, "_warned_static_use", True)
        )
        self.indicators_once = not self.static_parameters
        trimmed = trim_dataframes(self.preprocessed, timerange, self.backtesting.required_startup)
        if not trimmed:
            raise RuntimeError("no candles left in the in-sample window after the strategy's startup candles")
        self.min_date, self.max_date = get_timerange(trimmed)
        if self.indicators_once:
            logger.info("indicators computed once for the study-worker (no tuned value is read in them)")
        else:
            logger.warning(
                "populate_indicators reads tuned parameters %s: indicators are recomputed per trial "
                "(use .range in populate_indicators to compute them once)",
                ", ".join(self.static_parameters),
            )

    def apply(self, values: dict[str, ParamValue]) -> dict[str, Any]:
        """Set sampled values on the strategy; return the values applied, by space."""
        applied: dict[str, Any] = {"buy_params": {}, "sell_params": {}, "roi": None, "stoploss": None}
        for spec in self.space.parameters:
            if spec.space in PARAMETER_SPACES:
                param = self.params[spec.name]
                param.value = spec.normalize(values[spec.name])
                applied[f"{spec.space}_params"][spec.name] = param.value
        if "roi" in self.space.spaces:
            table = self.roi_helper.generate_roi_table(
                {p.name: values[p.name] for p in self.space.in_space("roi")}
            )
            self.strategy.minimal_roi = table
            applied["roi"] = {str(minutes): float(ratio) for minutes, ratio in sorted(table.items())}
        if "stoploss" in self.space.spaces:
            self.strategy.stoploss = float(values["stoploss"])
            applied["stoploss"] = float(values["stoploss"])
        return applied

    def evaluate(self, values: dict[str, ParamValue]) -> dict[str, Any]:
        """Backtest the strategy with `values` on the in-sample window; return the trial's record."""
        from freqtrade.data.metrics import (
            calculate_calmar,
            calculate_max_drawdown,
            calculate_sharpe,
            calculate_sortino,
        )

        started = time.perf_counter()
        applied = self.apply(values)
        if self.indicators_once:
            processed = {pair: frame.copy() for pair, frame in self.preprocessed.items()}
        else:
            processed = self.strategy.advise_all_indicators(self.data)
        content = self.backtesting.backtest(
            processed=processed, start_date=self.min_date, end_date=self.max_date
        )
        results = content["results"]
        balance = self.starting_balance
        try:
            drawdown = calculate_max_drawdown(results, value_col="profit_abs", starting_balance=balance)
            max_drawdown = float(drawdown.relative_account_drawdown)
        except ValueError:  # Freqtrade's own answer when there is no drawdown to measure
            max_drawdown = 0.0
        stats = {
            "total_trades": len(results),
            "profit_total": float(results["profit_abs"].sum() / balance) if len(results) else 0.0,
            "sharpe": float(calculate_sharpe(results, self.min_date, self.max_date, balance)),
            "sortino": float(calculate_sortino(results, self.min_date, self.max_date, balance)),
            "calmar": float(calculate_calmar(results, self.min_date, self.max_date, balance)),
        }
        undefined = undefined_reasons(
            results["profit_abs"].to_numpy() if len(results) else [],
            balance,
            max_drawdown,
            {key: stats[key] for key in ("sharpe", "sortino", "calmar")},
            fees_abs=trade_fees(results),
        )
        returns = daily_returns(
            results["close_date"] if len(results) else [],
            results["profit_abs"] if len(results) else [],
            self.min_date,
            self.max_date,
            balance,
        )
        return {
            "value": objective_value(stats, self.objective, self.min_trades, undefined),
            "undefined": {name: why.reason for name, why in undefined.items()},
            "trades": stats["total_trades"],
            "sharpe": stats["sharpe"],
            "sortino": stats["sortino"],
            "calmar": stats["calmar"],
            "profit_total": stats["profit_total"],
            "max_drawdown": max_drawdown,
            "daily": return_stats(returns).model_dump(),
            **applied,
            "seconds": time.perf_counter() - started,
        }


class _Objective:
    """Optuna objective of one study-worker: sample, skip repeats, backtest, record."""

    def __init__(self, engine: TrialEngine, worker_index: int) -> None:
        self.engine = engine
        self.worker_index = worker_index
        self.backtests = 0
        self.duplicates = 0

    def __call__(self, trial: Any) -> float:
        values = {spec.name: spec.suggest(trial) for spec in self.engine.space.parameters}
        value, record = self.run(trial.study, values, trial.params, f"trial {trial.number}")
        trial.set_user_attr("record", record)
        return value

    def run(
        self, study: Any, values: dict[str, ParamValue], params: dict[str, Any], label: str = "a trial"
    ) -> tuple[float, dict]:
        """Backtest `values` (Optuna `params`) unless a finished trial of `study` had the same parameters;
        (value, the trial's record). `label` names the trial in the log."""
        from optuna.trial import TrialState

        for earlier in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if earlier.params == params and "record" in earlier.user_attrs:
                record = dict(earlier.user_attrs["record"])
                record.update(duplicate_of=earlier.number, worker=self.worker_index, seconds=0.0)
                self.duplicates += 1
                logger.info("%s repeats trial %d: value %.4f", label, earlier.number, earlier.value)
                return float(earlier.value), record
        record = self.engine.evaluate(values)
        record.update(duplicate_of=None, worker=self.worker_index)
        self.backtests += 1
        logger.info(
            "%s: value %.4f, %d trades, Sharpe %.3f in %.2f s",
            label,
            record["value"],
            record["trades"],
            record["sharpe"],
            record["seconds"],
        )
        return float(record["value"]), record


@contextmanager
def trial_engine(job: HyperoptJob) -> Iterator[tuple[TrialEngine, Any]]:
    """Freqtrade's engine for `job`, built offline (markets from the job's snapshot, no socket while
    Freqtrade starts); yields (engine, the markets' refusal log) and checks no trial reached the network."""
    from freqtrade.commands import Arguments
    from freqtrade.commands.optimize_commands import setup_optimize_configuration
    from freqtrade.enums import RunMode

    snapshot = json.loads(Path(job.exchange_info_path).read_text(encoding="utf-8"))
    args = Arguments(list(job.argv)).get_parsed_arg()
    with offline_markets(job.exchange, snapshot) as markets:
        guard = network_guard() if job.block_network else no_guard()
        with guard as network, vectorized_tick_size():
            config = setup_optimize_configuration(args, RunMode.HYPEROPT)
            engine = TrialEngine(config, job.search_space, job.objective, job.min_trades)
        if network.refused:
            raise RuntimeError(f"Freqtrade tried to reach the network: {network.refused}")
        if not markets.answered:
            raise RuntimeError(
                "Freqtrade did not load markets through ccxt's fetch; the offline hook is stale"
            )
        yield engine, markets
        if markets.refused:
            raise RuntimeError(f"a trial tried to reach the exchange: {markets.refused}")


def run_worker(job: HyperoptJob) -> dict[str, Any]:
    """Build the engine once, then run this worker's share of the study; return a summary."""
    started = time.perf_counter()
    import optuna

    with trial_engine(job) as (engine, _markets):
        setup_seconds = time.perf_counter() - started
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(
            study_name=job.study_name,
            storage=make_storage(job.storage_url),
            sampler=make_sampler(job.sampler_seed, job.startup_trials),
        )
        objective = _Objective(engine, job.worker_index)
        budget = job.time_budget_seconds
        timeout = None if budget is None else max(budget - (time.perf_counter() - started), 0.001)
        prescreen: dict[str, Any] | None = None
        if job.prescreen is None:
            study.optimize(objective, n_trials=job.n_trials, timeout=timeout)
        else:
            prescreen = run_prescreened(study, engine, objective, job, timeout, make_sampler)
    return {
        "worker": job.worker_index,
        "backtests": objective.backtests,
        "duplicates": objective.duplicates,
        "indicators_once": engine.indicators_once,
        "static_parameters": engine.static_parameters,
        "setup_seconds": setup_seconds,
        "seconds": time.perf_counter() - started,
        "in_sample_start": engine.min_date.isoformat(),
        "in_sample_end": engine.max_date.isoformat(),
        "prescreen": prescreen,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the job file named by the single argument; return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "python -m tradai_resources.workers.hyperopt_child JOB.json"
    return run_job_file(argv, HyperoptJob, _summary, usage)


def _summary(job: HyperoptJob) -> Callable[[IO[str]], Any]:
    """Run the study-worker; the writer of its summary file."""
    summary = run_worker(job)
    return lambda handle: json.dump(summary, handle)


if __name__ == "__main__":
    sys.exit(main())
