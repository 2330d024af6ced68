"""Checking a strategy without backtesting it, and finding every strategy in a folder.

The validator answers "may this strategy be backtested at all?" before any candle is read: the module
imports, the class subclasses `TradAIStrategy`, its metadata is valid and agrees with the class, the
stoploss is negative, the populate methods exist, every hyperoptable parameter has sane bounds, and the
YAML config beside it is valid and agrees with the class. It collects *every* problem into one typed
report rather than stopping at the first, so a researcher fixes them in one pass.

Discovery reads source files with `ast` and never imports them: one strategy that fails to import must
not hide the others (it is listed, and its validation report says why it fails).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import math
import sys
import traceback
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from strategies.config import config_path_for, load_strategy_config
from strategies.metadata import StrategyMetadata, StrategyStatus
from tradai_core.errors import NotFoundError, StrategyValidationError, TradAIError
from tradai_core.strategy_config import StrategyConfig

if TYPE_CHECKING:  # Freqtrade is imported only when a strategy class is loaded
    from strategies.base import TradAIStrategy

logger = logging.getLogger(__name__)

STRATEGIES_DIR: Final[Path] = Path(__file__).resolve().parent
"""The project's own strategy folder."""

INFRASTRUCTURE_MODULES: Final[frozenset[str]] = frozenset(
    {"__init__", "base", "config", "validation", "scaffold"}
)
"""Modules of the `strategies` package that hold machinery, not strategies."""

_STRATEGY_BASES: Final[frozenset[str]] = frozenset({"TradAIStrategy", "IStrategy"})
_POPULATE_METHODS: Final[tuple[str, ...]] = (
    "populate_indicators",
    "populate_entry_trend",
    "populate_exit_trend",
)


class Severity(StrEnum):
    """An error blocks backtests; a warning is shown but does not."""

    ERROR = "error"
    WARNING = "warning"


class ValidationIssue(BaseModel):
    """One problem found in a strategy: which check, what is wrong, how bad."""

    model_config = ConfigDict(frozen=True)

    check: str
    message: str
    severity: Severity = Severity.ERROR


class StrategyValidationReport(BaseModel):
    """Everything the validator found about one strategy (frozen)."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str | None = None
    metadata: StrategyMetadata | None = None
    config: StrategyConfig | None = None
    issues: tuple[ValidationIssue, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no issue is an error (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> tuple[ValidationIssue, ...]:
        """The blocking issues."""
        return tuple(i for i in self.issues if i.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[ValidationIssue, ...]:
        """The non-blocking issues."""
        return tuple(i for i in self.issues if i.severity is Severity.WARNING)

    def summary(self) -> str:
        """A human-readable multi-line summary, one issue per line."""
        head = f"strategy {self.name}: " + ("valid" if self.ok else f"{len(self.errors)} error(s)")
        if self.warnings:
            head += f", {len(self.warnings)} warning(s)"
        lines = [head] + [f"  [{i.severity}] {i.check}: {i.message}" for i in self.issues]
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        """Raise `StrategyValidationError` listing every error, if there is any."""
        if not self.ok:
            problems = "; ".join(f"{i.check}: {i.message}" for i in self.errors)
            raise StrategyValidationError(
                f"strategy {self.name} is invalid: {problems}",
                f"fix the strategy{f' in {self.path}' if self.path else ''} and run "
                "`tradai strategy validate` until it passes",
            )


def _base_names(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def _scan_folder(folder: Path) -> dict[str, Path]:
    """Map strategy name → module file for every strategy module in `folder` (no imports).

    A class is a strategy when it subclasses `TradAIStrategy` or `IStrategy` (directly, or through another
    strategy class of the same module). A module that does not parse is listed under its file stem, so its
    failure is reported rather than silently skipped.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.py")):
        if path.stem in INFRASTRUCTURE_MODULES or path.stem.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("strategy module %s does not parse: %s", path, exc)
            found.setdefault(path.stem, path)
            continue
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        strategy_bases = set(_STRATEGY_BASES)
        changed = True
        names: list[str] = []
        while changed:
            changed = False
            for cls in classes:
                if cls.name not in strategy_bases and _base_names(cls) & strategy_bases:
                    strategy_bases.add(cls.name)
                    names.append(cls.name)
                    changed = True
        for name in names:
            if name in found and found[name] != path:
                logger.warning("strategy %s is defined in both %s and %s", name, found[name], path)
                continue
            found[name] = path
    return found


