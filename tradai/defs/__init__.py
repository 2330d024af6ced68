"""One `Definitions` per domain — market data, features, models, backtests, hyperopt, the model loop —
each built from its assets (`tradai_assets`), jobs (`jobs`) and sensors (`sensors`); `tradai.definitions`
merges them with the resources into the code location."""
