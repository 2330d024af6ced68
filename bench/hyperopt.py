"""Hyperopt benchmark (issue: hyperparameter optimization with Optuna).

Same strategy, candles, search space (`buy sell`), objective (Freqtrade's Sharpe ratio, at least one
trade) and trial count, on 2 cores:

- **ours**: `HyperoptResource.optimize` with 2 study-workers sharing an Optuna SQLite study (each builds
  Freqtrade's `Backtesting` once, computes indicators once, then only entry/exit signals + the backtest
  per trial), TPE sampler;
- **baseline**: the stock CLI, `freqtrade hyperopt --hyperopt-loss SharpeHyperOptLoss -j 2 --spaces buy
  sell -e N --random-state S`, on the same workspace layout (markets from the loopback replay server,
  candles from the same Freqtrade data files), with the same sampler as ours — multivariate TPE with
  constant liar and the same startup trials, seeded with the same S — chosen through Freqtrade's own hook,
  a `HyperOpt.generate_estimator` in the strategy (`SAME_SAMPLER`); its default would be NSGA-III.

The stock CLI cannot run a `TradAIStrategy` subclass with `-j 2`: its `hyperopt_pickle_magic` registers
the module of every strategy base class (`strategies.base`) for pickling by value, and the pydantic
models defined there (`StrategyMetadata`) fail to unpickle in its joblib workers. The CLI therefore runs a
plain-`IStrategy` copy of the strategy — the same module with the base class swapped and `get_metadata`
dropped (`plain_istrategy_source`), i.e. the same indicator, entry, exit and parameter code — and the
benchmark checks that the CLI's best epoch scores exactly what our backtest of the TradAI strategy scores
with those parameters.

Printed: wall time for N trials (the ratio is ours / CLI: below 1 is faster; the trials-per-minute speed-up
is its inverse), and the best objective each reaches in equal wall time — ours given the CLI's whole wall
time as its budget, and both at the moment ours finished its N trials (read from the trials' completion
times). `uv run python -m bench.hyperopt` runs it alone.
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ccxt
import pandas as pd

from bench.common import PROJECT_ROOT, candles_dir, median_seconds, report
from strategies.config import load_strategy_config
from strategies.validation import STRATEGIES_DIR, find_strategy_file, load_strategy_class
from tradai_core.backtest_config import BacktestRunConfig
from tradai_core.candles import normalize_candles
from tradai_core.hyperopt import StudyReport, StudySpec, objective_value
from tradai_core.tuned_params import apply_values
from tradai_core.urls import rebase_urls
from tradai_replay.server import ReplayServer
from tradai_resources.freqtrade_backtester import FreqtradeResource
from tradai_resources.freqtrade_hyperopt import HyperoptResource, hyperopt_argv
from tradai_resources.freqtrade_workspace import prepare_workspace
from tradai_resources.hyperopt_space import search_space

STRATEGY = "RsiMeanReversion"
PAIRS = ("BTC/USDT", "ETH/USDT", "ADA/USDT", "LTC/USDT", "XRP/USDT", "DOGE/USDT")
TIMERANGE = "20210601-20211201"
SEED = 7
WORKERS = 2
TRADAI_DEFAULTS = {
    "INTERFACE_VERSION": 3,
    "can_short": False,
    "process_only_new_candles": True,
    "use_exit_signal": True,
}
"""Class attributes `TradAIStrategy` sets for its subclasses."""
SAME_SAMPLER = f"""
class HyperOpt:
    @staticmethod
    def generate_estimator(dimensions, **kwargs):
        import optuna

        return optuna.samplers.TPESampler(
            seed=kwargs["random_state"],
            n_startup_trials={StudySpec.model_fields["startup_trials"].default},
            multivariate=True,
            constant_liar=True,
        )
