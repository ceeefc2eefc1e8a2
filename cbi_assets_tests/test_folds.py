"""Walk-forward folds never let a training label see the test window; scalers see training rows only."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cbi_assets.catalogue import MARKETS, MES, ZL
from cbi_assets.profiles import PROFILES, load_profile
from cbi_assets.training.folds import (
    FOLD_COLUMNS,
    FoldPlan,
    fold_membership,
    split,
    walk_forward,
)
from cbi_assets.training.scaling import RobustScaler

START = dt.date(2000, 1, 3)


def _history(n: int, gaps: np.ndarray | None = None) -> pl.Series:
    days = np.cumsum(gaps) if gaps is not None else np.arange(n)
    return pl.Series("time", [START + dt.timedelta(days=int(d)) for d in days], dtype=pl.Date)


@st.composite
def labelled_histories(draw):
    """A time grid (daily, or with random gaps) and label ends of one of several shapes."""
    n = draw(st.integers(50, 2000))
    h = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    irregular = draw(st.booleans())
    times = _history(n, rng.integers(1, 5, n) if irregular else None)
    kind = draw(st.sampled_from(["rows", "barrier", "calendar"]))
    if kind == "rows":  # the label ends h rows later; the last h rows have none
        label_end = times.shift(-h)
    elif kind == "barrier":  # a barrier may be hit before the h-th row: ends are not monotone
        ahead = np.arange(n) + rng.integers(1, h + 1, n)
        label_end = times.gather(np.minimum(ahead, n - 1)).set(pl.Series(ahead >= n), None)
    else:  # h calendar days later, which on a grid with gaps falls between rows
        label_end = (times + dt.timedelta(days=h)).set(times + dt.timedelta(days=h) > times[-1], None)
    if draw(st.booleans()):  # some rows inside the history have no label (a missing price)
        label_end = label_end.set(pl.Series(rng.random(n) < 0.05), None)
    return times, label_end.alias("label_end")


@st.composite
def plans(draw):
    scheme = draw(st.sampled_from(["expanding", "sliding"]))
    return FoldPlan(
        n_folds=draw(st.integers(1, 20)),
        scheme=scheme,
        embargo=draw(st.integers(0, 60)),
        test_fraction=draw(st.floats(0.05, 0.9)),
        train_rows=draw(st.integers(1, 1000)) if scheme == "sliding" else None,
    )


def _end_row(times: pl.Series, label_end: pl.Series) -> np.ndarray:
    """For each row, the first row at or after its label's end (the row its label reaches)."""
    t = times.to_physical().to_numpy()
    return np.searchsorted(t, label_end.fill_null(times[-1]).to_physical().to_numpy(), side="left")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled_histories(), plans())
def test_folds_are_purged_embargoed_and_cover_the_test_period(history, plan):
    times, label_end = history
    labelled = np.flatnonzero(label_end.is_not_null().to_numpy())
    try:
        folds = walk_forward(times, label_end, plan)
    except ValueError:
        # Only an impossible plan may be refused: too few test rows, or a first test window that
        # even the first label (plus the embargo) reaches into.
        event("refused")
        n_test = int(len(labelled) * plan.test_fraction)
        assert n_test < plan.n_folds or _end_row(times, label_end)[labelled[0]] + plan.embargo >= labelled[-n_test]
        return

    assert folds.columns == list(FOLD_COLUMNS) and folds["fold"].to_list() == list(range(plan.n_folds))
    frame = pl.DataFrame({"row": np.arange(len(times)), "time": times, "label_end": label_end})
    t = times.to_physical().to_numpy()
    end = label_end.to_physical().to_numpy()
    end_row = _end_row(times, label_end)
    tested = []
    for fold in folds.iter_rows(named=True):
        train, test = split(frame, fold)
        tr, te = train["row"].to_numpy(), test["row"].to_numpy()
        assert len(tr) == fold["train_rows"] > 0 and len(te) == fold["test_rows"] > 0
        # (1) Purge: no training span [t, end] meets a test span. The test rows whose time is at or
        # before a training label's end form a prefix; that label meets one iff the prefix's
        # latest end reaches back to the training row's own time.
        before = np.searchsorted(t[te], end[tr], side="right")
        reach = np.maximum.accumulate(end[te])
        assert not ((before > 0) & (reach[np.maximum(before - 1, 0)] >= t[tr])).any()
        # (2) Embargo: the latest training label plus `embargo` rows still ends before the window.
        assert end_row[tr].max() + plan.embargo < te[0]
        assert fold["train_label_end"] == label_end[int(tr[np.argmax(end[tr])])] < fold["test_start"]
        assert (fold["train_start"], fold["train_end"]) == (times[int(tr[0])], times[int(tr[-1])])
        assert (fold["test_start"], fold["test_end"]) == (times[int(te[0])], times[int(te[-1])])
        assert fold["test_label_end"] == label_end[int(te[np.argmax(end[te])])]
        # Training takes everything allowed: the next labelled row would break the rule.
        following = labelled[labelled > tr[-1]]
        assert end_row[following[0]] + plan.embargo >= te[0]
        tested.append(te)
        # (4) A sliding window never exceeds its length; an expanding one starts at the first label.
        if plan.scheme == "sliding":
            assert len(tr) <= plan.train_rows
        else:
            assert tr[0] == labelled[0]

    # (3) The test windows are disjoint, in order, and together exactly the last labelled rows,
    # about test_fraction of them, in windows whose sizes differ by at most one row.
    everything = np.concatenate(tested)
    assert (np.diff(everything) > 0).all()
    assert (everything == labelled[len(labelled) - len(everything) :]).all()
    assert abs(len(everything) - plan.test_fraction * len(labelled)) < 1
    sizes = [len(te) for te in tested]
    assert max(sizes) - min(sizes) <= 1
    assert (folds["test_lo"].to_numpy()[1:] > folds["test_hi"].to_numpy()[:-1]).all()


