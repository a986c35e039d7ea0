"""Held-out evaluation of learning rules: animals the rule never saw, or a mouse's future.

Split by animal, never by shuffled trials: an animal's trials are one sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats
from sklearn.base import clone
from sklearn.model_selection import GroupKFold

from .estimator import LearningRuleGLM
from .trials import session_index, validate_trials

__all__ = ["per_animal_scores", "compare_rules", "paired_test", "held_out_future", "summarize",
           "comparison_report"]

_LN2 = math.log(2.0)


def per_animal_scores(estimator: LearningRuleGLM, trials: pd.DataFrame,
                      score_mask: np.ndarray | None = None) -> pd.DataFrame:
    """Per-animal log-likelihood and accuracy of a fitted estimator on ``trials``.

    Parameters
    ----------
    estimator : LearningRuleGLM
        A fitted estimator.
    trials : pandas.DataFrame
        Trials table; each animal is rolled forward from its starting weights.
    score_mask : ndarray of bool, optional
        Rows of ``trials`` (in its order) to score; the others are still rolled through.

    Returns
    -------
    pandas.DataFrame
        One row per animal: ``subject``, ``n_trials`` (scored trials with a choice),
        ``loglik`` (mean nats per trial, from :meth:`LearningRuleGLM.score_samples`), ``bits``
        (information gain over a fair coin in bits per trial, ``(loglik + ln 2) / ln 2``) and
        ``accuracy`` (share of trials whose observed choice the model gave more than even
        odds; a tie counts half).
    """
    loglik = estimator.score_samples(trials)  # NaN on no-go trials
    keep = ~np.isnan(loglik)
    if score_mask is not None:
        keep &= np.asarray(score_mask, dtype=bool)
    # the prediction is right when the observed choice got more than even odds (a tie: half)
    p_observed = np.exp(loglik)
    tie = np.isclose(p_observed, 0.5, rtol=0.0, atol=1e-6)
    hit = np.where(tie, 0.5, p_observed > 0.5)
    frame = pd.DataFrame({"subject": trials["subject"].astype(str).to_numpy(), "ll": loglik,
                          "hit": hit})[keep]
    out = frame.groupby("subject", sort=False).agg(n_trials=("ll", "size"), loglik=("ll", "mean"),
                                                   accuracy=("hit", "mean")).reset_index()
    out["bits"] = (out["loglik"] + _LN2) / _LN2
    return out[["subject", "n_trials", "loglik", "bits", "accuracy"]]


def _as_estimators(rules, params: Mapping | None) -> dict[str, LearningRuleGLM]:
    if isinstance(rules, Mapping):
        return {str(name): est for name, est in rules.items()}
    if isinstance(rules, str):
        rules = [rules]
    return {name: LearningRuleGLM(rule=name, **(params or {})) for name in rules}


def compare_rules(
    trials: pd.DataFrame,
    rules: Sequence[str] | Mapping[str, LearningRuleGLM],
    cv=None,
    seeds: Iterable[int] = (0,),
    *,
    estimator_params: Mapping | None = None,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Cross-validate learning rules on held-out animals.

    Every (seed, rule, fold) fit is independent; with ``n_jobs`` they run through joblib,
    so any joblib backend applies, e.g. a Dask cluster::

        from dask.distributed import Client
        from joblib import parallel_config
        client = Client(cluster)            # LocalCluster, or dask_jobqueue.SLURMCluster(...)
        with parallel_config(backend="dask"):
            table = compare_rules(trials, rules, n_jobs=-1)

    Results are identical to the serial run: each fit is seeded by its ``seed``.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table of several animals.
    rules : sequence of str or dict
        Rule names (each becomes ``LearningRuleGLM(rule=name, **estimator_params)``) or a
        mapping of label -> estimator.
    cv : splitter, optional
        A scikit-learn splitter used with ``groups=trials.subject``; default
        ``GroupKFold(min(5, n_animals))``.
    seeds : iterable of int
        ``random_state`` of each repeat of the whole comparison.
    estimator_params : dict, optional
        Keyword arguments shared by the estimators built from rule names.
    n_jobs : int, optional
        Number of fits run at once through joblib (``None``: one at a time).

    Returns
    -------
    pandas.DataFrame
        Tidy table, one row per (rule, seed, held-out subject): ``rule``, ``seed``, ``fold``,
        ``subject``, ``n_trials``, ``loglik`` (nats/trial), ``bits`` (bits/trial over a fair
        coin), ``accuracy`` and ``correction_prior`` (the prior the fold's fit used: the
        chosen one where the estimator has candidates; NaN for an estimator without one,
        such as a seed ensemble).

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> trials = simulate_cohort(4, n_trials=300, random_state=0)
    >>> table = compare_rules(trials, ["none", "reinforce"], cv=GroupKFold(2),
    ...                       estimator_params={"max_epochs": 1})
    >>> sorted(table["rule"].unique()), len(table)
    (['none', 'reinforce'], 8)
    """
    table = validate_trials(trials).reset_index(drop=True)
    groups = table["subject"].to_numpy()
    n_animals = len(np.unique(groups))
    if n_animals < 2:
        raise ValueError("compare_rules needs at least 2 animals to hold some out; for one "
                         "animal use held_out_future")
    cv = GroupKFold(n_splits=min(5, n_animals)) if cv is None else cv
    estimators = _as_estimators(rules, estimator_params)
    splits = list(cv.split(table, groups=groups))
    jobs = [(seed, name, template, fold, train, test)
            for seed in seeds for name, template in estimators.items()
            for fold, (train, test) in enumerate(splits)]
    rows = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score)(table, template, seed, train, test, name=name, fold=fold)
        for seed, name, template, fold, train, test in jobs)
    return pd.concat(rows, ignore_index=True)


