"""Backtests of the walk-forward forecasts: ZL procurement timing and MES trading, after costs."""
