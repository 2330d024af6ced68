"""Two Optuna workers in different processes share one study on the stack's Postgres."""

from __future__ import annotations

import subprocess
import sys
import uuid

import optuna
import pytest

from tests.stack.stack_control import ROOT, Stack
from tradai_resources.workers.hyperopt_child import make_storage

pytestmark = pytest.mark.stack

WORKER = """
import os, sys, time
import optuna
from tradai_resources.workers.hyperopt_child import make_storage

storage = make_storage(os.environ["TRADAI_OPTUNA_STORAGE"])
study = optuna.load_study(study_name=sys.argv[1], storage=storage)

def objective(trial):
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -5.0, 5.0)
    return -(x - 1.0) ** 2

study.optimize(objective, n_trials=int(sys.argv[2]))
"""


def test_two_worker_processes_fill_one_study_on_postgres(stack: Stack) -> None:
    url = stack.env["TRADAI_OPTUNA_STORAGE"]
    assert url.startswith("postgresql+psycopg2://")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=make_storage(url), direction="maximize")
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, name, "6"], cwd=ROOT, env=stack.env) for _ in range(2)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]

    study = optuna.load_study(study_name=name, storage=make_storage(url))
    trials = study.get_trials()
    assert len(trials) == 12 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}
    assert sorted(t.number for t in trials) == list(range(12))  # one numbering: one study, not two
