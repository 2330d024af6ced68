"""Per-strategy configuration files: the YAML beside a strategy, read into the core's frozen schema.

`strategies/rsi_mean_reversion.py` is configured by `strategies/rsi_mean_reversion.yaml`; the schema
itself (`StrategyConfig`) is `tradai_core.strategy_config`.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError as PydanticValidationError

from tradai_core.errors import ConfigurationError, NotFoundError
from tradai_core.strategy_config import StrategyConfig


def config_path_for(strategy_file: Path) -> Path:
    """The YAML config beside a strategy module: `foo.py` → `foo.yaml`."""
    return strategy_file.with_suffix(".yaml")


def load_strategy_config(path: Path) -> StrategyConfig:
    """Read and validate a strategy YAML; raises ConfigurationError saying which file and which field."""
    if not path.is_file():
        raise NotFoundError(
            f"strategy config {path} does not exist",
            "create it beside the strategy module (`tradai strategy new` writes one)",
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"strategy config {path} is not valid YAML: {exc}", "fix the YAML") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"strategy config {path} must be a mapping", "see strategies/*.yaml")
    try:
        return StrategyConfig.model_validate(raw)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(
            f"strategy config {path} is invalid: {problems}", "fix the listed fields"
        ) from exc


def dump_strategy_config(config: StrategyConfig) -> str:
    """The YAML text of a strategy config (fields in schema order, empty optional blocks left out)."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["pairs"] = list(config.pairs)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
