"""Choose a network rule's correction prior on held-out data of its own training set.

How hard a network's correction should be held near the classic rule it nests depends on
the data: on validation data, one mouse's early sessions needed a firm prior (without it
the networks overfit them), while five biased sessions of 27 mice were predicted best with
none. :class:`~ibl_learnrules.LearningRuleGLM` takes several candidate precisions
(``correction_prior=(0, 10)``) and lets the training data choose among them: each is fitted
on part of the data and scored on the rest, and the winner is refitted on everything.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .engine import split_animals
from .trials import session_index

__all__ = ["MIN_ANIMALS_TO_HOLD_OUT", "NothingToHoldOut", "validation_split",
           "score_candidates", "as_scores"]

#: With fewer animals than this, the held-out data are each animal's last sessions.
MIN_ANIMALS_TO_HOLD_OUT = 5


class NothingToHoldOut(ValueError):
    """Too few animals, and an animal with a single session: no data to validate on."""


def validation_split(table: pd.DataFrame, fraction: float,
                     rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on and rows to score, as boolean masks over ``table``'s rows.

    With at least :data:`MIN_ANIMALS_TO_HOLD_OUT` animals, ``fraction`` of them (at least
    one) are held out whole, as the package's comparisons hold out animals. With fewer,
    each animal's last ``fraction`` of sessions (at least one) is held out, as
    :func:`~ibl_learnrules.evaluation.held_out_future` does: the fit sees its first
    sessions, the score its later ones.

    Parameters
    ----------
    table : pandas.DataFrame
        Validated trials table, sessions in order within each animal.
    fraction : float
        Share of the animals, or of each animal's sessions, to hold out.
    rng : numpy.random.RandomState
        Draws the held-out animals.

    Returns
    -------
    fit_rows, score_rows : ndarray of bool

    Examples
    --------
    >>> table = pd.DataFrame({"subject": ["a"] * 5, "session": [0, 0, 1, 2, 2]})
    >>> fit, score = validation_split(table, 0.3, np.random.RandomState(0))
    >>> fit.tolist(), score.tolist()
    ([True, True, True, False, False], [False, False, False, True, True])
    """
    subjects = pd.unique(table["subject"])
    if len(subjects) >= MIN_ANIMALS_TO_HOLD_OUT:
        _, held = split_animals(len(subjects), fraction, rng)
        score_rows = table["subject"].isin(subjects[held]).to_numpy()
        return ~score_rows, score_rows
    rank = session_index(table).to_numpy()
    n_sessions = table.groupby("subject", sort=False)["session"].transform("nunique").to_numpy()
    if n_sessions.min() < 2:
        few = table["subject"][n_sessions < 2].iloc[0]
        raise NothingToHoldOut(
            f"choosing correction_prior among several values needs either "
            f"{MIN_ANIMALS_TO_HOLD_OUT} animals or at least 2 sessions of each, to hold some "
            f"out, and animal {few!r} has one session")
    n_held = np.maximum(1, np.round(fraction * n_sessions)).astype(int)
    score_rows = rank >= n_sessions - np.minimum(n_held, n_sessions - 1)
    return ~score_rows, score_rows


def score_candidates(estimator, table: pd.DataFrame, candidates: Sequence[float],
                     rng: np.random.RandomState) -> pd.Series:
    """Held-out log-likelihood of ``estimator`` with each candidate ``correction_prior``.

    Each candidate is fitted on the rows :func:`validation_split` keeps and scored on the
    rows it holds out, teacher forced from each animal's first trial; the score is the mean
    over held-out animals of their mean log-likelihood per trial (nats).

    Returns
    -------
    pandas.Series
        Indexed by the candidate precisions, in the order given.
    """
    from sklearn.base import clone

    from .evaluation import per_animal_scores  # evaluation imports the estimator, which imports us

    fit_rows, score_rows = validation_split(table, estimator.validation_fraction, rng)
    scored = table["subject"].isin(table["subject"][score_rows].unique()).to_numpy()
    scores = {}
    for value in candidates:
        est = clone(estimator).set_params(correction_prior=float(value), verbose=0)
        with warnings.catch_warnings():  # the whole table's fit has said it already
            warnings.filterwarnings("ignore", message=".*no-go trial")
            est.fit(table[fit_rows])
            per_animal = per_animal_scores(est, table[scored], score_mask=score_rows[scored])
        scores[float(value)] = float(per_animal["loglik"].mean())
    return as_scores(scores)


def as_scores(scores) -> pd.Series:
    """Candidates' scores (a mapping or ``(precision, score)`` pairs) as a Series.

    Examples
    --------
    >>> float(as_scores([(0.0, -0.41), (10.0, -0.40)]).idxmax())
    10.0
    """
    return pd.Series(dict(scores), name="validation_loglik",
                     dtype=float).rename_axis("correction_prior")
