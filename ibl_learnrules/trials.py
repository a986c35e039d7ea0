"""The trials-table contract: validation, ordering and featurisation.

Every data source (ONE, NWB, CSV, the simulator) produces a *trials table*: a long
:class:`pandas.DataFrame` with one row per trial and the ALF columns below. Every model
consumes it. Conventions follow IBL's ALF ``trials`` object:

==================  ============================================================
column              meaning
==================  ============================================================
``subject``         animal identifier
``session``         session identifier (eid or any stable id)
``trial``           trial index within the session (integer, sorts the trials)
``contrastLeft``    contrast in [0, 1] on the left, NaN when the stimulus is right
``contrastRight``   contrast in [0, 1] on the right, NaN when the stimulus is left
``choice``          **-1 = rightward (CCW), +1 = leftward (CW), 0 = no-go**
``feedbackType``    +1 rewarded, -1 error
``probabilityLeft`` prior probability of a left stimulus (0.5 when unbiased)
==================  ============================================================

Optional columns are kept as they are. A ``date`` column (or ``session_start_time``)
orders the sessions of an animal; without one, sessions keep their order of first
appearance in the table.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "REQUIRED_COLUMNS",
    "COVARIATES",
    "TrialArrays",
    "ValidTrials",
    "validate_trials",
    "check_choices",
    "signed_stimulus",
    "covariate_matrix",
    "featurize",
    "session_index",
]

REQUIRED_COLUMNS = (
    "subject",
    "session",
    "trial",
    "contrastLeft",
    "contrastRight",
    "choice",
    "feedbackType",
    "probabilityLeft",
)
_NUMERIC_COLUMNS = ("trial", "contrastLeft", "contrastRight", "choice", "feedbackType",
                    "probabilityLeft")
_SESSION_ORDER_COLUMNS = ("date", "session_start_time")

#: Covariates the GLM policy can use, with what each one means.
COVARIATES = {
    "stimulus": "signed stimulus tanh(5 cR)/tanh(5) - tanh(5 cL)/tanh(5); positive = right",
    "bias": "constant 1 (choice bias towards the right when its weight is positive)",
    "contrast_left": "tanh(5 cL)/tanh(5) (0 when the stimulus is on the right)",
    "contrast_right": "tanh(5 cR)/tanh(5) (0 when the stimulus is on the left)",
    "prev_choice": "previous choice in the session: +1 right, -1 left, 0 none or no-go",
    "prev_reward_side": "side rewarded on the previous trial: +1 right, -1 left, 0 none",
    "reward_side_trace": "leaky average of the sides rewarded on the session's earlier "
                         "trials (+1 right, -1 left): the previous trial weighs "
                         "SIDE_TRACE_RATE, each one before it (1 - SIDE_TRACE_RATE) times "
                         "less; 0 on a session's first trial",
}

#: Weight of the previous trial's side in ``reward_side_trace`` (a time constant of about
#: three trials), chosen on validation mice (``docs/findings.md``, "A trace of the rewarded
#: sides").
SIDE_TRACE_RATE = 0.3

_TANH5 = np.tanh(5.0)


def _show(value) -> str:
    """Repr of a cell, without numpy's type wrapper (2.0, not np.float64(2.0))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row_label(df: pd.DataFrame, position: int) -> str:
    row = df.iloc[position]
    return (f"row {_show(df.index[position])} (subject={_show(row['subject'])}, "
            f"session={_show(row['session'])}, trial={_show(row['trial'])})")


