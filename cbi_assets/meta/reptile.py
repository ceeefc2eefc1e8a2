"""Reptile meta-learning across regime tasks: a network initialisation that adapts to a new regime
from its first ~30 sessions in a few epochs, and the leave-one-regime-out test that says whether it does.

A task is one named regime's support set (its first sessions) and query set (after the support
labels end), as `{market}/training/meta_tasks` stores them. Reptile (Nichol et al., 2018) repeats:
take a task, adapt a copy of the meta-weights to a window of its rows with the very SGD the
adaptation will use, and move the meta-weights part of the way towards the adapted ones. First
order only, so it needs nothing but the adaptation loop itself.

No look-ahead: a task's features are scaled by a scaler fitted on the rows known when its support
ends (never its query), the target scale comes from the meta-training tasks only, and a held-out
regime is meta-trained on the tasks whose every label had ended before it began.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import Horizon, Market, market
from cbi_assets.lake import Lake
from cbi_assets.meta.budget import MetaBudget
from cbi_assets.meta.networks import Network, clean, epoch_batches, fresh_session, mlp
from cbi_assets.meta.scores import SHOWN, scores
from cbi_assets.models.evaluation import METRICS
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import time_key

# The variants of the few-shot table, in the order shown.
VARIANTS = ("meta_adapted", "meta_init", "scratch", "scratch_long", "random_walk")
MODEL_FILE = "meta_init.keras"
SETTINGS_FILE = "meta.json"


# --- Tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One regime's support and query rows (a training set's columns), in time order."""

    regime: str
    support: pl.DataFrame
    query: pl.DataFrame
    key: str  # the time key: "date" daily, "ts" intraday

    @property
    def start(self) -> Any:
        """When the regime's task begins: its first support row."""
        return self.support[self.key].min()

    @property
    def known_by(self) -> Any:
        """When every outcome in the task was known: its last label end."""
        return max(self.support["label_end"].max(), self.query["label_end"].max())


def load_tasks(lake: Lake, market: Market, horizon: Horizon, regimes: Sequence[str] | None = None) -> list[Task]:
    """The market x horizon's stored tasks (`{market}/training/meta_tasks`: a support and a query set per
    regime), by start; `regimes` keeps only those (a regime renamed in the calendar leaves its old task behind)."""
    parts = {"market": market, "horizon": horizon.name}
    stored = set(lake.present(tables.META_TASK, "regime", part="support", **parts))
    stored &= set(lake.present(tables.META_TASK, "regime", part="query", **parts))
    tasks = []
    for regime in sorted(stored):
        if regimes is None or regime in regimes:
            support, query = (lake.read(tables.META_TASK, regime=regime, part=p, **parts) for p in ("support", "query"))
            tasks.append(Task(regime, support, query, time_key(horizon)))
    return sorted(tasks, key=lambda t: t.start)


def meta_training_tasks(tasks: Sequence[Task], held_out: Task) -> list[Task]:
    """The tasks a held-out regime may be meta-trained on: those whose labels had all ended before
    its first support row. A regime that starts later, or whose outcomes reach into it, is out."""
    return [t for t in tasks if t.regime != held_out.regime and t.known_by < held_out.start]


def held_out_plan(tasks: Sequence[Task], budget: MetaBudget) -> list[tuple[Task, list[Task]]]:
    """(held-out task, its meta-training tasks) for the last `budget.held_out` regimes that have at
    least `budget.min_meta_tasks` earlier tasks (every such regime when held_out is None)."""
    plan = [(t, earlier) for t in tasks if len(earlier := meta_training_tasks(tasks, t)) >= budget.min_meta_tasks]
    return plan if budget.held_out is None else plan[-budget.held_out :] if budget.held_out > 0 else []


def task_scaler(
    history: pl.DataFrame, support: pl.DataFrame, key: str, features: Sequence[str], rows: int
) -> RobustScaler:
    """A robust scaler fitted on the features of the rows known when the support ends: the training
    set's rows before the support, then the support itself, the trailing `rows` of them. Features
    only; a row's feature is known at its close, and the query is never seen."""
    before = history.filter(pl.col(key) < support[key].min()).select(key, *features)
    known = pl.concat([before, support.select(key, *features)], how="vertical_relaxed").tail(rows)
    return RobustScaler.fit(known, features)


def scaled(frame: pl.DataFrame, scaler: RobustScaler) -> np.ndarray:
    """A frame's features as the network reads them (robust-scaled, missing at the median, clipped)."""
    x = frame.select(scaler.columns).to_numpy().astype(np.float64)
    return clean((x - np.asarray(scaler.median)) / np.asarray(scaler.scale))


