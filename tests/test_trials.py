import numpy as np
import pandas as pd
import pytest

from ibl_learnrules import featurize, validate_trials
from ibl_learnrules.trials import REQUIRED_COLUMNS, covariate_matrix, signed_stimulus


def table(**overrides):
    base = pd.DataFrame({
        "subject": ["m1"] * 4,
        "session": ["s1", "s1", "s2", "s2"],
        "trial": [0, 1, 0, 1],
        "contrastLeft": [1.0, np.nan, 0.25, np.nan],
        "contrastRight": [np.nan, 0.5, np.nan, 0.0],
        "choice": [1, -1, -1, 0],
        "feedbackType": [1, 1, -1, -1],
        "probabilityLeft": [0.5] * 4,
    })
    for col, (row, value) in overrides.items():
        base[col] = base[col].astype(object)
        base.loc[row, col] = value
    return base


def test_valid_table_is_typed_and_kept():
    out = validate_trials(table())
    assert list(out.columns) == list(REQUIRED_COLUMNS)
    assert out["choice"].dtype == np.int64 and out["trial"].dtype == np.int64
    assert out["subject"].map(type).eq(str).all()
    assert len(out) == 4


def test_not_a_dataframe():
    with pytest.raises(TypeError, match="pandas DataFrame.*got ndarray"):
        validate_trials(np.zeros((3, 8)))


def test_empty_table():
    with pytest.raises(ValueError, match="empty"):
        validate_trials(table().iloc[:0])


def test_missing_columns_are_named():
    pattern = r"missing required column\(s\) \['choice', 'feedbackType'\]"
    with pytest.raises(ValueError, match=pattern):
        validate_trials(table().drop(columns=["choice", "feedbackType"]))


