"""TradAI strategies: Freqtrade strategies that declare their metadata, each with a YAML config beside it.

- `strategies.base`: `TradAIStrategy` (the base class), `StrategyMetadata`, `StrategyCategory`,
  `StrategyStatus`;
- `strategies.config`: the YAML loader of `StrategyConfig` (the schema is `tradai_core.strategy_config`);
- `strategies.model_store`: how a model strategy loads its model from the store Freqtrade's config names;
- `strategies.validation`: the validator (`validate_strategy`) and discovery (`discover_strategies`);
- `strategies.scaffold`: `create_strategy`, behind `tradai strategy new`.

Every other module in this folder is a strategy (one class per module, e.g. `rsi_mean_reversion.py` with
`rsi_mean_reversion.yaml`). Strategy modules import shared code through the `strategies` package (never
as siblings), because backtests copy the module alone into a fresh folder.
"""