def discover_strategies(folder: Path = STRATEGIES_DIR) -> list[str]:
    """Names of every strategy in `folder` (its `*.py` modules, not sub-folders), sorted.

    Reads source only, so a module that fails to import still appears (validate it to see why); a module
    that does not even parse appears under its file stem.
    """
    return sorted(_scan_folder(folder))


def find_strategy_file(name: str, folder: Path = STRATEGIES_DIR) -> Path:
    """The module file defining strategy `name` in `folder`; raises NotFoundError if there is none."""
    found = _scan_folder(folder)
    if name not in found:
        raise NotFoundError(
            f"no strategy named {name!r} in {folder}",
            f"use one of {sorted(found)} or create it with `tradai strategy new {name}`",
        )
    return found[name]


def import_strategy_module(path: Path) -> ModuleType:
    """Import a strategy module from its file under a private module name (fresh on every call).

    Raises whatever the module raises; callers that must not fail use `validate_strategy`.
    """
    module_name = f"tradai_strategy__{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot build an import spec for {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_strategy_class(name: str, folder: Path = STRATEGIES_DIR) -> type[TradAIStrategy]:
    """Import strategy `name` from `folder` and return its class, after a full validation.

    Raises StrategyValidationError (listing every problem) when the strategy does not validate.
    """
    report, cls = _validate(name, folder, config=None, require_config=True)
    report.raise_for_errors()
    assert cls is not None  # a valid report implies the class was imported
    return cls


def _issue(check: str, message: str, severity: Severity = Severity.ERROR) -> ValidationIssue:
    return ValidationIssue(check=check, message=message, severity=severity)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_metadata(cls: type) -> tuple[StrategyMetadata | None, list[ValidationIssue]]:
    issues: list[ValidationIssue] = []
    get_metadata = getattr(cls, "get_metadata", None)
    if get_metadata is None or getattr(get_metadata, "__isabstractmethod__", False):
        return None, [_issue("metadata", "get_metadata() is not implemented; return a StrategyMetadata")]
    try:
        metadata = get_metadata()
    except PydanticValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return None, [_issue("metadata", f"get_metadata() builds invalid metadata: {problems}")]
    except Exception as exc:
        return None, [_issue("metadata", f"get_metadata() raised {type(exc).__name__}: {exc}")]
    if not isinstance(metadata, StrategyMetadata):
        return None, [
            _issue("metadata", f"get_metadata() returned {type(metadata).__name__}, not StrategyMetadata")
        ]
    if metadata.name != cls.__name__:
        issues.append(
            _issue("metadata", f"metadata name {metadata.name!r} differs from class name {cls.__name__!r}")
        )
    timeframe = getattr(cls, "timeframe", None)
    if metadata.timeframe != timeframe:
        issues.append(
            _issue(
                "metadata",
                f"metadata timeframe {metadata.timeframe!r} differs from class timeframe {timeframe!r}",
            )
        )
    if metadata.status is StrategyStatus.DEPRECATED:
        issues.append(_issue("metadata", "strategy is deprecated", Severity.WARNING))
    return metadata, issues


def _check_risk(cls: type) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    stoploss = getattr(cls, "stoploss", None)
    if not _is_number(stoploss):
        issues.append(_issue("stoploss", f"stoploss must be a number, got {stoploss!r}"))
    elif not -1 <= stoploss < 0:
        issues.append(
            _issue("stoploss", f"stoploss {stoploss} must be negative and not below -1 (e.g. -0.10)")
        )
    roi = getattr(cls, "minimal_roi", None)
    if roi is not None:
        if not isinstance(roi, dict) or not roi:
            issues.append(_issue("minimal_roi", f"minimal_roi must be a non-empty mapping, got {roi!r}"))
        else:
            for key, value in roi.items():
                try:
                    minutes_ok = int(key) >= 0
                except (TypeError, ValueError):
                    minutes_ok = False
                if not minutes_ok or not _is_number(value):
                    issues.append(
                        _issue("minimal_roi", f"entry {key!r}: {value!r} must map minutes ≥ 0 to a ratio")
                    )
    timeframe = getattr(cls, "timeframe", None)
    if not isinstance(timeframe, str) or not timeframe:
        issues.append(_issue("timeframe", "class attribute timeframe is not set (e.g. timeframe = '1h')"))
    startup = getattr(cls, "startup_candle_count", 0)
    if not isinstance(startup, int) or isinstance(startup, bool) or startup < 0:
        issues.append(_issue("startup_candle_count", f"must be a non-negative int, got {startup!r}"))
    if getattr(cls, "INTERFACE_VERSION", None) != 3:
        issues.append(_issue("interface", "INTERFACE_VERSION must be 3 (Freqtrade's current interface)"))
    if getattr(cls, "can_short", False):
        issues.append(
            _issue("can_short", "can_short=True strategies do not load in spot mode", Severity.WARNING)
        )
    return issues


