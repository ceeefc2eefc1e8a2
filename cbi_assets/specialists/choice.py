"""Which model forecasts an asset x horizon while a regime is current: the regime's specialist when
one was trained and beat the generalist on the regime's own folds, else the champion."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cbi_assets.models.assets import models_dir  # TRANSITIONAL
from cbi_assets.models.leaderboard import leaderboard
from cbi_assets.models.registry import families
from cbi_assets.training.scaling import RobustScaler


def specialist_dir(lake: Path, asset: str, regime: str, horizon: str) -> Path:
    return Path(lake) / asset.upper() / "models" / "specialists" / regime / horizon


@dataclass(frozen=True)
class Choice:
    model: str  # "specialist_<regime>" or the champion's family
    source: str  # "specialist" or "champion"
    run_id: str  # the MLflow run of the model chosen
    why: str
    path: Path | None = None  # the specialist's model folder (model.pkl, scaler.parquet, features.json)


def champion_of(lake: Path, asset: str, horizon: str) -> dict:
    """The champion as the leaderboard crowns it: the best overall MASE of the stored metrics."""
    folder = models_dir(Path(lake), asset, horizon) / "metrics"
    files = [folder / f"{f.name}.parquet" for f in families() if (folder / f"{f.name}.parquet").is_file()]
    if not files:
        raise ValueError(f"{folder}: no model metrics for {asset.upper()} {horizon}; materialize the model assets first")
    best = leaderboard(pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")).row(0, named=True)
    return {"family": best["family"], "run_id": best["run_id"], "mase": best["mase"]}


def choose_model(lake, asset: str, horizon: str, regime: str | None) -> Choice:
    """The model to forecast `asset` `horizon` with while `regime` (a regime partition key) is current.

    `lake` is the lake root or the Lake resource. The specialist is chosen only when its stored
    verdict says it beat the generalist (the same folds, and the stored generalist oof where it
    covers the regime's test rows) and the random walk, and where the champion's stored oof covers
    its test rows, the champion there too; otherwise the champion, and `why` says what was missing.
    """
    lake = Path(lake if isinstance(lake, str | Path) else lake.root)
    champion = champion_of(lake, asset, horizon)

    def crowned(reason: str) -> Choice:
        return Choice(champion["family"], "champion", champion["run_id"],
                      f"{reason}; the champion {champion['family']} (MASE {champion['mase']:.3f}) forecasts")

    if not regime:
        return crowned("no current regime given")
    folder = specialist_dir(lake, asset, regime, horizon)
    if not (folder / "verdict.parquet").is_file():
        return crowned(f"no specialist trained for {regime} ({asset.upper()} {horizon}); materialize "
                       f"{asset.lower()}/models/specialists for the partition {regime}")
    verdict = pl.read_parquet(folder / "verdict.parquet").row(0, named=True)
    if verdict["status"] != "trained":
        return crowned(f"the {regime} specialist was not trained: {verdict['why']}")
    if not (verdict["beats_generalist"] and verdict["beats_random_walk"]):
        return crowned(f"the {regime} specialist {verdict['why']}")
    # The champion may be another family than the generalist the specialist was judged against, or
    # crowned later: where its stored oof covers the specialist's test rows, the specialist must
    # beat it there too, or swapping it in would make the forecast worse.
    against = _against_champion(lake, asset, horizon, folder, champion["family"])
    if against is not None and against[1] <= against[0]:
        return crowned(f"the {regime} specialist beat the generalist but not the champion on the {against[2]} test rows "
                       f"the champion's oof covers (MASE {against[0]:.3f} vs {against[1]:.3f})")
    why = f"the {regime} specialist {verdict['why']}"
    if against is not None:
        why += (f"; and the champion {champion['family']} on the {against[2]} test rows its oof covers "
                f"(MASE {against[0]:.3f} vs {against[1]:.3f})")
    return Choice(f"specialist_{regime}", "specialist", verdict["run_id"], why, folder / "model")


def _against_champion(lake: Path, asset: str, horizon: str, folder: Path,
                      family: str) -> tuple[float, float, int] | None:
    """(specialist MASE, champion MASE, rows) on the specialist's test rows the champion's oof covers,
    or None when it covers fewer than half of them."""
    stored = models_dir(lake, asset, horizon) / "oof" / f"{family}.parquet"
    if not stored.is_file() or not (folder / "oof.parquet").is_file():
        return None
    walked = pl.read_parquet(folder / "oof.parquet")
    key = "ts" if "ts" in walked.columns else "date"
    both = walked.join(pl.read_parquet(stored).select(key, pl.col("forecast").alias("champion")), on=key)
    if both.height < 0.5 * walked.height:
        return None
    naive = both["actual"].abs().mean()
    return ((both["specialist"] - both["actual"]).abs().mean() / naive,
            (both["champion"] - both["actual"]).abs().mean() / naive, both.height)


def load_specialist(folder: Path) -> tuple[object, RobustScaler, list[str]]:
    """A specialist's model, the scaler fitted on its training rows and its features (Choice.path)."""
    with open(folder / "model.pkl", "rb") as stored:
        model = pickle.load(stored)
    scaler = RobustScaler.from_frame(pl.read_parquet(folder / "scaler.parquet"))
    return model, scaler, json.loads((folder / "features.json").read_text())
