"""A family's fitted model as MLflow serves it: `mlflow.pyfunc.load_model("models:/cbi-ZL-1w@champion")`
gives a model whose `predict(frame)` is the forecast the daily forecast computes for the frame's last row.

`frame` (pandas) holds master feature rows as the training set holds them: the time key and the features
the model was trained on, unscaled, in time order; other columns are ignored. Intraday bar times go in as
naive UTC (MLflow's datetime type has no time zone). Rows before the last fold's first training row are left
out, as the daily forecast leaves them out; a return-series family (ARIMA, GARCH, Prophet...) needs the rows
from that one on (`first` in serving.json), a network a window of them. The answer is one row: the origin's
time key and `forecast_return`, the forward log return over the horizon.

The model folder a family's MLflow run logs (`model/`, the one the registry versions) is a pyfunc model
with this module as its loader. Its data folder holds the fitted family (`model.pkl`, the object the
walk-forward trained on the last fold), `serving.json` (the last fold's scaler and training span, the
input shape, the budget's window) and `native/`: the library's own MLflow flavour where the family has
one (LightGBM, XGBoost, Keras, Prophet: e.g. `mlflow.lightgbm.load_model("runs:/<id>/model/data/family/native")`),
which reads inputs already scaled. A network is stored only there: the served model loads it back from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib.metadata
import json
import os
import pickle
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.explain.shapley import window_predictor
from cbi_assets.models.inputs import forecast_inputs, return_column
from cbi_assets.models.registry import Budget, Family, Inputs, Shape
from cbi_assets.predictions.origin import LastFold, origin_arrays, origin_rows
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import time_key

DATA = "family"  # the pyfunc's data folder (MLflow keeps it under the model's data/)
NATIVE = "native"  # inside it: the library's own MLflow flavour
PICKLE = "model.pkl"
SPEC = "serving.json"
OUTPUT = "forecast_return"
# The environment a served model needs: the project (its code cuts and scales the inputs, and it requires every
# library a family uses), with the libraries whose objects a family stores pinned to the versions that wrote them.
# The project itself is not on PyPI: a host that serves these models installs it (README "Run it for a team").
REQUIREMENTS = ("mlflow", "numpy", "pandas", "polars", "pyarrow", "scipy", "statsmodels", "prophet")
NATIVE_REQUIREMENTS = {"lightgbm": ("lightgbm",), "xgboost": ("xgboost",), "keras": ("keras", "tensorflow")}


# Each Keras network's forward pass, traced once: tracing costs tens of ms, a traced call a fraction of one.
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forecast_of(model, inputs: Inputs) -> float:
    """A stored model's forecast of the last input row: a family's fitted model, or the Keras network a
    sequence family stores (its output layer already gives the forward log return)."""
    if type(model).__module__.startswith("keras"):
        if model not in _TRACED:
            _TRACED[model] = window_predictor(model)
        return float(_TRACED[model](np.asarray(inputs.x))[-1])
    return float(model.predict(inputs).mean[-1])


@dataclass(frozen=True)
class Spec:
    """What a served family reads besides its fitted model: the market x horizon, its input shape, the
    last fold (scaler and training span) and the profile's budget (window length, training-row cap)."""

    market: Market
    horizon: Horizon
    family: str
    shape: Shape
    last: LastFold
    budget: Budget

    @property
    def key(self) -> str:
        return time_key(self.horizon)

    @property
    def column(self) -> str:
        """The one-step return column the return-series families read (a feature, at every timeframe)."""
        return return_column(self.market, self.horizon)

    def to_json(self) -> str:
        scaler = self.last.scaler
        return json.dumps(
            {
                "market": self.market.symbol,
                "horizon": self.horizon.name,
                "family": self.family,
                "shape": self.shape,
                "fold": self.last.fold,
                "first": self.last.first.isoformat(),
                "trained_until": self.last.trained_until.isoformat(),
                "scaler": {"columns": scaler.columns, "median": scaler.median, "scale": scaler.scale},
                "budget": dataclasses.asdict(self.budget),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Spec:
        spec = json.loads(text)
        market = MARKETS[spec["market"]]
        horizon = market.horizon(spec["horizon"])
        parse = dt.date.fromisoformat if time_key(horizon) == "date" else dt.datetime.fromisoformat
        scaler = RobustScaler(**{k: tuple(v) for k, v in spec["scaler"].items()})
        last = LastFold(spec["fold"], scaler, parse(spec["first"]), parse(spec["trained_until"]))
        return cls(market, horizon, spec["family"], spec["shape"], last, Budget(**spec["budget"]))

    def signature(self):
        """Input: the time key and the features (the one-step return among them), as doubles (float32 columns
        widen to them exactly). Output: the origin's time key and its forecast."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        columns = dict.fromkeys([self.column, *self.last.features])
        return ModelSignature(
            inputs=Schema([ColSpec("datetime", self.key), *(ColSpec("double", c) for c in columns)]),
            outputs=Schema([ColSpec("datetime", self.key), ColSpec("double", OUTPUT)]),
        )


@dataclass
class ServedFamily:
    """The pyfunc model MLflow loads (`_load_pyfunc`): the fitted family and what it reads."""

    model: Any
    spec: Spec

    def forecast(self, frame: pl.DataFrame) -> tuple[Any, float]:
        """(the origin, the forecast) for the last row of `frame`, exactly as the daily forecast computes it:
        the rows from the last fold's first training row, scaled by its scaler, cut to the family's shape."""
        spec, key = self.spec, self.spec.key
        where = f"the frame given to the {spec.market} {spec.horizon.name} {spec.family} model"
        rows = origin_rows(frame.lazy(), key, spec.last, spec.column, where)
        if spec.shape == "series" and frame[key].min() > spec.last.first:
            raise ValueError(
                f"{where} starts at {frame[key].min()}, after the last fold's first training row "
                f"{spec.last.first}: its forecast reads the one-step returns from there on; give the rows from then"
            )
        if spec.shape == "sequence" and rows.height < spec.budget.sequence_length:
            raise ValueError(
                f"{where} has {rows.height} rows from {spec.last.first} on; its window needs "
                f"{spec.budget.sequence_length}"
            )
        data, fold = origin_arrays(rows, key, spec.last, spec.column, spec.horizon)
        inputs = forecast_inputs(data, fold, spec.last.scaler, spec.shape, spec.budget)
        return rows[key][-1], forecast_of(self.model, inputs)

    def predict(self, model_input, params=None):
        import pandas as pd

        frame = pl.from_pandas(model_input) if isinstance(model_input, pd.DataFrame) else pl.DataFrame(model_input)
        origin, value = self.forecast(frame.with_columns(_as_key(frame, self.spec.key)))
        return pd.DataFrame({self.spec.key: pd.to_datetime([origin]), OUTPUT: [value]})

    def get_raw_model(self):
        return self.model


def _as_key(frame: pl.DataFrame, key: str) -> pl.Expr:
    """The time key as the lake stores it: a Date for a session, a UTC Datetime for a bar."""
    column = pl.col(key)
    if key == "date":
        return column.cast(pl.Date)
    dtype = frame.schema.get(key)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        column = column.dt.replace_time_zone("UTC")
    return column.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))


# --- Writing and reading the model folder ---------------------------------------------------------


@functools.cache
def _pinned(packages: tuple[str, ...]) -> list[str]:
    """`package==version` of each installed package (a package this platform lacks is left out)."""
    out = []
    for package in packages:
        try:
            out.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _native(model, folder: Path, spec: Spec) -> tuple[str, ...]:
    """Log `model`'s own library flavour into `folder` where it has one; the libraries it needs."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from cbi_assets.models.neural import SequenceNetwork
    from cbi_assets.models.statistical import FittedProphet
    from cbi_assets.models.trees import LightGBMModel, XGBoostModel

    features = len(spec.last.features)
    tabular = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, features), "scaled_features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,), OUTPUT)]),
    )
    if isinstance(model, LightGBMModel):
        import mlflow.lightgbm

        mlflow.lightgbm.save_model(
            model.booster, str(folder), signature=tabular, pip_requirements=_pinned(("mlflow", "lightgbm"))
        )
        return NATIVE_REQUIREMENTS["lightgbm"]
    if isinstance(model, XGBoostModel):
        import mlflow.xgboost

        # Only the trees the family forecasts with: the best round's when training stopped early.
        mlflow.xgboost.save_model(
            model.booster[: model.rounds],
            str(folder),
            signature=tabular,
            pip_requirements=_pinned(("mlflow", "xgboost")),
        )
        return NATIVE_REQUIREMENTS["xgboost"]
    if isinstance(model, SequenceNetwork):
        import mlflow.keras

        windows = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.model.input_shape[1:]), "scaled_windows")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1), OUTPUT)]),
        )
        with warnings.catch_warnings():  # Keras 3 saving trips NumPy 2's copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            mlflow.keras.save_model(
                model.exported(),
                str(folder),
                signature=windows,
                pip_requirements=_pinned(("mlflow", *NATIVE_REQUIREMENTS["keras"])),
            )
        return NATIVE_REQUIREMENTS["keras"]
    if isinstance(model, FittedProphet):
        import mlflow.prophet

        mlflow.prophet.save_model(model.model, str(folder), pip_requirements=_pinned(("mlflow", "prophet")))
    return ()