def _first_bad(df: pd.DataFrame, bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


class ValidTrials(pd.DataFrame):
    """A trials table that :func:`validate_trials` checked, sorted and typed.

    Functions that take a trials table skip validation when given one. Anything derived from
    it (a slice, a copy, a new column) is a plain DataFrame again and is validated anew,
    except ``reset_index(drop=True)``, which changes nothing that was checked. Do not modify
    one in place.
    """

    @property
    def _constructor(self):
        return pd.DataFrame

    def reset_index(self, *args, **kwargs):  # noqa: D102
        out = super().reset_index(*args, **kwargs)
        if kwargs.get("drop") and not args and out is not None:
            return ValidTrials(out)
        return out


def validate_trials(trials: pd.DataFrame) -> ValidTrials:
    """Check a trials table against the contract and return it sorted and typed.

    Parameters
    ----------
    trials : pandas.DataFrame
        One row per trial with the columns in :data:`REQUIRED_COLUMNS` (extra columns are kept).

    Returns
    -------
    ValidTrials
        A copy (a DataFrame) sorted by subject (by name), session (by ``date`` or
        ``session_start_time`` when present, else order of first appearance) and ``trial``.
        ``subject`` and ``session`` are strings, ``trial``, ``choice`` and ``feedbackType`` are
        int64, contrasts and ``probabilityLeft`` float64. The original index is kept. A
        table that is already a :class:`ValidTrials` is returned as it is.

    Raises
    ------
    TypeError
        If ``trials`` is not a DataFrame or a numeric column holds non-numbers.
    ValueError
        If the table is empty, a column is missing, a value breaks the contract (the message
        names the column, the value and the row) or (subject, session, trial) repeats.

    Examples
    --------
    >>> from ibl_learnrules import load_ks014, validate_trials
    >>> trials = validate_trials(load_ks014())
    >>> bool(trials["choice"].isin([-1, 1]).all())
    True
    """
    if isinstance(trials, ValidTrials):  # checked already; it is not modified in place
        return trials
    if not isinstance(trials, pd.DataFrame):
        raise TypeError(
            f"trials must be a pandas DataFrame with columns {list(REQUIRED_COLUMNS)}, "
            f"got {type(trials).__name__}"
        )
    if len(trials) == 0:
        raise ValueError("trials table is empty: it needs at least one trial")
    missing = [c for c in REQUIRED_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(
            f"trials table is missing required column(s) {missing}; "
            f"found columns {list(trials.columns)}"
        )
    df = trials.copy()

    for col in ("subject", "session"):
        bad = df[col].isna().to_numpy()
        if bad.any():
            where = _row_label(df, _first_bad(df, bad))
            raise ValueError(f"column {col!r} has a missing value at {where}")
        df[col] = df[col].astype(str)

    for col in _NUMERIC_COLUMNS:
        try:
            values = pd.to_numeric(df[col], errors="raise").astype("float64")
        except (TypeError, ValueError) as err:
            raise TypeError(f"column {col!r} must be numeric: {err}") from None
        finite = np.isfinite(values.to_numpy())
        allowed_nan = col in ("contrastLeft", "contrastRight")
        bad = ~finite & ~(allowed_nan & values.isna().to_numpy())
        if bad.any():
            i = _first_bad(df, bad)
            raise ValueError(f"column {col!r} has non-finite value {_show(values.iloc[i])} "
                             f"at {_row_label(df, i)}")
        df[col] = values

    def _check(col: str, bad: np.ndarray, rule: str) -> None:
        if bad.any():
            i = _first_bad(df, bad)
            raise ValueError(
                f"column {col!r} has value {_show(df[col].iloc[i])} at {_row_label(df, i)}: {rule}"
            )

    _check("trial", (df["trial"] % 1 != 0).to_numpy(), "trial indices must be integers")
    _check("choice", ~df["choice"].isin([-1.0, 0.0, 1.0]).to_numpy(),
           "choice must be -1 (right), +1 (left) or 0 (no-go) (ALF convention)")
    _check("feedbackType", ~df["feedbackType"].isin([-1.0, 1.0]).to_numpy(),
           "feedbackType must be +1 (reward) or -1 (error)")
    for col in ("contrastLeft", "contrastRight"):
        c = df[col].to_numpy()
        _check(col, ~np.isnan(c) & ((c < 0) | (c > 1)), "contrasts must lie in [0, 1]")
    _check("probabilityLeft",
           ((df["probabilityLeft"] < 0) | (df["probabilityLeft"] > 1)).to_numpy(),
           "probabilityLeft must lie in [0, 1]")
    both = df["contrastLeft"].notna().to_numpy() & df["contrastRight"].notna().to_numpy()
    if both.any():
        i = _first_bad(df, both)
        raise ValueError(
            f"contrastLeft and contrastRight are both set ({_show(df['contrastLeft'].iloc[i])}, "
            f"{_show(df['contrastRight'].iloc[i])}) at {_row_label(df, i)}: the side without a "
            "stimulus must be NaN"
        )
    neither = df["contrastLeft"].isna().to_numpy() & df["contrastRight"].isna().to_numpy()
    if neither.any():
        where = _row_label(df, _first_bad(df, neither))
        raise ValueError(f"contrastLeft and contrastRight are both NaN at {where}: one side "
                         "must carry the contrast (0 for a zero-contrast trial)")

    for col in ("trial", "choice", "feedbackType"):
        df[col] = df[col].astype("int64")

    dup = df.duplicated(["subject", "session", "trial"], keep="first").to_numpy()
    if dup.any():
        i = _first_bad(df, dup)
        raise ValueError(
            f"duplicate key (subject, session, trial) at {_row_label(df, i)}: each trial "
            "must appear once"
        )
    return ValidTrials(_sort_trials(df))


def check_choices(table: ValidTrials, y) -> None:
    """Check that ``y`` (1 = right, in the row order of the table's source) matches ``choice``.

    ``table`` came from ``validate_trials(X.reset_index(drop=True))``, so its index holds
    positions in ``X``. No-go trials are not compared. ValueError on disagreement.
    """
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != len(table):
        raise ValueError(f"y has {len(y)} values for {len(table)} trials")
    choice = table["choice"].to_numpy()
    go = choice != 0
    if not np.array_equal(y[table.index.to_numpy()][go], (choice == -1)[go].astype(float)):
        raise ValueError("y disagrees with the choices in X (y = 1 means right, i.e. ALF "
                         "choice -1); leave y out to derive it from X")


def _sort_trials(df: pd.DataFrame) -> pd.DataFrame:
    subject_rank = pd.factorize(df["subject"], sort=True)[0]
    order_col = next((c for c in _SESSION_ORDER_COLUMNS if c in df.columns), None)
    if order_col is not None:
        start = pd.to_datetime(df[order_col], errors="coerce", utc=True)
        if start.isna().any():
            i = _first_bad(df, start.isna().to_numpy())
            raise ValueError(f"column {order_col!r} has an unreadable date "
                             f"{_show(df[order_col].iloc[i])} at {_row_label(df, i)}")
        # a session's start is the earliest time given for any of its rows
        session_start = start.groupby([df["subject"], df["session"]]).transform("min")
        session_rank = session_start.rank(method="dense").to_numpy()
        # ties (two sessions at one time) fall back to order of appearance
        tie_break = pd.factorize(df["subject"] + "\x00" + df["session"])[0]
    else:
        session_rank = pd.factorize(df["subject"] + "\x00" + df["session"])[0]
        tie_break = session_rank
    keys = pd.DataFrame({"s": subject_rank, "r": session_rank, "t": tie_break,
                         "k": df["trial"].to_numpy()}, index=df.index)
    order = np.lexsort((keys["k"].to_numpy(), keys["t"].to_numpy(),
                        keys["r"].to_numpy(), keys["s"].to_numpy()))
    return df.iloc[order]


def _tanh_contrast(c: np.ndarray) -> np.ndarray:
    return np.tanh(5.0 * np.nan_to_num(np.asarray(c, dtype=float), nan=0.0)) / _TANH5


def signed_stimulus(contrast_left: np.ndarray, contrast_right: np.ndarray) -> np.ndarray:
    """Signed, tanh-compressed stimulus strength; positive means a right stimulus.

    ``s = tanh(5 cR)/tanh(5) - tanh(5 cL)/tanh(5)`` with NaN contrasts read as 0.

    Examples
    --------
    >>> import numpy as np
    >>> signed_stimulus(np.array([1.0, np.nan]), np.array([np.nan, 0.25])).round(3)
    array([-1.   ,  0.848])
    """
    return _tanh_contrast(contrast_right) - _tanh_contrast(contrast_left)


def covariate_matrix(
    covariates: Sequence[str],
    contrast_left: np.ndarray,
    contrast_right: np.ndarray,
    prev_choice: np.ndarray | None = None,
    prev_reward_side: np.ndarray | None = None,
    reward_side_trace: np.ndarray | None = None,
) -> np.ndarray:
    """Stack the named covariates of trials into an array of shape ``(..., n_covariates)``.

    Parameters
    ----------
    covariates : sequence of str
        Names from :data:`COVARIATES`.
    contrast_left, contrast_right : ndarray
        ALF contrasts (NaN on the side without a stimulus), any shape.
    prev_choice, prev_reward_side, reward_side_trace : ndarray, optional
        Model-convention history (+1 right, -1 left, 0 none; the trace in between); needed
        only by the history covariates.

    Examples
    --------
    >>> import numpy as np
    >>> covariate_matrix(("stimulus", "bias"), np.array([np.nan]), np.array([1.0]))
    array([[1., 1.]])
    """
    check_covariates(covariates)
    columns = []
    for name in covariates:
        if name == "stimulus":
            columns.append(signed_stimulus(contrast_left, contrast_right))
        elif name == "bias":
            columns.append(np.ones(np.shape(contrast_left)))
        elif name == "contrast_left":
            columns.append(_tanh_contrast(contrast_left))
        elif name == "contrast_right":
            columns.append(_tanh_contrast(contrast_right))
        else:
            history = {"prev_choice": prev_choice, "prev_reward_side": prev_reward_side,
                       "reward_side_trace": reward_side_trace}[name]
            if history is None:
                raise ValueError(f"covariate {name!r} needs the trial history")
            columns.append(np.asarray(history, dtype=float))
    return np.stack(columns, axis=-1)


def check_covariates(covariates: Sequence[str]) -> tuple[str, ...]:
    """Return ``covariates`` as a tuple after checking every name is known.

    Examples
    --------
    >>> check_covariates(["stimulus", "bias"])
    ('stimulus', 'bias')
    """
    if isinstance(covariates, str):
        raise TypeError(f"covariates must be a sequence of names, got the string {covariates!r}")
    covariates = tuple(covariates)
    if not covariates:
        raise ValueError("at least one covariate is needed")
    unknown = [c for c in covariates if c not in COVARIATES]
    if unknown:
        raise ValueError(f"unknown covariate(s) {unknown}; choose from {list(COVARIATES)}")
    if len(set(covariates)) != len(covariates):
        raise ValueError(f"covariates repeat a name: {list(covariates)}")
    return covariates


@dataclass(frozen=True)
class TrialArrays:
    """Per-animal padded arrays of a trials table, shape ``(n_animals, n_trials_max, ...)``.

    Attributes
    ----------
    subjects : tuple of str
        Animal of each row of the arrays.
    covariates : tuple of str
        Names of the last axis of ``x``.
    x : ndarray (A, T, K)
        Covariates of the GLM policy.
    y : ndarray (A, T)
        Choice, 1 = right, 0 = left (0 as well on no-go and padding; see ``valid``).
    reward : ndarray (A, T)
        1 rewarded, 0 not.
    correct_side : ndarray (A, T)
        1 when right was the rewarded side, 0 when left.
    new_session : ndarray (A, T)
        1 on the first trial of each session.
    valid : ndarray of bool (A, T)
        Real trials with a choice: these enter the likelihood and update the weights.
    observed : ndarray of bool (A, T)
        Real trials (no-go included); False on padding.
    row_position : ndarray of int (A, T)
        Position of the trial in the validated (sorted) table, -1 on padding.
    """

    subjects: tuple[str, ...]
    covariates: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    reward: np.ndarray
    correct_side: np.ndarray
    new_session: np.ndarray
    valid: np.ndarray
    observed: np.ndarray
    row_position: np.ndarray

    @property
    def n_animals(self) -> int:
        """Number of animals (rows of the arrays)."""
        return self.x.shape[0]

    @property
    def lengths(self) -> np.ndarray:
        """Number of real trials per animal."""
        return self.observed.sum(axis=1)

    def take(self, animals: Sequence[int]) -> TrialArrays:
        """Return the arrays of a subset of animals, trimmed to their longest length."""
        idx = np.asarray(animals, dtype=int)
        t_max = int(self.lengths[idx].max()) if len(idx) else 0
        arrays = {name: getattr(self, name)[idx, :t_max]
                  for name in ("x", "y", "reward", "correct_side", "new_session", "valid",
                               "observed", "row_position")}
        return TrialArrays(subjects=tuple(self.subjects[i] for i in idx),
                           covariates=self.covariates, **arrays)


def _history(df: pd.DataFrame, covariates: Sequence[str]) -> dict[str, np.ndarray]:
    """Compute the history covariates that ``covariates`` name, within each session.

    Model convention (+1 right); ``df`` is ordered by animal and session. Keyed by covariate
    name, as :func:`covariate_matrix` takes them; the others are not computed (featurize
    runs on every fit and score).
    """
    wanted = {"prev_choice", "prev_reward_side", "reward_side_trace"} & set(covariates)
    if not wanted:
        return {}
    session_key = df["subject"] + "\x00" + df["session"]
    rewarded_side = np.where(df["contrastRight"].notna().to_numpy(), 1.0, -1.0)
    history = {}
    if "prev_choice" in wanted:
        choice_right = -df["choice"].to_numpy(dtype=float)  # ALF -1 = right -> +1
        history["prev_choice"] = (pd.Series(choice_right, index=df.index)
                                  .groupby(session_key).shift(1).fillna(0.0).to_numpy())
    if "prev_reward_side" in wanted:
        history["prev_reward_side"] = (pd.Series(rewarded_side, index=df.index)
                                       .groupby(session_key).shift(1).fillna(0.0).to_numpy())
    if "reward_side_trace" in wanted:
        history["reward_side_trace"] = side_trace(rewarded_side, session_key.to_numpy())
    return history


def side_trace(side: np.ndarray, session_key: np.ndarray,
               rate: float = SIDE_TRACE_RATE) -> np.ndarray:
    """Compute the ``reward_side_trace`` covariate from the rewarded sides.

    ``trace[t] = (1 - rate) trace[t-1] + rate side[t-1]`` within each session, 0 on its
    first trial.

    Parameters
    ----------
    side : ndarray
        Side rewarded on each trial, +1 right, -1 left, in session order.
    session_key : ndarray
        A label per trial, the same along a session (sessions contiguous).
    rate : float
        Weight of the previous trial's side.

    Examples
    --------
    >>> side_trace(np.array([1.0, -1.0, -1.0, 1.0]), np.array(["a", "a", "a", "b"]), 0.5)
    array([ 0.  ,  0.5 , -0.25,  0.  ])
    """
    from scipy.signal import lfilter

    trace = np.zeros(len(side))
    starts = np.flatnonzero(np.r_[True, session_key[1:] != session_key[:-1]])
    for begin, end in zip(starts, np.r_[starts[1:], len(side)], strict=True):
        trace[begin + 1:end] = lfilter([rate], [1.0, rate - 1.0], side[begin:end - 1])
    return trace


def featurize(
    trials: pd.DataFrame,
    covariates: Sequence[str] = ("stimulus", "bias"),
    *,
    warn_nogo: bool = True,
) -> TrialArrays:
    """Turn a trials table into per-animal padded arrays for the models.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table in the contract (validated unless it is a :class:`ValidTrials`).
    covariates : sequence of str
        GLM covariates, names from :data:`COVARIATES`.
    warn_nogo : bool
        Warn with the count of no-go trials, which are excluded from the likelihood.

    Returns
    -------
    TrialArrays

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> arrays = featurize(simulate_cohort(2, n_trials=300, random_state=0))
    >>> arrays.x.shape
    (2, 300, 2)
    """
    covariates = check_covariates(covariates)
    df = trials if isinstance(trials, ValidTrials) else validate_trials(trials)
    x_flat = covariate_matrix(covariates, df["contrastLeft"].to_numpy(),
                              df["contrastRight"].to_numpy(), **_history(df, covariates))
    choice = df["choice"].to_numpy()
    n_nogo = int((choice == 0).sum())
    if n_nogo and warn_nogo:
        warnings.warn(
            f"{n_nogo} no-go trial(s) (choice 0) of {len(df)} carry no choice: they are "
            "excluded from the likelihood and do not update the weights",
            stacklevel=2,
        )
    session_key = (df["subject"] + "\x00" + df["session"]).to_numpy()
    new_session = np.r_[True, session_key[1:] != session_key[:-1]]

    subject_codes, subjects = pd.factorize(df["subject"])  # rows are in subject order
    n_animals = len(subjects)
    counts = np.bincount(subject_codes, minlength=n_animals)
    t_max = int(counts.max())
    # rows are sorted by subject, so a trial's column is its rank inside its subject
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    column = np.arange(len(df)) - starts[subject_codes]

    def pad(values: np.ndarray, fill: float, dtype) -> np.ndarray:
        out = np.full((n_animals, t_max) + values.shape[1:], fill, dtype=dtype)
        out[subject_codes, column] = values
        return out

    return TrialArrays(
        subjects=tuple(subjects),
        covariates=covariates,
        x=pad(x_flat, 0.0, np.float64),
        y=pad((choice == -1).astype(float), 0.0, np.float64),
        reward=pad((df["feedbackType"].to_numpy() == 1).astype(float), 0.0, np.float64),
        correct_side=pad(df["contrastRight"].notna().to_numpy().astype(float), 0.0, np.float64),
        new_session=pad(new_session.astype(float), 0.0, np.float64),
        valid=pad(choice != 0, False, bool),
        observed=pad(np.ones(len(df), dtype=bool), False, bool),
        row_position=pad(np.arange(len(df)), -1, np.int64),
    )


def session_index(table: pd.DataFrame) -> pd.Series:
    """Each row's session number within its animal (0 = its first), in the table's order.

    ``table`` must hold each animal's sessions in order, as :func:`validate_trials` returns
    them.

    Examples
    --------
    >>> table = pd.DataFrame({"subject": ["a", "a", "b", "a"], "session": ["x", "x", "z", "y"]})
    >>> session_index(table).tolist()
    [0, 0, 0, 1]
    """
    return table.groupby("subject", sort=False)["session"].transform(
        lambda s: pd.factorize(s)[0])
