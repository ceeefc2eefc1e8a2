"""Which model forecasts a market x horizon while a regime is current: the regime's specialist when
one was trained and beat the generalist on the regime's own folds, else the champion."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import Market
from cbi_assets.lake import Lake
from cbi_assets.models.leaderboard import crowned, leaderboard
from cbi_assets.models.registry import families
from cbi_assets.models.significance import DEFAULT_LEVEL
from cbi_assets.training.scaling import RobustScaler

# What a specialist's folder (the lake's SPECIALIST table) holds that is read here, beside its walk's
# folds and metrics: its asset writes these and choose_model and load_specialist read them.
VERDICT_FILE = "verdict.parquet"  # one row: trained or skipped, whether it beat the generalist, and why
WALKED_FILE = "oof.parquet"  # its out-of-fold forecasts on the regime's test rows
MODEL_FOLDER = "model"  # what forecasts with it: MODEL_FILE, SCALER_FILE and features.json (its MLflow run's list)
MODEL_FILE = "model.pkl"
SCALER_FILE = "scaler.parquet"


@dataclass(frozen=True)
class Choice:
    model: str  # "specialist_<regime>" or the champion's family
    source: str  # "specialist" or "champion"
    run_id: str  # the MLflow run of the model chosen
    why: str
    path: Path | None = None  # the specialist's model folder (model.pkl, scaler.parquet, features.json)


def board_of(lake: Lake, m: Market, horizon: str, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """The leaderboard of the stored metrics, as the leaderboard asset builds it (the rule at `level`)."""
    parts = {"market": m, "horizon": horizon}
    stored = [f.name for f in families() if lake.exists(tables.FAMILY_METRICS, family=f.name, **parts)]
    if not stored:
        where = lake.path(tables.FAMILY_METRICS, family="*", **parts)
        raise ValueError(f"{where}: no model metrics for {m} {horizon}; materialize the model assets first")
    frames = [lake.read(tables.FAMILY_METRICS, family=f, **parts) for f in stored]
    return leaderboard(pl.concat(frames, how="diagonal_relaxed"), level)


def champion_of(lake: Lake, m: Market, horizon: str, level: float = DEFAULT_LEVEL) -> dict:
    """The champion as the leaderboard crowns it from the stored metrics."""
    best = crowned(board_of(lake, m, horizon, level))
    return {"family": best["family"], "run_id": best["run_id"], "mase": best["mase"]}


def choose_model(lake: Lake, m: Market, horizon: str, regime: str | None, level: float = DEFAULT_LEVEL) -> Choice:
    """The model to forecast market `m` `horizon` with while `regime` (a regime partition key) is current.

    The specialist is chosen only when its stored verdict says it beat the generalist (the same
    folds, and the stored generalist oof where it covers the regime's test rows) and the random walk,
    and where the champion's stored oof covers its test rows, the champion there too; otherwise the
    champion, and `why` says what was missing. Inside an asset run, the asset must declare the
    families' metrics and oof and the specialists among its reads.
    """
    champion = champion_of(lake, m, horizon, level)

    def crowned(reason: str) -> Choice:
        return Choice(
            champion["family"],
            "champion",
            champion["run_id"],
            f"{reason}; the champion {champion['family']} (MASE {champion['mase']:.3f}) forecasts",
        )

    if not regime:
        return crowned("no current regime given")
    parts = {"market": m, "regime": regime, "horizon": horizon}
    folder = lake.folder(tables.SPECIALIST, **parts) if lake.exists(tables.SPECIALIST, **parts) else None
    if folder is None or not (folder / VERDICT_FILE).is_file():
        return crowned(
            f"no specialist trained for {regime} ({m} {horizon}); materialize "
            f"{tables.SPECIALIST.asset_key(market=m).to_user_string()} for the partition {regime}"
        )
    verdict = pl.read_parquet(folder / VERDICT_FILE).row(0, named=True)
    if verdict["status"] != "trained":
        return crowned(f"the {regime} specialist was not trained: {verdict['why']}")
    if not (verdict["beats_generalist"] and verdict["beats_random_walk"]):
        return crowned(f"the {regime} specialist {verdict['why']}")
    # The champion may be another family than the generalist the specialist was judged against, or
    # crowned later: where its stored oof covers the specialist's test rows, the specialist must
    # beat it there too, or swapping it in would make the forecast worse.
    against = _against_champion(lake, m, horizon, folder, champion["family"])
    if against is not None and against[1] <= against[0]:
        return crowned(
            f"the {regime} specialist beat the generalist but not the champion on the {against[2]} test "
            f"rows the champion's oof covers (MASE {against[0]:.3f} vs {against[1]:.3f})"
        )
    why = f"the {regime} specialist {verdict['why']}"
    if against is not None:
        why += (
            f"; and the champion {champion['family']} on the {against[2]} test rows its oof covers "
            f"(MASE {against[0]:.3f} vs {against[1]:.3f})"
        )
    return Choice(f"specialist_{regime}", "specialist", verdict["run_id"], why, folder / MODEL_FOLDER)


def _against_champion(
    lake: Lake, m: Market, horizon: str, folder: Path, family: str
) -> tuple[float, float, int] | None:
    """(specialist MASE, champion MASE, rows) on the specialist's test rows the champion's oof covers,
    or None when it covers fewer than half of them."""
    parts = {"market": m, "horizon": horizon, "family": family}
    if not lake.exists(tables.OOF, **parts) or not (folder / WALKED_FILE).is_file():
        return None
    walked = pl.read_parquet(folder / WALKED_FILE)
    key = "ts" if "ts" in walked.columns else "date"
    both = walked.join(lake.read(tables.OOF, **parts).select(key, pl.col("forecast").alias("champion")), on=key)
    if both.height < 0.5 * walked.height:
        return None
    naive = both["actual"].abs().mean()
    return (
        (both["specialist"] - both["actual"]).abs().mean() / naive,
        (both["champion"] - both["actual"]).abs().mean() / naive,
        both.height,
    )


def load_specialist(folder: Path) -> tuple[object, RobustScaler, list[str]]:
    """A specialist's model, the scaler fitted on its training rows and its features (Choice.path)."""
    with open(folder / MODEL_FILE, "rb") as stored:
        model = pickle.load(stored)
    scaler = RobustScaler.from_frame(pl.read_parquet(folder / SCALER_FILE))
    return model, scaler, json.loads((folder / "features.json").read_text())