def _fit_and_score(table, template, seed, train, test, **labels) -> pd.DataFrame:
    est = clone(template).set_params(random_state=seed).fit(table.iloc[train])
    scores = _with_prior(per_animal_scores(est, table.iloc[test]), est)
    scores.insert(0, "fold", labels["fold"])
    scores.insert(0, "seed", seed)
    scores.insert(0, "rule", labels["name"])
    return scores


def _with_prior(scores: pd.DataFrame, est) -> pd.DataFrame:
    """``scores`` with the correction prior the fit used (it may have chosen among several)."""
    return scores.assign(correction_prior=float(getattr(est, "correction_prior_", np.nan)))


def paired_test(results: pd.DataFrame, rule_a: str, rule_b: str,
                metric: str = "loglik") -> pd.Series:
    """One-sided paired test across animals that ``rule_a`` scores higher than ``rule_b``.

    Scores are averaged over seeds per animal, then compared with a Wilcoxon signed-rank
    test (alternative: a > b) and a paired t-test.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`compare_rules`.
    rule_a, rule_b : str
        Rules to compare.
    metric : str
        Column to compare (``"loglik"``, ``"bits"`` or ``"accuracy"``).

    Returns
    -------
    pandas.Series
        ``n_animals``, ``mean_a``, ``mean_b``, ``mean_diff``, ``n_a_better``,
        ``wilcoxon_p``, ``ttest_p``.

    Examples
    --------
    >>> results = pd.DataFrame({"rule": ["a"] * 3 + ["b"] * 3, "subject": list("xyz") * 2,
    ...                         "loglik": [-0.5, -0.4, -0.45, -0.6, -0.5, -0.52]})
    >>> int(paired_test(results, "a", "b")["n_a_better"])
    3
    """
    for rule in (rule_a, rule_b):
        if rule not in set(results["rule"]):
            raise ValueError(f"rule {rule!r} is not in the results: {sorted(set(results['rule']))}")
    per_animal = results.groupby(["rule", "subject"])[metric].mean().unstack("rule")
    pair = per_animal[[rule_a, rule_b]].dropna()
    diff = pair[rule_a] - pair[rule_b]
    wilcoxon_p = (stats.wilcoxon(diff, alternative="greater").pvalue
                  if len(diff) > 0 and np.any(diff != 0) else np.nan)
    ttest_p = stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue \
        if len(diff) > 1 else np.nan
    return pd.Series({
        "n_animals": len(diff),
        "mean_a": pair[rule_a].mean(),
        "mean_b": pair[rule_b].mean(),
        "mean_diff": diff.mean(),
        "n_a_better": int((diff > 0).sum()),
        "wilcoxon_p": wilcoxon_p,
        "ttest_p": ttest_p,
    }, name=f"{rule_a} > {rule_b} ({metric})")


