"""A strategy's search space, read from its class exactly as Freqtrade's own hyperopt reads it.

Every `IntParameter`/`DecimalParameter`/`RealParameter`/`CategoricalParameter`/`BooleanParameter` with
`optimize=True` in the `buy` and `sell` spaces (through Freqtrade's `detect_all_parameters` and each
parameter's `get_space`), plus the `roi` and `stoploss` spaces from Freqtrade's `IHyperOpt` (or the
strategy's nested `HyperOpt` class, which overrides them). The result is the core's frozen `SearchSpace`.
It imports Freqtrade, which is why it sits here and not in `tradai_core.hyperopt`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tradai_core.errors import ConfigurationError
from tradai_core.hyperopt import PARAMETER_SPACES, TUNABLE_SPACES, ParameterSpec, SearchSpace
from tradai_core.lazy import LazyModule

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

_distributions = LazyModule("optuna.distributions")  # imported on first use, not at code-location load


def _spec_from_dimension(dimension: BaseDistribution, name: str, space: str, default: Any) -> ParameterSpec:
    """A ParameterSpec from one of Freqtrade's dimensions (Optuna distribution subclasses)."""
    if isinstance(dimension, _distributions.IntDistribution):
        return ParameterSpec(
            name=name,
            space=space,
            kind="int",
            low=dimension.low,
            high=dimension.high,
            step=dimension.step,
            log=dimension.log,
            default=default,
        )
    if isinstance(dimension, _distributions.FloatDistribution):
        decimals = None
        if dimension.step is not None:
            decimals = max(0, round(-math.log10(dimension.step))) if dimension.step < 1 else 0
        return ParameterSpec(
            name=name,
            space=space,
            kind="float",
            low=dimension.low,
            high=dimension.high,
            step=dimension.step,
            log=dimension.log,
            decimals=decimals,
            default=default,
        )
    if isinstance(dimension, _distributions.CategoricalDistribution):
        return ParameterSpec(
            name=name, space=space, kind="categorical", choices=tuple(dimension.choices), default=default
        )
    raise ConfigurationError(
        f"parameter {name} has an unsupported search dimension {type(dimension).__name__}",
        "use IntParameter, DecimalParameter, RealParameter, CategoricalParameter or BooleanParameter",
    )


def declared_parameters(strategy_cls: type) -> dict[str, dict[str, Any]]:
    """The strategy's hyperoptable parameters by space (Freqtrade's own detection), optimize=True only."""
    from freqtrade.strategy.hyper import detect_all_parameters

    found = detect_all_parameters(strategy_cls)
    return {
        space: {name: param for name, param in params.items() if param.optimize}
        for space, params in found.items()
    }


def default_spaces(strategy_cls: type) -> tuple[str, ...]:
    """The spaces a study tunes when the run config names none: `buy`/`sell` where the strategy declares
    optimizable parameters, and `roi`/`stoploss` where its nested `HyperOpt` class declares that space."""
    declared = declared_parameters(strategy_cls)
    spaces = [space for space in PARAMETER_SPACES if declared.get(space)]
    nested = getattr(strategy_cls, "HyperOpt", None)
    if nested is not None:
        if hasattr(nested, "roi_space"):
            spaces.append("roi")
        if hasattr(nested, "stoploss_space"):
            spaces.append("stoploss")
    return tuple(spaces)


def _hyperopt_helper(strategy_cls: type, timeframe: str) -> Any:
    """Freqtrade's HyperOptAuto bound to the strategy class: its roi/stoploss spaces and ROI tables."""
    from freqtrade.optimize.hyperopt.hyperopt_auto import HyperOptAuto

    helper = HyperOptAuto({"timeframe": timeframe})
    helper.strategy = strategy_cls
    return helper


def search_space(strategy_cls: type, spaces: Sequence[str] | None, timeframe: str) -> SearchSpace:
    """The search space of `strategy_cls` over `spaces` (default: `default_spaces`).

    Raises ConfigurationError for an unknown space, or for a parameter space with nothing to tune.
    """
    chosen = tuple(dict.fromkeys(spaces)) if spaces else default_spaces(strategy_cls)
    unknown = [space for space in chosen if space not in TUNABLE_SPACES]
    if unknown:
        raise ConfigurationError(f"cannot tune spaces {unknown}", f"choose among {', '.join(TUNABLE_SPACES)}")
    if not chosen:
        raise ConfigurationError(
            f"strategy {strategy_cls.__name__} declares nothing to tune",
            "declare IntParameter/DecimalParameter/CategoricalParameter attributes with space='buy' or "
            "'sell' (optimize=True), or name spaces such as roi and stoploss in the run config",
        )
    declared = declared_parameters(strategy_cls)
    specs: list[ParameterSpec] = []
    for space in chosen:
        if space in PARAMETER_SPACES:
            params = declared.get(space, {})
            if not params:
                raise ConfigurationError(
                    f"strategy {strategy_cls.__name__} has no optimizable parameter in space {space!r}",
                    f"remove {space!r} from spaces, or declare parameters with space={space!r}",
                )
            for name in sorted(params):
                param = params[name]
                specs.append(_spec_from_dimension(param.get_space(name), name, space, param.value))
        else:
            helper = _hyperopt_helper(strategy_cls, timeframe)
            dims = helper.roi_space() if space == "roi" else helper.stoploss_space()
            specs.extend(_spec_from_dimension(dim, dim.name, space, None) for dim in dims)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"parameter names repeat across spaces: {names}", "rename the parameters")
    return SearchSpace(
        strategy=strategy_cls.__name__, timeframe=timeframe, spaces=chosen, parameters=tuple(specs)
    )
