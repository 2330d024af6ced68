"""Strategies as Dagster sees them: one partition per strategy class, and the hash of a strategy's code."""

import hashlib
from pathlib import Path

from dagster import StaticPartitionsDefinition

from strategies.validation import STRATEGIES_DIR, StrategyValidationReport, discover_strategies


def strategy_partitions(folder: Path = STRATEGIES_DIR) -> StaticPartitionsDefinition:
    """One partition per strategy class found in `folder` (read from source, so a broken module shows)."""
    return StaticPartitionsDefinition(discover_strategies(folder))


def source_hash(report: StrategyValidationReport) -> str:
    """sha256 of the strategy's module and YAML: what code and parameters a report comes from."""
    digest = hashlib.sha256()
    if report.path:
        module = Path(report.path)
        digest.update(module.read_bytes())
        yaml_path = module.with_suffix(".yaml")
        if yaml_path.exists():
            digest.update(yaml_path.read_bytes())
    return digest.hexdigest()