def held_out_future(
    trials: pd.DataFrame,
    rules: Sequence[str] | Mapping[str, LearningRuleGLM],
    n_train_sessions: int,
    *,
    estimator_params: Mapping | None = None,
    seeds: Iterable[int] = (0,),
) -> pd.DataFrame:
    """Fit on each animal's first sessions, score its later ones (e.g. a single mouse).

    The fitted rule is rolled forward through all sessions with teacher forcing, so the
    weights entering the held-out sessions are those the rule built from the animal's own
    earlier trials; only later sessions are scored.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table.
    rules : sequence of str or dict
        As in :func:`compare_rules`.
    n_train_sessions : int
        Number of first sessions (per animal) to fit on.
    estimator_params : dict, optional
        Shared keyword arguments of estimators built from rule names.
    seeds : iterable of int
        ``random_state`` of each repeat.

    Returns
    -------
    pandas.DataFrame
        One row per (rule, seed, subject) with :func:`compare_rules`'s columns but ``fold``.
    """
    table = validate_trials(trials).reset_index(drop=True)
    session_rank = session_index(table)
    n_sessions = table.groupby("subject")["session"].nunique().min()
    if not 0 < n_train_sessions < n_sessions:
        raise ValueError(f"n_train_sessions must lie between 1 and {n_sessions - 1} (the "
                         f"fewest sessions of an animal minus one), got {n_train_sessions}")
    train = (session_rank < n_train_sessions).to_numpy()
    rows = []
    for seed in seeds:
        for name, template in _as_estimators(rules, estimator_params).items():
            est = clone(template).set_params(random_state=seed).fit(table[train])
            scores = _with_prior(per_animal_scores(est, table, score_mask=~train), est)
            scores.insert(0, "seed", seed)
            scores.insert(0, "rule", name)
            rows.append(scores)
    return pd.concat(rows, ignore_index=True)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ``loglik``, ``bits`` and ``accuracy`` per rule, best log-likelihood first."""
    means = results.groupby("rule")[["loglik", "bits", "accuracy"]].mean()
    return means.sort_values("loglik", ascending=False)


def comparison_report(results: pd.DataFrame) -> str:
    """Text report: :func:`summarize`, then the best rule paired-tested against each other one.

    Examples
    --------
    >>> results = pd.DataFrame({"rule": ["a"] * 3 + ["b"] * 3, "subject": list("xyz") * 2,
    ...                         "loglik": [-0.5, -0.4, -0.45, -0.6, -0.5, -0.52],
    ...                         "bits": 0.0, "accuracy": 0.8})
    >>> print(comparison_report(results).splitlines()[-1])
    a > b: +0.0900 nats/trial, 3/3 animals, Wilcoxon p = 0.125
    """
    summary = summarize(results)
    lines = [summary.round(4).to_string()]
    best = summary.index[0]
    for other in summary.index[1:]:
        test = paired_test(results, best, other)
        lines.append(f"{best} > {other}: {test['mean_diff']:+.4f} nats/trial, "
                     f"{int(test['n_a_better'])}/{int(test['n_animals'])} animals, "
                     f"Wilcoxon p = {test['wilcoxon_p']:.3g}")
    return "\n".join(lines)
