"""One real production stack per test session (marker `stack`): `deploy/stack.sh up` on its own ports and
folder (.tradai/stack-test), pointed at a loopback replay server of the recorded candles; `down` at the end
(tests/stack/stack_control.py).

Each test's process gets the stack's environment for its duration (DAGSTER_HOME, Postgres, AWS endpoint
and test credentials of moto), so `DagsterInstance.get()` is the stack's instance and boto3 talks to
the stack's moto.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.stack.stack_control import ROOT, Stack, model_loop_stack

# Ports apart from a developer's `make stack-up` (deploy/stack.env defaults), so both can run at once, and
# below the ephemeral range (32768-60999), where an outgoing connection can hold one for a moment.
TEST_PORTS = {
    "TRADAI_PG_PORT": "25432",
    "TRADAI_REDIS_PORT": "26379",
    "TRADAI_S3_PORT": "25000",
    "TRADAI_MLFLOW_PORT": "25500",
    "TRADAI_CODE_SERVER_PORT": "24266",
    "TRADAI_WEBSERVER_PORT": "24000",
}
REPLAY_PORT = 28765
REUSE = os.environ.get("TRADAI_STACK_TEST_REUSE") == "1"
"""Developer switch: use (and leave running) a stack already started with this module's settings."""


@pytest.fixture(scope="package")
def running_stack() -> Iterator[Stack]:
    """The whole stack, started once for the tests of this package (stopped when they are done, so the
    rest of a `make test-all` session runs without it)."""
    with model_loop_stack(ROOT / ".tradai" / "stack-test", TEST_PORTS, REPLAY_PORT, reuse=REUSE) as stack:
        yield stack


@pytest.fixture
def stack(running_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The running stack, with its environment in this test's process (restored after the test)."""
    for key, value in running_stack.env.items():
        monkeypatch.setenv(key, value)
    return running_stack
