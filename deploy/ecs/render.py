"""Fill the `${NAME}` placeholders of a deploy/ecs template from the environment and print it.

    python deploy/ecs/render.py deploy/ecs/dagster.yaml > "$DAGSTER_HOME/dagster.yaml"
    python deploy/ecs/render.py deploy/ecs/task-definition.json > task-definition.json

A placeholder without a variable is an error naming it (nothing half-rendered is printed).
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Mapping
from pathlib import Path


def render(path: Path, env: Mapping[str, str]) -> str:
    """The template at `path` with every `${NAME}` replaced by `env[NAME]`."""
    template = string.Template(path.read_text())
    missing = sorted({m.group("braced") for m in template.pattern.finditer(template.template)} - set(env))
    missing = [name for name in missing if name]
    if missing:
        raise SystemExit(f"{path}: set {', '.join(missing)} in the environment first")
    return template.substitute(env)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python deploy/ecs/render.py TEMPLATE")
    sys.stdout.write(render(Path(sys.argv[1]), os.environ))
