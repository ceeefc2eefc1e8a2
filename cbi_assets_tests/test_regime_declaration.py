"""Regimes known only in hindsight do not weight the past: a walk-forward fold weights its training rows
by the regimes declared by the end of its training window."""

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.catalogue import DECLARATION_LAG, MARKETS, REGIMES, Regime
from cbi_assets.models.inputs import TrainingArrays, fold_inputs
from cbi_assets.profiles import PROFILES
from cbi_assets.regimes.assets import RegimeCalendarConfig
from cbi_assets.regimes.calendar import calendar_frame, known_by, with_declared
from cbi_assets.training.scaling import RobustScaler

ZL = MARKETS["ZL"]
CRISIS = next(r for r in REGIMES if r.name == "financial_crisis_2008_2009")


def test_each_regime_is_declared_a_quarter_after_it_began_unless_told():
    calendar = calendar_frame()
    crisis = calendar.filter(pl.col("regime") == CRISIS.name).row(0, named=True)
    assert crisis["declared"] == CRISIS.start + DECLARATION_LAG == dt.date(2008, 9, 30)
    assert calendar["declared"][0] is None  # the first regime, open towards the past, was always known
    told = Regime("later", dt.date(2020, 1, 1), None, 1.0, declared=dt.date(2021, 6, 1))
    assert told.declared_on == dt.date(2021, 6, 1)
    # A calendar stored before declarations were kept gets the default.
    assert with_declared(calendar.drop("declared"))["declared"].to_list() == calendar["declared"].to_list()


def test_the_calendar_as_known_on_a_day_leaves_later_regimes_out():
    calendar = calendar_frame()
    before = known_by(calendar, dt.date(2008, 8, 15))
    assert CRISIS.name not in before["regime"].to_list()
    assert before["regime"][-1] == "commodity_boom_2003_2008" and before["end"][-1] is None  # in force, open
    after = known_by(calendar, dt.date(2008, 10, 1))
    assert after["regime"][-1] == CRISIS.name


def test_the_regime_calendar_config_takes_a_declaration_date():
    entries = [
        {"name": "before", "start": None, "end": "2019-12-31", "weight": 1.0},
        {"name": "after", "start": "2020-01-01", "end": None, "weight": 5.0, "declared": "2020-02-15"},
    ]
    calendar = RegimeCalendarConfig(regimes=entries).calendar()
    assert calendar["declared"].to_list() == [None, dt.date(2020, 2, 15)]


def _training_set(days: pl.Series) -> pl.DataFrame:
    rows = days.len()
    return pl.DataFrame(
        {
            "date": days,
            "forward_return": np.zeros(rows),
            "weight": 1.0,  # what the stored set says (the whole calendar); folds must not use it
            "uniqueness": np.full(rows, 0.5),
            "zl_1d_ret_1": np.zeros(rows),
            "feature": np.arange(rows, dtype=np.float64),
        }
    )


def test_a_fold_weights_its_rows_by_the_regimes_declared_by_its_end():
    days = pl.date_range(dt.date(2008, 1, 1), dt.date(2009, 6, 30), "1d", eager=True)
    frame = _training_set(days)
    data = TrainingArrays.of(frame, ZL, ZL.horizon("1w"), calendar_frame())
    scaler = RobustScaler.fit(frame, ["zl_1d_ret_1", "feature"])
    budget = PROFILES["full"].training
    july = days.to_list().index(dt.date(2008, 7, 15))

    def fold(until: dt.date) -> np.ndarray:
        hi = days.to_list().index(until)
        cut = {"fold": 0, "train_lo": 0, "train_hi": hi, "test_lo": hi + 6, "test_hi": hi + 10}
        return fold_inputs(data, cut, scaler, "tabular", budget)[0].weight

    # Trained until mid-August 2008: nobody had named the crisis yet; July's rows weigh as the boom's.
    assert fold(dt.date(2008, 8, 15))[july] == 150 * 0.5
    # Trained until November 2008: the crisis was declared on 2008-09-30.
    assert fold(dt.date(2008, 11, 14))[july] == 800 * 0.5
    # The live system (no calendar given) keeps the stored weights of the whole calendar.
    assert TrainingArrays.of(frame, ZL, ZL.horizon("1w")).weights_for(0, 3, 3).tolist() == [1.0] * 3