@settings(max_examples=30, deadline=None)
@given(labelled_histories(), plans())
def test_a_window_longer_than_the_history_slides_as_it_expands(history, plan):
    times, label_end = history
    expanding = FoldPlan(plan.n_folds, "expanding", plan.embargo, plan.test_fraction)
    sliding = FoldPlan(plan.n_folds, "sliding", plan.embargo, plan.test_fraction, train_rows=len(times))
    try:
        expected = walk_forward(times, label_end, expanding)
    except ValueError:
        with pytest.raises(ValueError):
            walk_forward(times, label_end, sliding)
        return
    assert walk_forward(times, label_end, sliding).drop("scheme").equals(expected.drop("scheme"))


def test_a_hand_checked_example():
    # 20 days, labels 2 rows ahead (rows 18 and 19 have none), 2 folds, 1 row of embargo.
    times = _history(20)
    label_end = times.shift(-2)
    folds = walk_forward(times, label_end, FoldPlan(2, "expanding", embargo=1))
    # 18 labelled rows: the test period is rows 9..17, cut 4 + 5. Fold 0 tests from row 9, so a
    # training label must end at row 7 or before (7 + 1 embargo < 9): rows 0..5. Fold 1: rows 0..9.
    assert folds.select("train_lo", "train_hi", "test_lo", "test_hi", "train_rows", "test_rows").rows() == [
        (0, 5, 9, 12, 6, 4),
        (0, 9, 13, 17, 10, 5),
    ]
    day = [START + dt.timedelta(days=i) for i in range(20)]
    assert folds.select(
        "train_start", "train_end", "train_label_end", "test_start", "test_end", "test_label_end"
    ).rows() == [
        (day[0], day[5], day[7], day[9], day[12], day[14]),
        (day[0], day[9], day[11], day[13], day[17], day[19]),
    ]
    sliding = walk_forward(times, label_end, FoldPlan(2, "sliding", embargo=1, train_rows=4))
    assert sliding.select("train_lo", "train_hi").rows() == [(2, 5), (6, 9)]

    members = fold_membership(label_end, folds)
    assert members.filter(fold=1, role="test")["row"].to_list() == [13, 14, 15, 16, 17]
    assert members.filter(fold=0, role="train")["row"].to_list() == list(range(6))


def test_unlabelled_rows_are_neither_trained_nor_tested():
    times = _history(40)
    label_end = times.shift(-1).set(pl.Series(np.isin(np.arange(40), [3, 30])), None)
    folds = walk_forward(times, label_end, FoldPlan(2, "expanding"))
    members = fold_membership(label_end, folds)
    assert not members["row"].is_in([3, 30, 39]).any()
    # 37 labelled rows, 18 tested: rows 20..38 less row 30, which sits inside fold 1's slice.
    assert folds.select("test_lo", "test_hi", "test_rows").rows() == [(20, 28, 9), (29, 38, 9)]


def test_impossible_plans_say_what_to_change():
    times = _history(30)
    label_end = times.shift(-5)
    with pytest.raises(ValueError, match="fewer than n_folds=20"):
        walk_forward(times, label_end, FoldPlan(20, "expanding"))
    with pytest.raises(ValueError, match="fold 0 .* has no training row"):
        walk_forward(times, label_end, FoldPlan(2, "expanding", embargo=10))
    with pytest.raises(ValueError, match="sliding plan needs train_rows"):
        FoldPlan(3, "sliding")
    with pytest.raises(ValueError, match="only applies to sliding"):
        FoldPlan(3, "expanding", train_rows=10)
    with pytest.raises(ValueError, match="test_fraction"):
        FoldPlan(3, "expanding", test_fraction=1.0)
    with pytest.raises(ValueError, match="increase strictly"):
        walk_forward(times.reverse(), label_end, FoldPlan(2, "expanding"))
    with pytest.raises(ValueError, match="before the row's time"):
        walk_forward(times, times.shift(1), FoldPlan(2, "expanding"))