@dataclass(frozen=True)
class TaskData:
    """A task as arrays: scaled features, forward log returns, and the prices that score them."""

    regime: str
    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    price: np.ndarray  # of each query row at its origin
    forward_price: np.ndarray
    query_time: pl.Series  # each query row's time key

    @property
    def pool(self) -> tuple[np.ndarray, np.ndarray]:
        """Every labelled row of the task in time order (for meta-training tasks, all in the past)."""
        return np.concatenate([self.x_support, self.x_query]), np.concatenate([self.y_support, self.y_query])


def task_data(task: Task, history: pl.DataFrame, features: Sequence[str], budget: MetaBudget) -> TaskData:
    """A task's arrays, each set capped to `max_task_rows` (the support's most recent rows, the
    query's first ones: nearest the adaptation)."""
    support = task.support.tail(budget.max_task_rows)
    query = task.query.head(budget.max_task_rows)
    scaler = task_scaler(history, task.support, task.key, features, budget.scaler_rows)
    y_query = query["forward_return"].to_numpy().astype(np.float64)
    forward_price = query["forward_price"].to_numpy().astype(np.float64)
    return TaskData(
        task.regime,
        scaled(support, scaler),
        support["forward_return"].to_numpy().astype(np.float64),
        scaled(query, scaler),
        y_query,
        forward_price * np.exp(-y_query),
        forward_price,
        query[task.key],
    )


def target_scale(tasks: Sequence[TaskData]) -> float:
    """The standard deviation of the forward return over the tasks' rows: the network learns the
    return in these units (one scale for every variant, known before any held-out regime)."""
    y = np.concatenate([np.concatenate([t.y_support, t.y_query]) for t in tasks]) if tasks else np.zeros(0)
    scale = float(np.std(y)) if y.size > 1 else 0.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


# --- Reptile ------------------------------------------------------------------------------------