"""
"""Freqtrade's hook for the CLI's sampler: ours (`hyperopt_child.make_sampler`), seeded by --random-state."""


def _candles(folder: Path) -> dict[str, pd.DataFrame]:
    start = pd.Timestamp(TIMERANGE[:8], tz="UTC") - pd.Timedelta(days=20)
    end = pd.Timestamp(TIMERANGE[9:], tz="UTC") + pd.Timedelta(days=1)
    return {
        pair: normalize_candles(pd.read_parquet(folder / f"{pair.replace('/', '_')}-1h.parquet")).loc[
            start:end
        ]
        for pair in PAIRS
    }


def plain_istrategy_source(source: str, class_name: str) -> str:
    """The strategy module rewritten to subclass Freqtrade's `IStrategy` directly (for the stock CLI).

    Drops the `strategies.base` import and `get_metadata`, carries over the class attributes
    `TradAIStrategy` sets, unless the strategy sets them itself, and adds `SAME_SAMPLER`; everything else
    is unchanged.
    """
    tree = ast.parse(source)
    tree.body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.ImportFrom) and node.module == "strategies.base")
    ]
    head = 0
    while head < len(tree.body) and (
        (isinstance(tree.body[head], ast.Expr) and head == 0)
        or (isinstance(tree.body[head], ast.ImportFrom) and tree.body[head].module == "__future__")
    ):
        head += 1
    tree.body.insert(head, ast.parse("from freqtrade.strategy import IStrategy").body[0])
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            node.bases = [ast.Name("IStrategy", ast.Load())]
            node.body = [
                n for n in node.body if not (isinstance(n, ast.FunctionDef) and n.name == "get_metadata")
            ]
            own = {t.id for n in node.body if isinstance(n, ast.Assign | ast.AnnAssign) for t in _targets(n)}
            inherited = {k: v for k, v in TRADAI_DEFAULTS.items() if k not in own}
            node.body[1:1] = [ast.parse(f"{key} = {value!r}").body[0] for key, value in inherited.items()]
            node.body.append(ast.parse(SAME_SAMPLER).body[0])
    return ast.unparse(ast.fix_missing_locations(tree))


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.Name]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t for t in targets if isinstance(t, ast.Name)]


def run_cli(
    root: Path,
    candles: dict[str, pd.DataFrame],
    n_trials: int,
    folder: Path,
    *,
    strategy: str = STRATEGY,
    timerange: str = TIMERANGE,
    spaces: tuple[str, ...] | None = None,
) -> tuple[float, list]:
    """Run the stock `freqtrade hyperopt` (on the pairs of `candles`); return its wall time and its epochs
    (one dict per line)."""
    strategy_file = find_strategy_file(strategy, STRATEGIES_DIR)
    config = load_strategy_config(strategy_file.with_suffix(".yaml"))
    run = BacktestRunConfig(timerange=timerange, pairs=tuple(candles))
    workspace = prepare_workspace(root, strategy_file, config, run, candles)
    copied = workspace.strategy_dir / strategy_file.name
    copied.write_text(plain_istrategy_source(copied.read_text(), strategy))
    spaces = spaces or search_space_spaces()
    argv = hyperopt_argv(
        workspace, strategy, timerange, spaces, epochs=n_trials, jobs=WORKERS, seed=SEED, min_trades=1
    )
    with ReplayServer(folder) as server:
        ft_config = json.loads(workspace.config_path.read_text())
        ft_config["exchange"]["ccxt_config"] = {
            "urls": {"api": rebase_urls(ccxt.binance().urls["api"], server.base_url)}
        }
        workspace.config_path.write_text(json.dumps(ft_config, indent=2))
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "freqtrade", *argv, "--disable-param-export"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        elapsed = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"freqtrade hyperopt failed:\n{done.stderr[-3000:]}")
    results = workspace.user_data_dir / "hyperopt_results"
    [fthypt] = results.glob("*.fthypt")
    epochs = [json.loads(line) for line in fthypt.read_text().splitlines() if line.strip()]
    for epoch in epochs:
        epoch["elapsed"] = epoch["results_metrics"]["backtest_run_end_ts"] - started
    return elapsed, epochs


def search_space_spaces() -> tuple[str, ...]:
    """The spaces both sides tune (the strategy's declared buy and sell spaces)."""
    return search_space(load_strategy_class(STRATEGY), None, "1h").spaces


def run_ours(
    root: Path, candles: dict[str, pd.DataFrame], n_trials: int, budget: float | None = None
) -> tuple[float, StudyReport, list[float]]:
    """Our study in a fresh SQLite storage; returns wall time, report and each trial's completion time."""
    resource = HyperoptResource(storage_url=f"sqlite:///{root / 'optuna.db'}", work_dir=str(root / "work"))
    spec = StudySpec(n_trials=n_trials, workers=WORKERS, seed=SEED, min_trades=1, time_budget_seconds=budget)
    run = BacktestRunConfig(timerange=TIMERANGE, pairs=PAIRS)
    started = time.time()
    study = resource.optimize(STRATEGY, STRATEGIES_DIR, candles, run, spec)
    elapsed = time.time() - started
    completed = {
        t.number: t.datetime_complete.timestamp() - started
        for t in resource.load_study(study.study_name).trials
        if t.datetime_complete is not None
    }
    return elapsed, study, [completed[t.number] for t in study.trials]


def check_cli_agrees(epochs: list[dict], candles: dict[str, pd.DataFrame], root: Path) -> str:
    """Backtest the TradAI strategy with the CLI's best parameters; its Sharpe must equal the CLI's."""
    best = min(epochs, key=lambda e: float(e["loss"]))
    space = search_space(load_strategy_class(STRATEGY), None, "1h")
    values = {p.space: {} for p in space.parameters}
    for spec in space.parameters:
        values[spec.space][spec.name] = spec.normalize(best["params_dict"][spec.name])
    config = load_strategy_config(find_strategy_file(STRATEGY, STRATEGIES_DIR).with_suffix(".yaml"))
    tuned = apply_values(config, values.get("buy"), values.get("sell"))
    result = FreqtradeResource(work_dir=str(root)).backtest(
        STRATEGY,
        STRATEGIES_DIR,
        candles,
        BacktestRunConfig(timerange=TIMERANGE, pairs=PAIRS),
        strategy_config=tuned,
    )
    ours = objective_value(result.freqtrade_stats, "sharpe", 1)
    verdict = "equal" if math.isclose(ours, -float(best["loss"]), rel_tol=1e-9) else "DIFFERENT"
    return (
        f"check: the CLI's best epoch {best['params_dict']} scored Sharpe {-float(best['loss']):.6f}; "
        f"our backtest of the TradAI strategy with those values scores {ours:.6f} ({verdict})"
    )


def best_until(values: list[float], times: list[float], limit: float) -> float:
    """Best objective among trials finished by `limit` seconds (−inf when none had)."""
    reached = [v for v, t in zip(values, times, strict=True) if t <= limit]
    return max(reached, default=float("-inf"))


def run(n_trials: int = 60, repeats: int = 1) -> None:
    """Trials per minute and best objective in equal wall time, ours vs `freqtrade hyperopt`."""
    folder = candles_dir()
    candles = _candles(folder)
    print(
        f"{STRATEGY}, {len(PAIRS)} pairs × {TIMERANGE}, spaces {' '.join(search_space_spaces())}, "
        f"{n_trials} trials, {WORKERS} workers/jobs, objective Sharpe (≥ 1 trade), from {folder}"
    )
    import optuna  # noqa: F401  # warm the parent as a running code location is: imports are not timed

    work = Path(tempfile.mkdtemp(prefix="tradai-bench-hyperopt-"))
    counter = iter(range(10_000))
    outcome: dict[str, object] = {}

    def ours() -> None:
        outcome["ours"] = run_ours(work / f"ours-{next(counter)}", candles, n_trials)

    def cli() -> None:
        outcome["cli"] = run_cli(work / f"cli-{next(counter)}", candles, n_trials, folder)

    ours_s = median_seconds(ours, repeats)
    cli_s = median_seconds(cli, repeats)
    ours_elapsed, study, ours_times = outcome["ours"]  # type: ignore[misc]
    cli_elapsed, epochs = outcome["cli"]  # type: ignore[misc]
    ours_values = [t.value for t in study.trials]
    cli_values = [-float(e["loss"]) for e in epochs]
    cli_times = [float(e["elapsed"]) for e in epochs]

    agreement = check_cli_agrees(epochs, candles, work / "check")
    budget_elapsed, budget_study, _ = run_ours(work / "ours-budget", candles, 100_000, budget=cli_elapsed)
    rows = [
        (
            f"{n_trials} trials, 2 cores (ours {n_trials / ours_s * 60:.0f}/min, "
            f"CLI {len(epochs) / cli_s * 60:.0f}/min)",
            ours_s,
            cli_s,
            f"trials/min speed-up {cli_s / ours_s * n_trials / max(len(epochs), 1):.2f}×; target ≥ 1.5×",
        ),
    ]
    report("Hyperopt: wall time for the same trials (ours / freqtrade hyperopt)", rows)
    at_ours_end = ours_elapsed
    print("\n## Hyperopt: best objective (Freqtrade Sharpe, in-sample) in equal wall time")
    print(f"| {'budget':<44} | {'ours':>8} | {'CLI':>8} | trials ours / CLI |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 10}|{'-' * 19}|")
    print(
        f"| {f'{at_ours_end:.0f} s (ours done with {n_trials} trials)':<44} | "
        f"{best_until(ours_values, ours_times, at_ours_end):>8.3f} | "
        f"{best_until(cli_values, cli_times, at_ours_end):>8.3f} | "
        f"{sum(t <= at_ours_end for t in ours_times)} / {sum(t <= at_ours_end for t in cli_times)} |"
    )
    print(
        f"| {f'{cli_elapsed:.0f} s (CLI done with {len(epochs)} epochs)':<44} | "
        f"{budget_study.best.value:>8.3f} | {max(cli_values):>8.3f} | "
        f"{budget_study.trials_total} / {len(epochs)} |"
    )
    print(
        f"(both: multivariate TPE, seed {SEED} (the CLI's --random-state); "
        f"budget run took {budget_elapsed:.0f} s wall)"
    )
    print(agreement)


if __name__ == "__main__":
    run()