def test_the_profiles_plans_follow_the_catalogue():
    full = PROFILES["full"]
    assert full.fold_plan(ZL, ZL.horizon("3m")) == FoldPlan(60, "expanding", embargo=63)
    assert PROFILES["sample"].fold_plan("ZL", ZL.horizon("1w")).n_folds == 3
    # An intraday horizon's rows are bars of its own length: one row of embargo, 60 sessions of hours.
    hourly = full.fold_plan(MES, MES.horizon("1h"))
    assert hourly.scheme == "sliding" and hourly.embargo == 1 and hourly.train_rows == 60 * 23
    assert full.fold_plan(MES, MES.horizon("1min")).train_rows == 60 * 1380
    # Every valid market x horizon has a plan in every profile, embargoed by one horizon.
    for profile in PROFILES.values():
        for market in MARKETS.values():
            for h in market.horizons:
                assert profile.fold_plan(market, h).embargo == (1 if h.intraday else h.bars)
    with pytest.raises(KeyError, match="valid horizons"):
        ZL.horizon("1min")
    with pytest.raises(ValueError, match="neither a built-in profile"):
        load_profile("prod")


def test_a_users_profile_overrides_the_plans_it_names(tmp_path):
    path = tmp_path / "desk.toml"
    path.write_text('base = "sample"\n[folds."ZL 1d"]\nn_folds = 7\n')
    desk = load_profile(str(path))
    assert desk.fold_plan(ZL, ZL.horizon("1m")) == FoldPlan(7, "expanding", embargo=21)
    # What the file does not name stays the base's.
    for h in MES.horizons:
        assert desk.fold_plan(MES, h) == PROFILES["sample"].fold_plan(MES, h)
    path.write_text('base = "sample"\n[folds."ZL 1d"]\nfolds = 7\n')
    with pytest.raises(ValueError, match="no setting folds") as refused:
        load_profile(str(path))
    assert str(path) in str(refused.value)


# --- The scaler -------------------------------------------------------------------------------


def test_scaler_by_hand():
    frame = pl.DataFrame(
        {
            "x": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, None, float("nan")],
            "flat": pl.Series([2.5] * 11, dtype=pl.Float32),
            "n": list(range(11)),
            "name": ["zl"] * 11,
        }
    )
    scaler = RobustScaler.fit(frame, ["x", "flat", "n"])
    # x: median 5, quartiles 3 and 7 (nulls and NaN ignored). flat: no spread, so scale 1.
    # n = 0..10: median 5, quartiles 2.5 and 7.5.
    assert scaler == RobustScaler(("x", "flat", "n"), (5.0, 2.5, 5.0), (4.0, 1.0, 5.0))
    out = scaler.transform(frame)
    assert out["x"].head(3).to_list() == [-1.0, -0.75, -0.5]
    assert out["flat"].dtype == pl.Float32 and out["flat"].unique().to_list() == [0.0]
    assert out["n"].dtype == pl.Float64 and out["name"].equals(frame["name"])
    assert RobustScaler.from_frame(scaler.to_frame()) == scaler


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e6, 1e6)))
def test_scaler_matches_numpy(values):
    scaler = RobustScaler.fit(pl.DataFrame({"v": values}), ["v"])
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    assert scaler.median[0] == pytest.approx(q50, rel=1e-9, abs=1e-9)
    assert scaler.scale[0] == (pytest.approx(q75 - q25, rel=1e-9, abs=1e-6) if q75 > q25 else 1.0)


def test_scaler_sees_only_the_training_rows():
    times = _history(300)
    rng = np.random.default_rng(7)
    frame = pl.DataFrame({"time": times, "label_end": times.shift(-5), "f": rng.normal(size=300)})
    fold = walk_forward(frame["time"], frame["label_end"], FoldPlan(3, "expanding", embargo=5)).row(0, named=True)
    train, _ = split(frame, fold)
    fitted = RobustScaler.fit(train, ["f"])
    # Wild test rows (and everything after them) change nothing the scaler learned.
    wild = frame.with_columns(pl.when(pl.int_range(300) >= fold["test_lo"]).then(pl.col("f") * 1e6 + 50).otherwise("f"))
    assert RobustScaler.fit(split(wild, fold)[0], ["f"]) == fitted
    # The whole frame would give another scaler, so the test above can tell the two apart.
    assert RobustScaler.fit(wild, ["f"]) != fitted
