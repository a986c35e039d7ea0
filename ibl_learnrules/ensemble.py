"""One estimator fitted with several seeds, its predictions averaged: a seed ensemble.

A network rule's fit depends on its seed (the initial parameters): on held-out mice two
seeds of ``dnn`` differ by about as much as ``dnn`` differs from REINFORCE with baseline.
Averaging the members' predicted probabilities removes that variance: the ensemble's
per-trial likelihood is ``mean_i p_i(choice)``, never below the members' average
log-likelihood (Jensen), and it is a proper predictive model (a mixture of the members).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from .estimator import LearningRuleGLM, mean_loglik

__all__ = ["SeedEnsemble"]


class SeedEnsemble(BaseEstimator):
    """``n_members`` copies of ``estimator``, seeded ``random_state + i``; probabilities averaged.

    Parameters
    ----------
    estimator : LearningRuleGLM, optional
        The estimator to fit several times (default ``LearningRuleGLM()``); its own
        ``random_state`` is replaced by each member's.
    n_members : int
        Number of fits.
    random_state : int, optional
        Seed of the first member; member ``i`` gets ``random_state + i`` (``None``: unseeded).

    Attributes
    ----------
    estimators_ : list of LearningRuleGLM
        The fitted members.

    Notes
    -----
    :func:`~ibl_learnrules.save_model` saves a fitted ensemble whole (template and members)
    and :func:`~ibl_learnrules.load_model` returns it as one.

    Examples
    --------
    >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
    >>> trials = simulate_cohort(2, n_trials=200, random_state=0)
    >>> ens = SeedEnsemble(LearningRuleGLM(rule="dnn", max_epochs=2), n_members=2,
    ...                    random_state=0).fit(trials)
    >>> [m.random_state for m in ens.estimators_], ens.predict_proba(trials).shape
    ([0, 1], (400, 2))
    """

    def __init__(self, estimator: LearningRuleGLM | None = None, n_members: int = 3,
                 random_state: int | None = None):
        self.estimator = estimator
        self.n_members = n_members
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y=None) -> SeedEnsemble:
        """Fit every member on ``X``; return self."""
        if not isinstance(self.n_members, (int, np.integer)) or self.n_members < 1:
            raise ValueError(f"n_members must be a positive integer, got {self.n_members!r}")
        template = LearningRuleGLM() if self.estimator is None else self.estimator
        if not isinstance(template, LearningRuleGLM):
            raise TypeError(f"estimator must be a LearningRuleGLM, got "
                            f"{type(template).__name__}")
        seeds = [None if self.random_state is None else int(self.random_state) + i
                 for i in range(self.n_members)]
        self.estimators_ = [clone(template).set_params(random_state=seed).fit(X, y)
                            for seed in seeds]
        return self

    def _members(self) -> list[LearningRuleGLM]:
        if not hasattr(self, "estimators_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call "
                                 "fit(trials) before using it")
        return self.estimators_

    def score_samples(self, X: pd.DataFrame, y=None) -> np.ndarray:
        """Log of the members' mean probability of each trial's choice (NaN on no-go trials)."""
        logliks = np.stack([m.score_samples(X, y) for m in self._members()])
        # log-mean-exp, stable: the members' log-likelihoods are <= 0 and may be very small
        top = np.max(logliks, axis=0)
        return top + np.log(np.mean(np.exp(logliks - top), axis=0))

    def score(self, X: pd.DataFrame, y=None) -> float:
        """Mean per-trial log-likelihood (nats) of the ensemble; no-go trials left out."""
        return mean_loglik(self.score_samples(X, y))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Members' mean p(left), p(right) of every trial, in the row order of ``X``."""
        return np.mean([m.predict_proba(X) for m in self._members()], axis=0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Most likely choice of every trial (1 = right, 0 = left)."""
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)

    @staticmethod
    def _replay(X: pd.DataFrame, members, rng: np.random.Generator) -> pd.DataFrame:
        """Each animal of ``X`` replayed by one member, drawn with ``rng``."""
        if not isinstance(X, pd.DataFrame):
            return members[0].simulate(X)  # the estimator's own error for a bad argument
        subjects = X["subject"].unique()
        drawn = rng.integers(len(members), size=len(subjects))
        runs = []
        for m, member in enumerate(members):
            seed = int(rng.integers(2**31 - 1))
            mine = subjects[drawn == m]
            if mine.size:
                runs.append(member.simulate(X[X["subject"].isin(mine)], random_state=seed))
        # back to the contract order a single estimator returns (subject first)
        return pd.concat(runs).sort_values("subject", kind="stable")

    def simulate(self, X_or_protocol, random_state=None) -> pd.DataFrame:
        """Free-running choices drawn from the mixture: each twin is one member's.

        As :meth:`LearningRuleGLM.simulate <ibl_learnrules.LearningRuleGLM.simulate>`. Under
        the protocol (a dict) the ``n_subjects`` twins are shared out among the members in
        turn (twin ``i`` is member ``i % n_members``'s), and keep the single estimator's
        names ``sim000``, ``sim001``, ...; replaying a trials table, each animal is replayed
        by one member, drawn with ``random_state``. So
        :func:`~ibl_learnrules.twins.check_twins` takes an ensemble as it takes one
        estimator (its replay twins are copies of the animals, replayed in one call).

        Examples
        --------
        >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
        >>> trials = simulate_cohort(1, n_trials=200, random_state=0)
        >>> ens = SeedEnsemble(LearningRuleGLM(rule="reinforce_baseline", max_epochs=1),
        ...                    n_members=2, random_state=0).fit(trials)
        >>> sorted(ens.simulate({"n_subjects": 3, "n_sessions": 1}, 0)["subject"].unique())
        ['sim000', 'sim001', 'sim002']
        """
        members = self._members()
        rng = np.random.default_rng(random_state)
        if not isinstance(X_or_protocol, Mapping):
            return self._replay(X_or_protocol, members, rng)
        n_subjects = int(X_or_protocol.get("n_subjects", 1))
        runs = []
        for m, member in enumerate(members):
            mine = np.arange(m, n_subjects, len(members))  # this member's twins
            seed = int(rng.integers(2**31 - 1))
            if mine.size == 0:
                continue
            run = member.simulate({**X_or_protocol, "n_subjects": int(mine.size)}, seed)
            names = {f"sim{k:03d}": f"sim{i:03d}" for k, i in enumerate(mine)}
            runs.append(run.assign(subject=run["subject"].map(names)))
        table = pd.concat(runs, ignore_index=True)
        order = table["subject"].str[3:].astype(int)
        return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)