@pytest.mark.parametrize(
    "col,row,value,pattern",
    [
        ("choice", 2, 2, r"'choice' has value 2(\.0)? at row 2 .*-1 \(right\)"),
        ("feedbackType", 1, 0, r"'feedbackType' has value 0(\.0)? at row 1.*\+1 \(reward\)"),
        ("contrastLeft", 0, 1.5, r"'contrastLeft' has value 1.5 at row 0.*\[0, 1\]"),
        ("contrastRight", 1, -0.1, r"'contrastRight' has value -0.1 at row 1"),
        ("probabilityLeft", 3, 1.2, r"'probabilityLeft' has value 1.2 at row 3"),
        ("trial", 1, 0.5, r"'trial' has value 0.5 at row 1.*integers"),
    ],
)
def test_out_of_range_values_name_column_value_and_row(col, row, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_trials(table(**{col: (row, value)}))


@pytest.mark.parametrize("col", ["choice", "feedbackType", "probabilityLeft", "trial"])
def test_non_finite_values(col):
    with pytest.raises(ValueError, match=rf"'{col}' has non-finite value nan at row 2"):
        validate_trials(table(**{col: (2, np.nan)}))


def test_infinite_contrast():
    with pytest.raises(ValueError, match=r"'contrastLeft' has non-finite value inf at row 0"):
        validate_trials(table(contrastLeft=(0, np.inf)))


def test_contrast_on_both_sides():
    with pytest.raises(ValueError, match=r"both set \(1.0, 0.5\) at row 0 .*must be NaN"):
        validate_trials(table(contrastRight=(0, 0.5)))


def test_contrast_on_neither_side():
    with pytest.raises(ValueError, match=r"both NaN at row 1"):
        validate_trials(table(contrastRight=(1, np.nan)))


def test_non_numeric_column():
    with pytest.raises(TypeError, match="'choice' must be numeric"):
        validate_trials(table(choice=(1, "left")))


def test_missing_subject():
    with pytest.raises(ValueError, match="'subject' has a missing value at row 3"):
        validate_trials(table(subject=(3, None)))


def test_duplicate_keys():
    bad = table(trial=(1, 0))
    with pytest.raises(ValueError, match=r"duplicate key .*row 1 .*session='s1', trial=0"):
        validate_trials(bad)


def test_sorting_by_date_and_trial():
    df = table()
    df["date"] = ["2020-01-02", "2020-01-02", "2020-01-01", "2020-01-01"]
    shuffled = df.iloc[[1, 3, 0, 2]]
    out = validate_trials(shuffled)
    assert out["session"].tolist() == ["s2", "s2", "s1", "s1"]
    assert out["trial"].tolist() == [0, 1, 0, 1]
    # without dates, sessions keep their order of first appearance
    out = validate_trials(shuffled.drop(columns="date"))
    assert out["session"].tolist() == ["s1", "s1", "s2", "s2"]


def test_unreadable_date():
    df = table()
    df["date"] = ["2020-01-02", "not a date", "2020-01-01", "2020-01-01"]
    with pytest.raises(ValueError, match="'date' has an unreadable date 'not a date' at row 1"):
        validate_trials(df)


def test_signed_stimulus_convention():
    s = signed_stimulus(np.array([1.0, np.nan, 0.0, np.nan]), np.array([np.nan, 1.0, np.nan, 0.0]))
    np.testing.assert_allclose(s, [-1.0, 1.0, 0.0, 0.0])
    half = signed_stimulus(np.array([np.nan]), np.array([0.5]))
    np.testing.assert_allclose(half, np.tanh(2.5) / np.tanh(5))


def test_featurize_unequal_animals_shapes_and_masks():
    a = table()
    b = table()
    b["subject"] = "m2"
    b = b.iloc[:3]
    arrays = featurize(pd.concat([a, b]), covariates=("stimulus", "bias", "prev_choice"),
                       warn_nogo=False)
    assert arrays.subjects == ("m1", "m2")
    assert arrays.x.shape == (2, 4, 3)
    np.testing.assert_array_equal(arrays.observed, [[1, 1, 1, 1], [1, 1, 1, 0]])
    # the no-go trial of m1 is observed but not valid
    np.testing.assert_array_equal(arrays.valid, [[1, 1, 1, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(arrays.lengths, [4, 3])
    # ALF choice -1 (right) -> y = 1
    np.testing.assert_array_equal(arrays.y[0], [0, 1, 1, 0])
    np.testing.assert_array_equal(arrays.reward[0], [1, 1, 0, 0])
    np.testing.assert_array_equal(arrays.correct_side[0], [0, 1, 0, 1])
    np.testing.assert_array_equal(arrays.new_session[0], [1, 0, 1, 0])
    # previous choice resets at each session start: +1 = right
    np.testing.assert_array_equal(arrays.x[0, :, 2], [0, -1, 0, 1])
    np.testing.assert_array_equal(arrays.x[1, 3], 0.0)  # padding
    np.testing.assert_array_equal(arrays.row_position[1], [4, 5, 6, -1])
    sub = arrays.take([1])
    assert sub.x.shape == (1, 3, 3) and sub.subjects == ("m2",)


def test_reward_side_trace_is_a_leaky_average_of_earlier_sides_per_session():
    from ibl_learnrules.trials import SIDE_TRACE_RATE

    trials = pd.DataFrame({
        "subject": "m1", "session": ["s1"] * 4 + ["s2"] * 2, "trial": [0, 1, 2, 3, 0, 1],
        "contrastLeft": [np.nan, 1.0, 0.0, np.nan, np.nan, np.nan],
        "contrastRight": [0.5, np.nan, np.nan, 0.25, 1.0, 1.0],
        "choice": -1, "feedbackType": 1, "probabilityLeft": 0.5})
    x = featurize(trials, ("stimulus", "prev_reward_side", "reward_side_trace")).x[0]
    r = SIDE_TRACE_RATE
    # sides R, L, L (zero contrast on the left), R | R, R; each session starts at 0
    expected = [0.0, r, (1 - r) * r - r, (1 - r) * ((1 - r) * r - r) - r, 0.0, r]
    np.testing.assert_allclose(x[:, 2], expected)
    np.testing.assert_array_equal(x[:, 1], [0, 1, -1, -1, 0, 1])  # the trace at rate 1


def test_featurize_warns_with_nogo_count():
    with pytest.warns(UserWarning, match="1 no-go trial"):
        featurize(table())


def test_covariate_matrix_left_right_and_errors():
    x = covariate_matrix(("contrast_left", "contrast_right"), np.array([1.0]), np.array([np.nan]))
    np.testing.assert_allclose(x, [[1.0, 0.0]])
    with pytest.raises(ValueError, match="unknown covariate"):
        covariate_matrix(("stim",), np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="needs the trial history"):
        covariate_matrix(("prev_choice",), np.zeros(1), np.zeros(1))
    with pytest.raises(TypeError, match="sequence of names"):
        covariate_matrix("stimulus", np.zeros(1), np.zeros(1))
