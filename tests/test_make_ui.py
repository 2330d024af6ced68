"""`make ui` refuses to start when the replay port is taken, instead of starting Dagster against a server
that is not ours (or none)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def test_make_ui_fails_fast_naming_a_taken_replay_port(taken_port: int, tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "TRADAI_HOME": str(tmp_path / "tradai")}
    process = subprocess.Popen(
        ["make", "-s", "ui", f"REPLAY_PORT={taken_port}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        pytest.fail("make ui kept running although the replay port was taken")
    assert process.returncode != 0
    assert f"replay port {taken_port}" in output and "already in use" in output
    assert f"REPLAY_PORT={taken_port + 1}" in output
    assert "dagster dev" not in output.lower() and "Serving dagster-webserver" not in output
