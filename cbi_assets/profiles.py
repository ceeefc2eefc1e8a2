"""How much a run trains: the profiles `sample` and `full`, and a user's own in a TOML file.

A profile is one object: the walk-forward folds per market and timeframe, the model families'
training budget, the meta-learning (Reptile and transfer) budget, and how much SHAP explains.
Assets take it from the `profile` resource; run config from the Launchpad (fold counts, levels)
still overrides single values of one run.

A user's own profile is a TOML file that starts from a built-in one and changes what it names:

    base = "full"                 # or "sample"
    significance = 0.01           # the level a model must beat the random walk at (default 0.05)
    [folds."ZL 1d"]               # <MARKET> <timeframe the horizon counts bars in>
    n_folds = 30
    [training]
    epochs = 50
    [meta]
    meta_iterations = 300
    [explain]
    max_rows = 1000
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from cbi_assets.catalogue import TIMEFRAMES, Horizon, Market, market
from cbi_assets.explain.rows import ExplainPlan
from cbi_assets.features.bars import SESSION_MINUTES  # a day of MES 1-minute rows
from cbi_assets.meta.budget import MetaBudget
from cbi_assets.models.registry import Budget
from cbi_assets.models.significance import DEFAULT_LEVEL, check_level
from cbi_assets.training.folds import FoldPlan


@dataclass(frozen=True)
class Profile:
    name: str
    # Keyed "<MARKET> <timeframe>": the timeframe a horizon counts its bars in (1d, or 1min intraday).
    folds: dict[str, FoldPlan]
    training: Budget
    meta: MetaBudget
    explain: ExplainPlan
    # The one-sided level at which a model must beat the random walk (or a challenger the champion)
    # to be crowned: `models.significance`.
    significance: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        check_level(self.significance)

    def fold_plan(self, market_: Market | str, horizon: Horizon) -> FoldPlan:
        """The plan for one market and horizon, with an embargo of one horizon.

        The embargo is the horizon's length in bars rather than a share of the rows (1% is the other
        common choice): serial dependence around a label lasts about as long as the label itself, so
        the gap should grow with the horizon, and a fixed count of bars means the same on the sample
        and on 25 years of history, where 1% of the rows would be 3 bars on one and 63 on the other.
        """
        m = market(market_)
        plan = self.folds.get(f"{m.symbol} {horizon.timeframe}")
        if plan is None:
            raise KeyError(
                f"profile {self.name!r} has no fold plan for {m.symbol} {horizon.timeframe} horizons (it has "
                f'{", ".join(self.folds)}); add [folds."{m.symbol} {horizon.timeframe}"] to its .toml file'
            )
        # An intraday horizon learns from bars of its own length (one row per horizon), so its bars
        # and the sliding window's 1-minute rows are counted in those bars.
        minutes_per_row = TIMEFRAMES[horizon.name] if horizon.intraday else 1
        train_rows = plan.train_rows and max(1, plan.train_rows // minutes_per_row)
        return dataclasses.replace(plan, embargo=horizon.bars // minutes_per_row, train_rows=train_rows)


PROFILES: dict[str, Profile] = {
    # The desk's plan on real data: 60 expanding folds over the second half of the daily history,
    # full epochs and boosting on every training row, a thousand Reptile steps.
    "full": Profile(
        name="full",
        # Daily models retrain on all the history (expanding); minute models keep a sliding window,
        # since years of 1-minute bars are costly to refit 20 times and microstructure from long ago
        # says little about today's book.
        folds={
            "ZL 1d": FoldPlan(60, "expanding"),
            "MES 1d": FoldPlan(60, "expanding"),
            "MES 1min": FoldPlan(20, "sliding", train_rows=60 * SESSION_MINUTES),
        },
        training=Budget(
            epochs=200, patience=5, boost_rounds=2000, sequence_length=32, batch_size=256, max_train_rows=None
        ),
        meta=MetaBudget(),
        explain=ExplainPlan(max_rows=2000, network_rows=24, background=32, permutations=1, drivers=10),
    ),
    # The embedded sample on 2 cores (CI, laptops): the same models and methods, briefly trained on
    # the recent rows over 3 folds, so the whole graph runs in minutes. (The networks were most of the main
    # job's time: a batch of 256 windows of 16 rows cost 53 ms on a CPU, 150 batches a horizon.)
    "sample": Profile(
        name="sample",
        folds={
            "ZL 1d": FoldPlan(3, "expanding"),
            "MES 1d": FoldPlan(3, "expanding"),
            "MES 1min": FoldPlan(3, "sliding", train_rows=10 * SESSION_MINUTES),
        },
        training=Budget(
            epochs=1, patience=1, boost_rounds=40, sequence_length=8, batch_size=256, max_train_rows=1000, threads=1
        ),
        meta=MetaBudget(
            units=(16,),
            long_epochs=25,
            meta_iterations=60,
            meta_batch=2,
            max_task_rows=256,
            held_out=3,
            encoder_units=16,
            latent=4,
            head_units=8,
            transfer_epochs=15,
            transfer_patience=3,
            max_train_rows=1500,
        ),
        # Each network row costs (2 x features + 1) x background forward passes: on the sample a
        # network explains the latest forecast only.
        explain=ExplainPlan(max_rows=500, network_rows=0, background=8, permutations=1, drivers=10),
    ),
}


def load_profile(name: str) -> Profile:
    """A built-in profile by name, or a user's own from a TOML file (a path ending in .toml)."""
    if name in PROFILES:
        return PROFILES[name]
    path = Path(name)
    if path.suffix != ".toml":
        raise ValueError(f"profile {name!r} is neither a built-in profile ({', '.join(PROFILES)}) nor a .toml file")
    if not path.is_file():
        raise FileNotFoundError(
            f"profile file {path} does not exist; set CBI_PROFILE to {', '.join(PROFILES)} or to "
            "the path of your profile's TOML file"
        )
    try:
        given = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    return _override(path, given)


def _override(path: Path, given: dict[str, Any]) -> Profile:
    base = given.pop("base", "full")
    if base not in PROFILES:
        raise ValueError(f"{path}: base = {base!r}; use one of {', '.join(PROFILES)}")
    profile = dataclasses.replace(PROFILES[base], name=path.stem)
    for section, values in given.items():
        if section == "significance":
            try:
                profile = dataclasses.replace(profile, significance=float(values))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}: significance = {values!r}: {error}") from None
        elif section == "folds":
            folds = dict(profile.folds)
            for key, changes in values.items():
                if key not in folds:
                    raise ValueError(
                        f"{path}: [folds.{key!r}] is no market and timeframe; use one of {', '.join(folds)}"
                    )
                start = folds[key]
                folds[key] = _replaced(path, f"folds.{key}", start, changes)
            profile = dataclasses.replace(profile, folds=folds)
        elif section in ("training", "meta", "explain"):
            profile = dataclasses.replace(
                profile, **{section: _replaced(path, section, getattr(profile, section), values)}
            )
        else:
            raise ValueError(
                f"{path}: unknown section [{section}]; sections: folds, training, meta, explain (and the key significance)"
            )
    return profile


def _replaced(path: Path, section: str, current: Any, changes: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(current)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(
            f"{path}: [{section}] has no setting {', '.join(unknown)}; settings: {', '.join(sorted(known))}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    try:
        return dataclasses.replace(current, **values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: [{section}]: {error}") from None


class TrainingProfile(dg.ConfigurableResource):
    """Which profile runs train with: `sample`, `full`, or the path of a TOML file of your own."""

    name: str = "sample"

    def load(self) -> Profile:
        return load_profile(self.name)