def save(folder: Path, model, family: Family, market: Market, horizon: Horizon, last: LastFold, budget: Budget) -> Path:
    """Write `model` (the family's fit on the `last` fold) as a pyfunc MLflow model into `folder` (absent or
    empty), with its native flavour where it has one and a signature; the requirements are given, not
    inferred (inferring them loads the model in a subprocess, seconds a run)."""
    import mlflow.pyfunc

    from cbi_assets.models.neural import SequenceNetwork

    # MLflow copies a uv project's lock file (1 MB here) into every model saved from its folder otherwise.
    os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
    spec = Spec(market, horizon, family.name, family.shape, last, budget)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / DATA
        data.mkdir()
        with warnings.catch_warnings():
            # The signature is given: an input example (a frame of hundreds of features) would only add a file.
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            libraries = _native(model, data / NATIVE, spec)
            if not isinstance(model, SequenceNetwork):  # a network is its native Keras model
                with open(data / PICKLE, "wb") as out:
                    pickle.dump(model, out)
            (data / SPEC).write_text(spec.to_json())
            mlflow.pyfunc.save_model(
                str(folder),
                loader_module=__name__,
                data_path=str(data),
                signature=spec.signature(),
                pip_requirements=_pinned((*REQUIREMENTS, *libraries)),
            )
    return folder


def _load_pyfunc(data_path: str) -> ServedFamily:
    """MLflow's pyfunc loader (`mlflow.pyfunc.load_model`): the model folder's data folder."""
    return ServedFamily(_fitted(Path(data_path)), Spec.from_json((Path(data_path) / SPEC).read_text()))


def _fitted(data: Path):
    if (data / PICKLE).is_file():
        with open(data / PICKLE, "rb") as stored:
            return pickle.load(stored)
    import mlflow.keras

    return mlflow.keras.load_model(str(data / NATIVE))


def fitted(model_folder: Path):
    """The fitted family (what `forecast_of` takes) in a model folder `save` wrote."""
    from mlflow.models import Model

    data = Model.load(str(model_folder / "MLmodel")).flavors["python_function"]["data"]
    return _fitted(model_folder / data)