def _check_populate(cls: type) -> list[ValidationIssue]:
    from freqtrade.strategy import IStrategy

    issues: list[ValidationIssue] = []
    for method in _POPULATE_METHODS:
        impl = getattr(cls, method, None)
        if impl is None or impl is getattr(IStrategy, method) or getattr(impl, "__isabstractmethod__", False):
            issues.append(_issue("populate", f"{method}(self, dataframe, metadata) is not implemented"))
            continue
        params = list(inspect.signature(impl).parameters)
        if params[:3] != ["self", "dataframe", "metadata"]:
            issues.append(
                _issue(
                    "populate", f"{method} must take (self, dataframe, metadata), takes ({', '.join(params)})"
                )
            )
    return issues


def _check_parameters(cls: type) -> tuple[dict[str, dict[str, Any]], list[ValidationIssue]]:
    """Check every hyperoptable parameter; return them by space for the config check."""
    from freqtrade.strategy.hyper import detect_all_parameters
    from freqtrade.strategy.parameters import (
        CategoricalParameter,
        DecimalParameter,
        IntParameter,
        NumericParameter,
    )

    try:
        spaces = detect_all_parameters(cls)
    except Exception as exc:
        return {}, [_issue("parameters", f"hyperoptable parameters cannot be read: {exc}")]
    issues: list[ValidationIssue] = []
    for space, params in spaces.items():
        for name, param in params.items():
            where = f"{name} ({space})"
            if isinstance(param, NumericParameter):
                low, high, default = param.low, param.high, param.value
                if not (_is_number(low) and _is_number(high) and _is_number(default)):
                    issues.append(_issue("parameters", f"{where}: low/high/default must be finite numbers"))
                    continue
                if isinstance(param, IntParameter) and not all(
                    isinstance(v, int) for v in (low, high, default)
                ):
                    issues.append(
                        _issue("parameters", f"{where}: IntParameter bounds and default must be ints")
                    )
                if low >= high:
                    issues.append(_issue("parameters", f"{where}: low {low} must be below high {high}"))
                elif not low <= default <= high:
                    issues.append(_issue("parameters", f"{where}: default {default} outside [{low}, {high}]"))
                if isinstance(param, DecimalParameter) and not (
                    isinstance(param.decimals, int) and param.decimals >= 0
                ):
                    issues.append(_issue("parameters", f"{where}: decimals must be a non-negative int"))
            elif isinstance(param, CategoricalParameter) and param.value not in param.opt_range:
                issues.append(
                    _issue("parameters", f"{where}: default {param.value!r} not in {param.opt_range!r}")
                )
    return {space: dict(params) for space, params in spaces.items()}, issues


def _check_config(
    cls: type,
    config: StrategyConfig,
    metadata: StrategyMetadata | None,
    spaces: dict[str, dict[str, Any]],
) -> list[ValidationIssue]:
    from freqtrade.strategy.parameters import CategoricalParameter, IntParameter, NumericParameter

    issues: list[ValidationIssue] = []
    if config.name != cls.__name__:
        issues.append(
            _issue("config", f"config name {config.name!r} differs from class name {cls.__name__!r}")
        )
    if config.timeframe != getattr(cls, "timeframe", None):
        issues.append(
            _issue(
                "config",
                f"config timeframe {config.timeframe!r} differs from class timeframe {cls.timeframe!r}",
            )
        )
    if metadata is not None and config.version != metadata.version:
        issues.append(
            _issue(
                "config",
                f"config version {config.version} differs from metadata version {metadata.version}",
                Severity.WARNING,
            )
        )
    for space, values in (("buy", config.buy_params), ("sell", config.sell_params)):
        known = spaces.get(space, {})
        for name, value in values.items():
            param = known.get(name)
            if param is None:
                issues.append(
                    _issue(
                        "config", f"{space}_params.{name} is not a {space} parameter (known: {sorted(known)})"
                    )
                )
            elif isinstance(param, NumericParameter):
                if not _is_number(value):
                    issues.append(_issue("config", f"{space}_params.{name}={value!r} must be a number"))
                elif isinstance(param, IntParameter) and not isinstance(value, int):
                    issues.append(_issue("config", f"{space}_params.{name}={value!r} must be an int"))
                elif not param.low <= value <= param.high:
                    issues.append(
                        _issue("config", f"{space}_params.{name}={value} outside [{param.low}, {param.high}]")
                    )
            elif isinstance(param, CategoricalParameter) and value not in param.opt_range:
                issues.append(_issue("config", f"{space}_params.{name}={value!r} not in {param.opt_range!r}"))
    return issues


