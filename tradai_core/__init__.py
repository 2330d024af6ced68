"""Plain-Python core of TradAI: settings, errors and data logic with no Dagster or I/O in it."""