def adapt_weights(
    net: Network,
    start: Sequence[np.ndarray],
    x: np.ndarray,
    y_scaled: np.ndarray,
    epochs: int,
    budget: MetaBudget,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The weights after `epochs` of plain SGD from `start` on (x, y): the adaptation to a regime."""
    net.set_weights(start)
    net.sgd(x, y_scaled, epoch_batches(len(x), epochs, budget.batches_per_epoch, rng), budget.inner_lr)
    return net.weights()


def reptile(
    net: Network,
    tasks: Sequence[TaskData],
    scale: float,
    budget: MetaBudget,
    rng: np.random.Generator,
    log: Callable[[str], None] | None = None,
) -> list[np.ndarray]:
    """Meta-weights learned by Reptile from the network's current weights over `tasks`.

    Each inner loop adapts to a contiguous window of a task's rows as long as its support set (the
    adaptation's own data size and SGD schedule); windows anywhere in the task make many small tasks
    of one regime. The outer step size decays linearly to zero.
    """
    if not tasks:
        raise ValueError("reptile: no tasks to meta-train on")
    pools = [t.pool for t in tasks]
    rows = min(min(len(t.y_support), len(y)) for t, (_, y) in zip(tasks, pools, strict=True))
    net.start_meta(net.weights())
    for iteration in range(budget.meta_iterations):
        chosen = rng.integers(len(tasks), size=budget.meta_batch)
        firsts = [int(rng.integers(len(pools[k][1]) - rows + 1)) for k in chosen]
        xs = np.stack([pools[k][0][f : f + rows] for k, f in zip(chosen, firsts, strict=True)])
        ys = np.stack([pools[k][1][f : f + rows] / scale for k, f in zip(chosen, firsts, strict=True)])
        batches = np.stack([epoch_batches(rows, budget.adapt_epochs, budget.batches_per_epoch, rng) for _ in chosen])
        net.reptile_step(xs, ys, batches, budget.inner_lr, budget.outer_lr * (1.0 - iteration / budget.meta_iterations))
        if log and (iteration + 1) % max(1, budget.meta_iterations // 4) == 0:
            log(f"reptile {iteration + 1}/{budget.meta_iterations} outer steps over {len(tasks)} tasks")
    meta = net.meta_weights()
    net.set_weights(meta)
    return meta


_BASE: dict[tuple, tuple[Network, list[np.ndarray]]] = {}  # one built network per process, by shape and seed


def base_network(features: int, budget: MetaBudget) -> Network:
    """The base MLP at its seeded initial weights (the start of Reptile and of every scratch run).

    One network is kept and reset rather than rebuilt: building and tracing its passes costs about
    a second, more than a sample-profile meta-training. Another shape builds anew."""
    key = (features, tuple(budget.units), budget.seed)
    if key not in _BASE:
        _BASE.clear()
        fresh_session(budget.seed)
        net = Network(mlp(features, budget.units))
        _BASE[key] = (net, net.weights())
    net, initial = _BASE[key]
    net.set_weights(initial)
    return net


# --- Leave-one-regime-out few-shot evaluation ---------------------------------------------------


def adaptation_curve(
    net: Network, start: Sequence[np.ndarray], data: TaskData, scale: float, epochs: int, budget: MetaBudget, seed: int
) -> list[np.ndarray]:
    """Query forecasts (log returns) after 0, 1, ..., `epochs` epochs of adaptation on the support.
    The batch order comes from `seed`, so two starting points see the same steps."""
    rng = np.random.default_rng(seed)
    net.set_weights(start)
    y = data.y_support / scale
    out = [net.predict(data.x_query) * scale]
    for _ in range(epochs):
        net.sgd(data.x_support, y, epoch_batches(len(y), 1, budget.batches_per_epoch, rng), budget.inner_lr)
        out.append(net.predict(data.x_query) * scale)
    return out


@dataclass
class Evaluation:
    """The few-shot results of one horizon: a row per held-out task and variant (`table`), the query
    MSE over the random walk's after each adaptation epoch from the meta-initialisation and from
    scratch (`curves`), and every query row with each variant's forecast (`queries`)."""

    table: pl.DataFrame
    curves: pl.DataFrame
    queries: pl.DataFrame


def few_shot(
    tasks: Sequence[Task],
    history: pl.DataFrame,
    features: Sequence[str],
    budget: MetaBudget,
    *,
    horizon: int,
    periods_per_year: float,
    cost_bps: float,
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """Leave-one-regime-out: for each held-out regime (the last few that can be), meta-train on the
    tasks that had ended before it, adapt on its support and score its query beside the same network
    from scratch (the adaptation's epochs and a longer budget), the meta-initialisation unadapted and
    the random walk."""
    rows, curves, queries = [], [], []
    plan = held_out_plan(tasks, budget)
    net = base_network(len(features), budget) if plan else None
    initial = net.weights() if net else []
    for number, (held, earlier) in enumerate(plan):
        train = [task_data(t, history, features, budget) for t in earlier]
        data = task_data(held, history, features, budget)
        scale = target_scale(train)
        net.set_weights(initial)
        meta = reptile(net, train, scale, budget, np.random.default_rng(budget.seed + number))
        seed = budget.seed + 1000 + number
        meta_curve = adaptation_curve(net, meta, data, scale, budget.long_epochs, budget, seed)
        scratch_curve = adaptation_curve(net, initial, data, scale, budget.long_epochs, budget, seed)
        chosen = {
            "meta_adapted": (meta_curve[budget.adapt_epochs], budget.adapt_epochs),
            "meta_init": (meta_curve[0], 0),
            "scratch": (scratch_curve[budget.adapt_epochs], budget.adapt_epochs),
            "scratch_long": (scratch_curve[budget.long_epochs], budget.long_epochs),
            "random_walk": (np.zeros_like(data.y_query), 0),
        }
        queries.append(
            pl.DataFrame(
                {
                    "held_out": number,
                    "regime": held.regime,
                    "time": data.query_time,
                    "actual": data.y_query,
                    "price": data.price,
                    "forward_price": data.forward_price,
                    **{v: f for v, (f, _) in chosen.items() if v != "random_walk"},
                }
            )
        )
        for variant, (forecast, epochs) in chosen.items():
            found = scores(
                data.y_query,
                forecast,
                data.price,
                data.forward_price,
                horizon=horizon,
                periods_per_year=periods_per_year,
                cost_bps=cost_bps,
            )
            rows.append(
                {
                    "regime": held.regime,
                    "start": str(held.start),
                    "meta_tasks": len(train),
                    "support_rows": len(data.y_support),
                    "query_rows": len(data.y_query),
                    "model": variant,
                    "epochs": epochs,
                    **{m: found[m] for m in (*SHOWN, "mae", "rmse")},
                }
            )
        walk = float(np.mean(data.y_query**2))
        for epoch, (m, s) in enumerate(zip(meta_curve, scratch_curve, strict=True)):
            curves.append(
                {
                    "regime": held.regime,
                    "epoch": epoch,
                    "meta_init": float(np.mean((m - data.y_query) ** 2)) / walk,
                    "scratch": float(np.mean((s - data.y_query) ** 2)) / walk,
                }
            )
        if log:
            adapted = rows[-5]
            log(
                f"held out {held.regime}: meta-trained on {len(train)} earlier tasks; adapted query MSE "
                f"{adapted['mse_vs_rw']:.3f} x the random walk's, scratch {rows[-3]['mse_vs_rw']:.3f}"
            )
    table = pl.DataFrame(
        rows,
        schema={
            "regime": pl.String,
            "start": pl.String,
            "meta_tasks": pl.Int64,
            "support_rows": pl.Int64,
            "query_rows": pl.Int64,
            "model": pl.String,
            "epochs": pl.Int64,
            **dict.fromkeys((*SHOWN, "mae", "rmse"), pl.Float64),
        },
    )
    curve = pl.DataFrame(
        curves, schema={"regime": pl.String, "epoch": pl.Int64, "meta_init": pl.Float64, "scratch": pl.Float64}
    )
    return Evaluation(table, curve, pl.concat(queries) if queries else pl.DataFrame())


def tracked_scores(queries: pl.DataFrame, *, horizon: int, periods_per_year: float, cost_bps: float) -> pl.DataFrame:
    """The meta-adapted forecasts scored as the model families are (scope fold / regime / overall,
    cbi_assets.models.evaluation.METRICS), a held-out task being a fold; beside them the other
    variants' MSE over the random walk's, MASE and direction, for the experiment tracker."""

    def row(scope: str, group: str, part: pl.DataFrame) -> dict:
        columns = [part[c].to_numpy() for c in ("actual", "price", "forward_price")]
        found = {}
        for variant in ("meta_adapted", *(v for v in VARIANTS if v not in ("meta_adapted", "random_walk"))):
            values = scores(
                columns[0],
                part[variant].to_numpy(),
                *columns[1:],
                horizon=horizon,
                periods_per_year=periods_per_year,
                cost_bps=cost_bps,
            )
            if variant == "meta_adapted":
                found.update({m: values[m] for m in (*METRICS, "mse", "mse_vs_rw")})
            else:
                found.update({f"{variant}_{m}": values[m] for m in ("mse_vs_rw", "mase", "directional_accuracy")})
        return {"scope": scope, "group": group, "rows": part.height, **found}

    if queries.is_empty():
        return pl.DataFrame(schema={"scope": pl.String, "group": pl.String, "rows": pl.Int64})

    def parts(column: str):
        return queries.partition_by(column, as_dict=True, maintain_order=True).items()

    rows = [row("fold", str(k), part) for (k,), part in parts("held_out")]
    rows += [row("regime", r, part) for (r,), part in parts("regime")]
    rows.append(row("overall", "all", queries))
    return pl.DataFrame(rows)


def summary(table: pl.DataFrame) -> pl.DataFrame:
    """Each variant's metrics averaged over the held-out tasks (each task counts once)."""
    return table.group_by("model", maintain_order=True).agg(pl.len().alias("tasks"), *(pl.col(m).mean() for m in SHOWN))


# --- The stored meta-initialisation and adaptation to a new regime -------------------------------


@dataclass(eq=False)
class MetaInit:
    """A meta-learned initialisation: the network, what it reads, and how it adapts."""

    network: Network
    weights: list[np.ndarray]  # its own: the network object may be reset for another horizon
    features: tuple[str, ...]
    target_scale: float
    settings: dict  # adaptation settings and provenance (tasks, budget)

    def save(self, folder: Path) -> None:
        """The Keras model and its settings, each written beside the old one and renamed over it."""
        import warnings

        from cbi_assets.lake import replacing

        self.network.set_weights(self.weights)
        with warnings.catch_warnings(), replacing(folder / MODEL_FILE) as incoming:
            warnings.simplefilter("ignore", DeprecationWarning)  # Keras 3 saving trips NumPy 2's copy keyword
            self.network.model.save(incoming)  # the temporary name keeps the .keras suffix Keras asks for
        settings = {"features": list(self.features), "target_scale": self.target_scale, **self.settings}
        with replacing(folder / SETTINGS_FILE) as incoming:
            incoming.write_text(json.dumps(settings, indent=1, default=str))

    @classmethod
    def load(cls, folder: Path) -> MetaInit:
        import keras

        model, settings = folder / MODEL_FILE, folder / SETTINGS_FILE
        if not (model.is_file() and settings.is_file()):
            raise FileNotFoundError(
                f"{folder}: no meta-initialisation ({MODEL_FILE}, {SETTINGS_FILE}); materialize "
                "the market's models/reptile for this horizon first"
            )
        values = json.loads(settings.read_text())
        features = tuple(values.pop("features"))
        scale = float(values.pop("target_scale"))
        network = Network(keras.models.load_model(model, compile=False))
        return cls(network, network.weights(), features, scale, values)


def meta_train(
    tasks: Sequence[Task],
    history: pl.DataFrame,
    features: Sequence[str],
    budget: MetaBudget,
    log: Callable[[str], None] | None = None,
) -> MetaInit:
    """The meta-initialisation from every task (what a new regime adapts from)."""
    data = [task_data(t, history, features, budget) for t in tasks]
    scale = target_scale(data)
    net = base_network(len(features), budget)
    meta = reptile(net, data, scale, budget, np.random.default_rng(budget.seed), log)
    settings = {
        "adapt_epochs": budget.adapt_epochs,
        "batches_per_epoch": budget.batches_per_epoch,
        "inner_lr": budget.inner_lr,
        "scaler_rows": budget.scaler_rows,
        "max_task_rows": budget.max_task_rows,
        "seed": budget.seed,
        "units": list(budget.units),
        "tasks": [t.regime for t in tasks],
        "known_by": str(max(t.known_by for t in tasks)),
    }
    return MetaInit(net, meta, tuple(features), scale, settings)


@dataclass(eq=False)
class Adapted:
    """A meta-initialisation adapted to one regime's support: forecasts forward log returns of rows
    (a frame with the training set's feature columns)."""

    network: Network
    weights: list[np.ndarray]
    scaler: RobustScaler
    target_scale: float
    support_rows: int
    epochs: int

    @property
    def features(self) -> tuple[str, ...]:
        return self.scaler.columns

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(
                f"meta-adapted model: the frame lacks {len(missing)} of its features (first: "
                f"{missing[:3]}); pass rows with the training set's feature columns"
            )
        self.network.set_weights(self.weights)  # the network object may be adapted again later
        return self.network.predict(scaled(frame, self.scaler)) * self.target_scale


MIN_SUPPORT_ROWS = 10


def adapt_init(
    init: MetaInit, support: pl.DataFrame, history: pl.DataFrame, key: str, epochs: int, where: str
) -> Adapted:
    """Adapt a meta-initialisation to a support frame (labelled rows of the new regime); the scaler
    sees the history before the support and the support's features only."""
    missing = [c for c in (key, "forward_return", *init.features) if c not in support.columns]
    if missing:
        raise ValueError(
            f"{where}: the support frame lacks columns {missing[:5]} ({len(missing)} in all); pass "
            "rows of the training set (time key, forward_return and the feature columns)"
        )
    labelled = support.filter(pl.col("forward_return").is_not_null() & pl.col("forward_return").is_finite()).sort(key)
    if labelled.height < MIN_SUPPORT_ROWS:
        raise ValueError(
            f"{where}: the support frame has {labelled.height} labelled rows; adapting needs at least "
            f"{MIN_SUPPORT_ROWS} (about 30 sessions whose forward returns have matured)"
        )
    rows = int(init.settings.get("scaler_rows", MetaBudget().scaler_rows))
    scaler = task_scaler(history, labelled, key, init.features, rows)
    budget = MetaBudget(
        batches_per_epoch=int(init.settings["batches_per_epoch"]), inner_lr=float(init.settings["inner_lr"])
    )
    # The support's most recent rows, as many as the meta-training adapted on (an intraday support holds thousands).
    recent = labelled.tail(int(init.settings.get("max_task_rows", labelled.height)))
    y = recent["forward_return"].to_numpy().astype(np.float64) / init.target_scale
    weights = adapt_weights(
        init.network,
        init.weights,
        scaled(recent, scaler),
        y,
        epochs,
        budget,
        np.random.default_rng(int(init.settings.get("seed", 0))),
    )
    return Adapted(init.network, weights, scaler, init.target_scale, recent.height, epochs)


def adapt(lake: Lake, market_: Market | str, horizon: str, support_frame: pl.DataFrame, epochs: int = 5) -> Adapted:
    """Adapt the stored Reptile meta-learner of a market x horizon to a new regime's support rows.

    `support_frame`: the regime's first sessions as training-set rows (time key, forward_return and
    the feature columns); rows whose label has not matured are left out. Returns a predictor whose
    `predict(frame)` forecasts the forward log return of each row.
    """
    m = market(market_)
    key = time_key(m.horizon(horizon))
    init = MetaInit.load(lake.folder(tables.REPTILE, market=m, horizon=horizon))
    # The history a new regime's features are scaled against.
    history = lake.read(tables.TRAINING_SET, columns=[key, *init.features], market=m, horizon=horizon)
    return adapt_init(init, support_frame, history, key, epochs, f"{m} {horizon} Reptile meta-learner")
