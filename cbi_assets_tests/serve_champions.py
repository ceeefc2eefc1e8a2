"""After `cbi demo` (CI runs it there): every market x horizon champion, loaded by MLflow alone through
`models:/cbi-<MARKET>-<horizon>@champion`, forecasts from the master feature table what the latest view
published. Run as `.venv/bin/python -m cbi_assets_tests.serve_champions`; exits 1 naming any that differs.
"""

from __future__ import annotations

import sys

import mlflow
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS
from cbi_assets.lake import Lake
from cbi_assets.models import serving
from cbi_assets.predictions.history import view_name
from cbi_assets.settings import Settings
from cbi_assets.training.sets import feature_columns, feature_timeframe, time_key
from resources import warehouse_of
from resources.tracking import model_name


def main() -> int:
    settings = Settings.from_env()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    lake, warehouse = Lake(root=str(settings.lake)), warehouse_of(settings)
    checked, different = 0, []
    for market in MARKETS.values():
        for horizon in market.horizons:
            parts = {"market": market, "horizon": horizon.name}
            if not lake.exists(tables.TRAINING_SET, **parts):
                continue
            key = time_key(horizon)
            features = feature_columns(lake.read(tables.TRAINING_SET, **parts).head(0))
            rows = lake.read(tables.MASTER, market=market, timeframe=feature_timeframe(horizon))
            rows = rows.select(key, *features).sort(key)
            if getattr(rows.schema[key], "time_zone", None):  # MLflow's signature takes naive UTC times
                rows = rows.with_columns(pl.col(key).dt.convert_time_zone("UTC").dt.replace_time_zone(None))
            model = mlflow.pyfunc.load_model(f"models:/{model_name(market, horizon.name)}@champion")
            served = float(model.predict(rows.to_pandas()).iloc[0][serving.OUTPUT])
            published = warehouse.query(
                f"select source, family, forecast_return from {view_name(market, horizon.name)}"
            )
            source, family, value = published.row(0)
            checked += 1
            same = source != "champion" or abs(served - value) <= 1e-9 * (1 + abs(value))
            print(
                f"{market.symbol} {horizon.name:5} {family:14} {source:10} served {served:+.6g} published {value:+.6g}"
            )
            if not same:
                different.append(f"{market.symbol} {horizon.name}")
    print(f"{checked - len(different)} of {checked} champions served the published forecast")
    if different or not checked:
        print(f"served and published forecasts differ: {', '.join(different) or 'no champion found'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