def validate_strategy_class(
    cls: type, config: StrategyConfig | None = None
) -> tuple[StrategyMetadata | None, list[ValidationIssue]]:
    """Every check that needs only the class (and optionally its config); returns (metadata, issues)."""
    from strategies.base import TradAIStrategy

    if not (inspect.isclass(cls) and issubclass(cls, TradAIStrategy)):
        return None, [
            _issue("base_class", f"{getattr(cls, '__name__', cls)!r} does not subclass TradAIStrategy")
        ]
    issues: list[ValidationIssue] = []
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        issues.append(_issue("base_class", f"abstract methods not implemented: {', '.join(abstract)}"))
    metadata, found = _check_metadata(cls)
    issues += found
    issues += _check_risk(cls)
    issues += _check_populate(cls)
    spaces, found = _check_parameters(cls)
    issues += found
    if config is not None:
        issues += _check_config(cls, config, metadata, spaces)
    return metadata, issues


def validate_strategy(
    name: str,
    folder: Path = STRATEGIES_DIR,
    *,
    config: StrategyConfig | None = None,
    require_config: bool = True,
) -> StrategyValidationReport:
    """Validate strategy `name` from `folder` without backtesting it; never raises for a bad strategy.

    `config` defaults to the YAML beside the module; with `require_config`, a missing YAML is an error.
    """
    return _validate(name, folder, config=config, require_config=require_config)[0]


class StrategyCheck(BaseModel):
    """A strategy's validation report and what a backtest plan reads off its validated class (frozen, JSON:
    it is computed in a worker process that has Freqtrade loaded, and read back by the Dagster process)."""

    model_config = ConfigDict(frozen=True)

    report: StrategyValidationReport
    startup_candle_count: int = 0
    """Candles the strategy needs before the window (0 when it does not validate)."""


def check_strategy(
    name: str,
    folder: Path = STRATEGIES_DIR,
    *,
    config: StrategyConfig | None = None,
    require_config: bool = True,
) -> StrategyCheck:
    """`validate_strategy` plus the validated class's `startup_candle_count`, importing the module once."""
    report, cls = _validate(name, folder, config=config, require_config=require_config)
    startup = getattr(cls, "startup_candle_count", 0) if cls is not None else 0
    return StrategyCheck(report=report, startup_candle_count=int(startup))


def _validate(
    name: str, folder: Path, *, config: StrategyConfig | None, require_config: bool
) -> tuple[StrategyValidationReport, type[TradAIStrategy] | None]:
    try:
        path = find_strategy_file(name, folder)
    except NotFoundError as exc:
        return StrategyValidationReport(name=name, issues=(_issue("discovery", str(exc)),)), None
    issues: list[ValidationIssue] = []
    if config is None:
        yaml_path = config_path_for(path)
        if yaml_path.is_file():
            try:
                config = load_strategy_config(yaml_path)
            except TradAIError as exc:
                issues.append(_issue("config", str(exc)))
        elif require_config:
            issues.append(_issue("config", f"no config {yaml_path.name} beside {path.name}; create one"))
    try:
        module = import_strategy_module(path)
    except BaseException as exc:  # SystemExit and friends from user code must not kill validation
        if isinstance(exc, KeyboardInterrupt):
            raise
        tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        issues.insert(0, _issue("import", f"{path.name} does not import: {tail}"))
        return StrategyValidationReport(name=name, path=str(path), config=config, issues=tuple(issues)), None
    cls = getattr(module, name, None)
    if cls is None:
        issues.insert(0, _issue("import", f"{path.name} defines no class {name}"))
        return StrategyValidationReport(name=name, path=str(path), config=config, issues=tuple(issues)), None
    metadata, found = validate_strategy_class(cls, config)
    issues += found
    report = StrategyValidationReport(
        name=name, path=str(path), metadata=metadata, config=config, issues=tuple(issues)
    )
    log = logger.info if report.ok else logger.warning
    log("%s", report.summary())
    return report, (cls if report.ok else None)


def validate_all(
    folder: Path = STRATEGIES_DIR, names: Iterable[str] | None = None
) -> list[StrategyValidationReport]:
    """Validate `names` (default: every discovered strategy) in `folder`; one report each, in order."""
    return [
        validate_strategy(name, folder)
        for name in (names if names is not None else discover_strategies(folder))
    ]
