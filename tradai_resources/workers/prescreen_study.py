"""A study-worker's run with the pre-screen: explore with the simulation, check its rank agreement with
Freqtrade on a random sample, then backtest the finalists with Freqtrade — or fall back to plain Freqtrade
trials when the strategy cannot be modelled or the agreement is too low.

Only Freqtrade backtests enter the shared Optuna study (so its best value, the tuned parameters and the
overfitting gate rest on Freqtrade alone); the explored sets are kept in an in-memory study, and every one
Freqtrade did not backtest is reported (its per-day Sharpe ratio) so the Deflated Sharpe Ratio counts it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from tradai_core.prescreen import PrescreenSummary, agreement, sample_indices
from tradai_resources.workers.jobs import HyperoptJob
from tradai_resources.workers.prescreen_engine import PrescreenEngine, Unmodellable

logger = logging.getLogger(__name__)


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(params.items()))


def _confirm(study: Any, objective: Callable[[Any], float], params: list[dict[str, Any]]) -> list[float]:
    """Backtest `params` with Freqtrade as trials of the shared study; their values, in order."""
    before = {t.number for t in study.get_trials(deepcopy=False)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # enqueue_trial's "experimental" note
        for values in params:
            study.enqueue_trial(values, skip_if_exists=False)
    study.optimize(objective, n_trials=len(params))
    ours = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.number not in before), key=lambda t: t.number
    )
    if len(ours) != len(params) or any(t.value is None for t in ours):
        raise RuntimeError(f"{len(params)} Freqtrade confirmations were asked for, {len(ours)} trials ran")
    return [float(t.value) for t in ours]  # one worker runs the enqueued trials in order


def run_prescreened(
    study: Any,
    engine: Any,
    objective: Callable[[Any], float],
    job: HyperoptJob,
    timeout: float | None,
    make_sampler: Callable[[int, int], Any],
) -> dict[str, Any]:
    """Run `job` (whose `prescreen` is set) against the shared `study`; return the `PrescreenSummary`."""
    import optuna

    plan = job.prescreen
    assert plan is not None
    freqtrade_budget = plan.top_k + plan.agreement_sample
    try:
        screen = PrescreenEngine(engine)
    except Unmodellable as exc:
        note = (
            f"pre-screen not used: the simulation cannot model {job.strategy} ({exc}); plain Freqtrade trials"
        )
        logger.warning(note)
        study.optimize(objective, n_trials=freqtrade_budget, timeout=timeout)
        return PrescreenSummary(used=False, note=note).model_dump(mode="json")

    started = time.perf_counter()
    explore = optuna.create_study(direction="maximize", sampler=make_sampler(plan.seed, job.startup_trials))
    scored: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}

    def score(trial: Any) -> float:
        values = {spec.name: spec.suggest(trial) for spec in engine.space.parameters}
        key = _key(trial.params)
        if key not in scored:
            scored[key] = (dict(trial.params), screen.evaluate(values))
        return float(scored[key][1]["value"])

    explore.optimize(score, n_trials=plan.explore_trials, timeout=timeout)
    explore_seconds = time.perf_counter() - started
    explored = list(scored.values())
    logger.info(
        "pre-screen explored %d parameter sets (%d distinct) in %.1f s, %d signal computations",
        len(explore.trials),
        len(explored),
        explore_seconds,
        screen.signal_computations,
    )

    sample = [explored[i] for i in sample_indices(len(explored), plan.agreement_sample, plan.seed)]
    confirmed = _confirm(study, objective, [params for params, _ in sample])
    verdict = agreement([record["value"] for _, record in sample], confirmed, plan.min_spearman)
    logger.info("%s", verdict.note)
    backtested = {_key(params) for params, _ in sample}
    finalists: list[dict[str, Any]] = []
    if verdict.enabled:
        ranked = sorted(explored, key=lambda item: -item[1]["value"])
        finalists = [params for params, _ in ranked if _key(params) not in backtested][: plan.top_k]
        _confirm(study, objective, finalists)
        backtested |= {_key(params) for params in finalists}
    else:
        study.optimize(objective, n_trials=plan.top_k, timeout=timeout)
    unconfirmed = tuple(
        float(record["daily_sharpe"]) for params, record in explored if _key(params) not in backtested
    )
    return PrescreenSummary(
        used=verdict.enabled,
        note=verdict.note,
        explored=len(explore.trials),
        distinct=len(explored),
        agreement=verdict,
        finalists=len(finalists),
        explore_seconds=explore_seconds,
        signal_computations=screen.signal_computations,
        unconfirmed_daily_sharpes=unconfirmed if verdict.enabled else (),
    ).model_dump(mode="json")
