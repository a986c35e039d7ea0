"""Read a learning rule: weight-update grids, reward-history conditioning, psychometrics.

Questions a fitted rule should answer, each with the same code for the inferred rule and for
a ground-truth rule (a :class:`~ibl_learnrules.rules.LearningRule` with known parameters, as
:mod:`ibl_learnrules.simulate` uses): both run the engine's one rollout.

* how one trial moves the weights, as a function of stimulus, choice, reward and the
  current weights (:func:`delta_w_grid`);
* whether updates are larger after runs of rewarded trials, as reported for mice
  (:func:`reward_history_updates`, :func:`summarize_reward_history`);
* whether the model's choices reproduce the animal's psychometric and learning curves
  (:func:`psychometric_curves`, :func:`learning_curve`).

Choices follow the model convention here: ``choice`` 1 = right, 0 = left; ``stimulus`` is the
signed contrast ``contrastRight - contrastLeft`` in [-1, 1] (positive = right).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from .engine import TensorBatch, initial_weights, rollout
from .estimator import LearningRuleGLM
from .rules.base import LearningRule, TrialStep
from .trials import (
    TrialArrays,
    check_covariates,
    covariate_matrix,
    featurize,
    session_index,
    validate_trials,
)

__all__ = [
    "CONTRASTS",
    "CONTEXTS",
    "delta_w_grid",
    "expected_update",
    "reward_history_updates",
    "summarize_reward_history",
    "reward_run_ratios",
    "correction_summary",
    "Psychometric",
    "psychometric_curves",
    "learning_curve",
]

#: Signed contrasts of the IBL task (default stimulus axis of :func:`delta_w_grid`).
CONTRASTS = (-1.0, -0.25, -0.125, -0.0625, 0.0, 0.0625, 0.125, 0.25, 1.0)
#: Reward-history contexts of :func:`reward_history_updates`, in display order.
CONTEXTS = ("unrewarded", "mixed", "rewarded", "start")
_HISTORY = ("prev_choice", "prev_reward_side", "reward_side_trace")
_DEFAULT_COVARIATES = ("stimulus", "bias")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _resolve(model, covariates) -> tuple[object, tuple[str, ...]]:
    """Return ``(rule, covariates)`` of a fitted estimator or a rule."""
    if isinstance(model, LearningRuleGLM):
        model._check_fitted()
        if covariates is not None and check_covariates(covariates) != model.covariates_:
            raise ValueError(f"the estimator was fitted with covariates {list(model.covariates_)}"
                             f", not {list(covariates)}")
        return model.rule_, model.covariates_
    covariates = check_covariates(_DEFAULT_COVARIATES if covariates is None else covariates)
    if isinstance(model, LearningRule):
        if model.n_weights != len(covariates):
            raise ValueError(f"the rule has {model.n_weights} weights but {len(covariates)} "
                             f"covariates were given: {list(covariates)}")
        return model, covariates
    raise TypeError("expected a fitted LearningRuleGLM or a LearningRule, got "
                    f"{type(model).__name__}")


# ----------------------------------------------------------------------------- Δw grid
def _weight_rows(weights, covariates: tuple[str, ...]) -> np.ndarray:
    """Weight vectors (n, K) of the grid from ``None``, a mapping of axes or an array."""
    k = len(covariates)
    if weights is None:
        return np.zeros((1, k))
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(covariates)
        if unknown:
            raise ValueError(f"weights names {sorted(unknown)} are not covariates "
                             f"{list(covariates)}")
        axes = [np.atleast_1d(np.asarray(weights.get(c, 0.0), dtype=float)) for c in covariates]
        return np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, k)
    rows = np.atleast_2d(np.asarray(weights, dtype=float))
    if rows.ndim != 2 or rows.shape[1] != k:
        raise ValueError(f"weights must have {k} values per row (one per covariate "
                         f"{list(covariates)}), got shape {np.shape(weights)}")
    return rows


def _binary_axis(name: str, values) -> np.ndarray:
    values = np.atleast_1d(np.asarray(values, dtype=float))
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{name} values must be 0 or 1, got {values.tolist()}")
    return values


def _exact_copy(rule: LearningRule) -> LearningRule:
    """Copy a rule to float64 on the CPU: results exact to rounding, wherever it was fitted."""
    return copy.deepcopy(rule).to(device="cpu", dtype=torch.float64).eval()


def _offset(rule: LearningRule, n_weights: int) -> np.ndarray:
    offset = rule.policy_offset()
    return np.zeros(n_weights) if offset is None else offset.detach().cpu().double().numpy()


def _evaluate(rule, w, x, y, reward, correct_side, new_session) -> np.ndarray:
    """Update of every row of the grid, from the rule's initial state."""
    rule = _exact_copy(rule)
    p = _sigmoid(np.sum(w * x, axis=-1))

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=float))

    step = TrialStep(t(x), t(y), t(reward), t(correct_side), t(new_session), t(p))
    with torch.no_grad():
        # the rule sees its own weights: the policy's minus its constant offset
        dw, _ = rule(t(w - _offset(rule, w.shape[1])), step, rule.initial_state(len(w)))
    return dw.numpy()


def delta_w_grid(
    rule,
    stimulus: Sequence[float] = CONTRASTS,
    choice: Sequence[int] = (0, 1),
    reward: Sequence[int] = (0, 1),
    weights=None,
    covariates: Sequence[str] | None = None,
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    new_session: bool = False,
    zero_contrast_side: str = "right",
) -> pd.DataFrame:
    """Weight update of one trial on a grid of stimulus, choice, reward and current weights.

    Parameters
    ----------
    rule : LearningRuleGLM or LearningRule
        A fitted estimator (its ``rule_`` and ``covariates_`` are used) or a rule, e.g. a
        ground truth such as ``Reinforce(2, alpha=0.1)``.
    stimulus : sequence of float
        Signed contrasts ``cR - cL`` in [-1, 1]; positive = right. The stimulus, and so the
        correct side, is on the right for positive values and on the left for negative ones;
        **0 is a zero-contrast stimulus on** ``zero_contrast_side`` (right by default).
        Covariates are built from it exactly as :func:`~ibl_learnrules.featurize` builds them.
    choice : sequence of {0, 1}
        Choices, 1 = right.
    reward : sequence of {0, 1}
        Rewards. Every combination is evaluated, also those the task cannot produce (a
        correct choice unrewarded); the ``consistent`` column marks the ones it can.
    weights : None, mapping or array-like, optional
        Current (policy) weights: zero by default; a mapping ``{covariate: values}`` (grid of
        their product, unnamed covariates at 0); or an array of weight vectors ``(n, K)``.
    covariates : sequence of str, optional
        Covariates of a rule (default ``("stimulus", "bias")``); an estimator's own are used
        and may not be changed.
    history : mapping, optional
        Values of the history covariates ``prev_choice`` / ``prev_reward_side`` (+1 right,
        -1 left, 0 none) and ``reward_side_trace`` (between -1 and 1), which the stimulus
        does not determine: each becomes a grid axis.
        Required when the rule uses them.
    new_session : bool
        Evaluate the update of a session's first trial.
    zero_contrast_side : {"right", "left"}
        Side of a zero-contrast stimulus, i.e. the side that is rewarded.

    Returns
    -------
    pandas.DataFrame
        One row per grid point: the axes (``stimulus``, ``choice``, ``reward`` and any history
        covariate), ``correct_side`` (1 = right), ``consistent`` (reward == choice is correct),
        ``x_<covariate>``, ``w_<covariate>`` (policy weights before the trial), ``p_right`` and
        ``dw_<covariate>``.

    Notes
    -----
    A rule with memory (``rnn``, ``q_learning``, ``reward_history``) is evaluated from its
    initial state: the grid shows the update **from a fresh memory**, i.e. at the first trial
    it sees. What the update becomes after a history of trials is the job of
    :func:`reward_history_updates`.

    Examples
    --------
    >>> from ibl_learnrules.rules import Reinforce
    >>> grid = delta_w_grid(Reinforce(2, alpha=0.1), stimulus=[1.0], choice=[1], reward=[1])
    >>> grid[["dw_stimulus", "dw_bias"]].round(3).values.tolist()
    [[0.05, 0.05]]
    """
    model, covariates = _resolve(rule, covariates)
    if zero_contrast_side not in ("right", "left"):
        raise ValueError(f"zero_contrast_side must be 'right' or 'left', got "
                         f"{zero_contrast_side!r}")
    stimulus = np.atleast_1d(np.asarray(stimulus, dtype=float))
    if not (np.abs(stimulus) <= 1).all():
        raise ValueError(f"stimulus values are signed contrasts in [-1, 1], got {stimulus}")
    history = dict(history or {})
    unknown = set(history) - set(_HISTORY)
    if unknown:
        raise ValueError(f"history takes {list(_HISTORY)}, not {sorted(unknown)}")
    for name in covariates:
        if name in _HISTORY and name not in history:
            raise ValueError(f"covariate {name!r} is not determined by the stimulus: give its "
                             f"values, e.g. history={{{name!r}: (-1, 0, 1)}}")
    history = {k: v for k, v in history.items() if k in covariates}
    w_rows = _weight_rows(weights, covariates)
    axes = {"weights": np.arange(len(w_rows)), "stimulus": stimulus,
            "choice": _binary_axis("choice", choice), "reward": _binary_axis("reward", reward),
            **{k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in history.items()}}
    grid = pd.DataFrame(list(itertools.product(*axes.values())), columns=list(axes))
    s = grid["stimulus"].to_numpy()
    right = (s > 0) | ((s == 0) & (zero_contrast_side == "right"))
    c_left = np.where(right, np.nan, -s)
    c_right = np.where(right, s, np.nan)
    x = covariate_matrix(covariates, c_left, c_right, grid.get("prev_choice"),
                         grid.get("prev_reward_side"), grid.get("reward_side_trace"))
    w = w_rows[grid.pop("weights").to_numpy()]
    grid["correct_side"] = right.astype(float)
    grid["consistent"] = grid["reward"] == (grid["choice"] == grid["correct_side"])
    y, r = grid["choice"].to_numpy(), grid["reward"].to_numpy()
    dw = _evaluate(model, w, x, y, r, grid["correct_side"].to_numpy(),
                   np.full(len(grid), float(new_session)))
    for k, name in enumerate(covariates):
        grid[f"x_{name}"] = x[:, k]
    for k, name in enumerate(covariates):
        grid[f"w_{name}"] = w[:, k]
    grid["p_right"] = _sigmoid(np.sum(w * x, axis=-1))
    for k, name in enumerate(covariates):
        grid[f"dw_{name}"] = dw[:, k]
    return grid


def _stimulus_distribution(stimuli) -> pd.Series:
    if isinstance(stimuli, pd.DataFrame):
        table = validate_trials(stimuli)
        signed = table["contrastRight"].fillna(0.0) - table["contrastLeft"].fillna(0.0)
        # a zero contrast is on either side: split it evenly, as the protocol draws it
        return signed.round(6).value_counts(normalize=True).sort_index()
    if stimuli is None:  # the full IBL contrast set, zero half as often as each other level
        stimuli = {c: (0.5 if c == 0 else 1.0) for c in CONTRASTS}
    dist = pd.Series(dict(stimuli), dtype=float)
    if (dist < 0).any() or dist.sum() <= 0 or not (dist.index.to_numpy().__abs__() <= 1).all():
        raise ValueError("stimuli must map signed contrasts in [-1, 1] to non-negative "
                         "probabilities")
    return (dist / dist.sum()).sort_index()


def expected_update(rule, weights=None, stimuli=None,
                    covariates: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean weight update at given weights, over the task's trials and the policy's choices.

    ``E[dw | w] = sum_s P(s) sum_y P(y | w, s) dw(w, s, y, r(s, y))``: the drift that moves
    the weights. Single updates are small and the choices see only their sum over many
    trials, so this expected update, not the update of each (stimulus, choice, reward) cell,
    is what an animal's choices determine; it is the quantity on which a fitted rule can be
    compared with a true one. A zero-contrast stimulus is on either side with equal
    probability.

    Parameters
    ----------
    rule : LearningRuleGLM or LearningRule
        As in :func:`delta_w_grid` (rules with memory are evaluated from a fresh memory).
    weights : None, mapping or array-like
        Current policy weights, as in :func:`delta_w_grid`.
    stimuli : mapping or pandas.DataFrame, optional
        Probability of each signed contrast, or a trials table whose stimuli give it; by
        default the IBL contrast set with zero half as frequent as each other level.
    covariates : sequence of str, optional
        As in :func:`delta_w_grid`.

    Returns
    -------
    pandas.DataFrame
        One row per weight vector: ``w_<covariate>`` and ``dw_<covariate>`` (expected).

    Examples
    --------
    >>> from ibl_learnrules.rules import Reinforce
    >>> field = expected_update(Reinforce(2, alpha=0.1), weights={"stimulus": [0.0, 2.0]},
    ...                         stimuli={-1.0: 0.5, 1.0: 0.5})
    >>> field["dw_stimulus"].round(4).tolist()
    [0.025, 0.0105]
    """
    dist = _stimulus_distribution(stimuli)
    nonzero, zero = dist[dist.index != 0], dist[dist.index == 0]
    # (levels, their probabilities, side of a zero contrast): zero is split between sides
    calls = [(nonzero, "right")] if len(nonzero) else []
    calls += [(zero * 0.5, side) for side in ("right", "left")] if len(zero) else []
    parts = []
    for levels, side in calls:
        grid = delta_w_grid(rule, stimulus=levels.index.to_numpy(), weights=weights,
                            covariates=covariates, zero_contrast_side=side)
        grid = grid[grid["consistent"]]
        p_choice = np.where(grid["choice"] == 1, grid["p_right"], 1 - grid["p_right"])
        parts.append(grid.assign(_weight=grid["stimulus"].map(levels).to_numpy() * p_choice))
    grid = pd.concat(parts, ignore_index=True)
    w_cols = [c for c in grid if c.startswith("w_")]
    dw_cols = [c for c in grid if c.startswith("dw_")]
    weighted = grid[dw_cols].mul(grid["_weight"], axis=0)
    return weighted.groupby([grid[c] for c in w_cols], sort=False).sum().reset_index()


# ----------------------------------------------------------------- reward history
def _teacher_forced(rule: LearningRule, arrays: TrialArrays, w0_policy: np.ndarray):
    """Policy weights before each trial (A, T, K), p(right) and each trial's update.

    The engine's rollout of an exact copy of ``rule`` on the animals' own choices, from
    policy weights ``w0_policy`` (A, K).
    """
    rule = _exact_copy(rule)
    offset = _offset(rule, arrays.x.shape[-1])
    batch = TensorBatch.from_arrays(arrays, torch.device("cpu"), dtype=torch.float64)
    with torch.no_grad():
        res = rollout(rule, batch, torch.as_tensor(w0_policy - offset), record=True)
    weights = res.weights.numpy()
    # dw_t = w_{t+1} - w_t; padding and no-go trials leave the weights unchanged, so the
    # weights after an animal's last trial are its final ones
    after = np.concatenate([weights[:, 1:], (res.w.numpy() + offset)[:, None]], axis=1)
    return weights, res.p_right.numpy(), after - weights


def _contexts(table: pd.DataFrame, k: int) -> np.ndarray:
    """Label each trial by the rewards of the k trials before it in its session."""
    rewarded = (table["feedbackType"].to_numpy() == 1).astype(float)
    csum = np.r_[0.0, np.cumsum(rewarded)]  # csum[i] = rewards of rows before i
    i = np.arange(len(table))
    key = table["subject"] + "\x00" + table["session"]
    position = key.groupby(key, sort=False).cumcount().to_numpy()
    before = csum[i] - csum[np.maximum(i - k, 0)]  # rows are sorted, sessions contiguous
    label = np.where(before == k, "rewarded", np.where(before == 0, "unrewarded", "mixed"))
    return np.where(position >= k, label, "start")


def reward_history_updates(
    model,
    trials: pd.DataFrame,
    k: int = 3,
    covariates: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-trial weight updates along real trials, labelled by the recent reward history.

    The rule is rolled over each animal's trials with its own choices and rewards (teacher
    forcing, as in :meth:`LearningRuleGLM.predict_trajectory`), so a rule with memory sees the
    real history. ``dw`` of a trial is the update it causes: ``w_{t+1} - w_t``. Nothing is
    reset at a session boundary: weights (and a rule's memory) carry over, and the rule is
    told ``new_session`` on each session's first trial; the update of a session's last trial
    is the change of weights before the next session's first.

    Parameters
    ----------
    model : LearningRuleGLM or LearningRule
        A fitted estimator (its animals start as in its ``score``), or a rule, e.g. the
        ground truth of a simulated cohort (it starts from the table's
        ``true_w_<covariate>`` at each animal's first trial when present, else from zero).
    trials : pandas.DataFrame
        Trials table.
    k : int
        Number of previous trials that define the context.
    covariates : sequence of str, optional
        Covariates of a rule (default ``("stimulus", "bias")``).

    Returns
    -------
    pandas.DataFrame
        One row per trial with a choice (no-go trials do not update the weights and are left
        out), in contract order and indexed like ``trials``: ``subject``, ``session``,
        ``trial``, ``context``, ``choice`` (1 = right), ``reward`` (0/1), ``p_right``,
        ``dw_<covariate>`` and ``grad_<covariate>`` = ``(choice - p_right) x``, the gradient of
        the log-probability of the choice made (the learning signal of REINFORCE-type rules).
        ``context`` is ``"rewarded"`` when the k previous trials of the session were all
        rewarded, ``"unrewarded"`` when none was (no-go trials count as unrewarded: no reward
        came), ``"mixed"`` otherwise and ``"start"`` for a session's first k trials.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.rules import ReinforceBaseline
    >>> trials = simulate_cohort(1, "reinforce_baseline", n_trials=300, random_state=0)
    >>> updates = reward_history_updates(ReinforceBaseline(2, alpha=0.003), trials, k=3)
    >>> sorted(updates["context"].unique())
    ['mixed', 'rewarded', 'start', 'unrewarded']
    """
    _check_run_length(k)
    table, out, rows, *_ = _teacher_forced_updates(model, trials, covariates)
    out.insert(3, "context", _contexts(table, k)[rows])
    out.index = trials.index[out.index.to_numpy()]
    return out


def _check_run_length(k) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _teacher_forced_updates(model, trials: pd.DataFrame, covariates):
    """Return the validated table, its updates, their rows, its arrays and the weights.

    The per-trial updates are indexed by the rows of the validated table; the weights are the
    policy weights before each trial, (A, T, K).
    """
    rule, covariates = _resolve(model, covariates)
    table = validate_trials(trials.reset_index(drop=True))
    arrays = featurize(table, covariates, warn_nogo=False)
    true = [f"true_w_{c}" for c in covariates]
    if isinstance(model, LearningRuleGLM):
        w0 = initial_weights(arrays, model.init_weights, model.n_init_trials)
        w0 = w0 + _offset(rule, len(covariates))
    elif all(c in table.columns for c in true):
        w0 = table.groupby("subject", sort=False)[true].first().loc[
            list(arrays.subjects)].to_numpy(dtype=float)
    else:
        w0 = np.zeros((arrays.n_animals, len(covariates)))
    weights, p_right, dw = _teacher_forced(rule, arrays, w0)
    keep = arrays.valid
    rows = arrays.row_position[keep]
    out = table.iloc[rows][["subject", "session", "trial"]].copy()
    out["choice"] = arrays.y[keep]
    out["reward"] = arrays.reward[keep]
    out["p_right"] = p_right[keep]
    grad = (arrays.y - p_right)[..., None] * arrays.x
    for j, name in enumerate(covariates):
        out[f"dw_{name}"] = dw[..., j][keep]
    for j, name in enumerate(covariates):
        out[f"grad_{name}"] = grad[..., j][keep]
    return table, out, rows, arrays, weights


def summarize_reward_history(updates: pd.DataFrame) -> pd.DataFrame:
    """Update size per reward-history context and reward of the trial itself.

    The trial's own reward is kept apart because it sets the sign and size of most rules'
    update, and it is more often rewarded after a rewarded run: pooling would credit
    history with what the current outcome did.

    Parameters
    ----------
    updates : pandas.DataFrame
        Output of :func:`reward_history_updates`.

    Returns
    -------
    pandas.DataFrame
        One row per (``context``, ``reward``, ``covariate``), contexts in the order of
        :data:`CONTEXTS`: ``n_trials`` and ``fraction`` (the distribution of contexts in the
        data), ``mean_abs_dw`` (mean absolute update) and ``rate``, the effective learning
        rate: the least-squares slope of ``dw`` on ``grad`` through the origin,
        ``sum(dw * grad) / sum(grad ** 2)``. For REINFORCE with baseline it is exactly
        ``alpha * (reward - beta)`` in every context; a rule whose step grows after rewarded
        runs shows a larger ``|rate|`` in the ``"rewarded"`` context. Unlike ``mean_abs_dw``,
        it does not shrink merely because the policy is surer (``|choice - p|`` smaller) after
        a run of rewards.

    Examples
    --------
    >>> updates = pd.DataFrame({"context": ["rewarded", "rewarded", "unrewarded"],
    ...                         "reward": [1.0, 1.0, 0.0], "dw_bias": [0.2, -0.1, 0.05],
    ...                         "grad_bias": [0.4, -0.2, -0.5]})
    >>> summarize_reward_history(updates)[["context", "reward", "n_trials", "rate"]]
          context  reward  n_trials  rate
    0  unrewarded     0.0         1  -0.1
    1    rewarded     1.0         2   0.5
    """
    names = [c[3:] for c in updates.columns if c.startswith("dw_")]
    rows = []
    for (context, reward), group in updates.groupby(["context", "reward"], sort=False):
        for name in names:
            dw, grad = group[f"dw_{name}"].to_numpy(), group[f"grad_{name}"].to_numpy()
            norm = np.sum(grad ** 2)
            rows.append({"context": context, "reward": reward, "covariate": name,
                         "n_trials": len(group), "fraction": len(group) / len(updates),
                         "mean_abs_dw": np.abs(dw).mean(),
                         "rate": np.sum(dw * grad) / norm if norm > 0 else np.nan})
    out = pd.DataFrame(rows)
    order = out["context"].map({c: i for i, c in enumerate(CONTEXTS)}).fillna(len(CONTEXTS))
    out = out.assign(_order=order).sort_values(["_order", "reward"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def reward_run_ratios(model, trials: pd.DataFrame, ks: Sequence[int] = (1, 2, 3, 4, 5),
                      covariates: Sequence[str] | None = None) -> pd.DataFrame:
    """Per animal: how much larger a rule's step is after k rewarded than after k unrewarded trials.

    The paper's third claim, measured per animal: the effective learning rate (``rate`` of
    :func:`summarize_reward_history`) on *rewarded* trials whose k previous trials of the
    session were all rewarded, over the same rate on rewarded trials whose k previous trials
    were all unrewarded. Conditioning both on the trial's own reward keeps the outcome of the
    trial itself from posing as an effect of history. A ratio above 1 means larger updates
    after a run of rewards; REINFORCE with baseline gives exactly 1.

    Parameters
    ----------
    model : LearningRuleGLM or LearningRule
        As in :func:`reward_history_updates`.
    trials : pandas.DataFrame
        Trials table.
    ks : sequence of int
        Run lengths.
    covariates : sequence of str, optional
        Covariates of a bare rule, as in :func:`reward_history_updates`.

    Returns
    -------
    pandas.DataFrame
        One row per (``subject``, ``k``, ``covariate``) where both contexts occur, with the
        two rates (``rate_rewarded``, ``rate_unrewarded``), ``n_rewarded`` and
        ``n_unrewarded`` (trials behind each) and ``ratio`` = ``|rate_rewarded| /
        |rate_unrewarded|``.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.rules import ReinforceBaseline
    >>> trials = simulate_cohort(2, "reinforce_baseline", n_trials=600, random_state=0)
    >>> ratios = reward_run_ratios(ReinforceBaseline(2, alpha=0.003), trials, ks=(1, 2))
    >>> bool(np.allclose(ratios["ratio"], 1.0))
    True
    """
    for k in ks:
        _check_run_length(k)
    # one rollout: only the contexts depend on k
    table, updates, positions, *_ = _teacher_forced_updates(model, trials, covariates)
    rows = []
    for k in ks:
        updates["context"] = _contexts(table, k)[positions]
        rewarded = updates[updates["reward"] == 1.0]
        for subject, animal in rewarded.groupby("subject", sort=False):
            summary = summarize_reward_history(animal).set_index(["context", "covariate"])
            for name in [c[3:] for c in updates.columns if c.startswith("dw_")]:
                if ("rewarded", name) not in summary.index or (
                        "unrewarded", name) not in summary.index:
                    continue
                after_rewards = summary.loc[("rewarded", name)]
                after_errors = summary.loc[("unrewarded", name)]
                rows.append({"subject": subject, "k": k, "covariate": name,
                             "rate_rewarded": after_rewards["rate"],
                             "rate_unrewarded": after_errors["rate"],
                             "n_rewarded": int(after_rewards["n_trials"]),
                             "n_unrewarded": int(after_errors["n_trials"]),
                             "ratio": abs(after_rewards["rate"]) / abs(after_errors["rate"])})
    columns = ["subject", "k", "covariate", "rate_rewarded", "rate_unrewarded", "n_rewarded",
               "n_unrewarded", "ratio"]
    return pd.DataFrame(rows, columns=columns)


def correction_summary(model, trials: pd.DataFrame,
                       covariates: Sequence[str] | None = None) -> pd.DataFrame:
    """How much of a network rule's correction depends on the trial, and how much is drift.

    A ``dnn`` or ``rnn`` rule's update is its classic part (``alpha (r - beta) (y - p) x``
    when it nests REINFORCE with baseline, less ``leak (w - rest)`` when that rule leaks, else
    nothing) plus the network's correction. Along
    the animals' own trials (teacher forcing, as :func:`reward_history_updates`) this splits
    each trial's correction into the part common to every trial, its mean (``drift``), and
    what varies from trial to trial with stimulus, choice, reward and history
    (``correction_sd``). A correction that is mostly drift moves the weights by the same step
    whatever happens: under teacher forcing the classic part can balance it, but a
    free-running twin whose choices stop carrying a learning signal keeps drifting.

    Parameters
    ----------
    model : LearningRuleGLM or LearningRule
        A fitted estimator or a network rule (see :func:`reward_history_updates`).
    trials : pandas.DataFrame
        Trials table.
    covariates : sequence of str, optional
        Covariates of a bare rule, as in :func:`reward_history_updates`.

    Returns
    -------
    pandas.DataFrame
        One row per covariate, over the trials with a choice: ``n_trials``, ``drift`` (mean
        correction per trial), ``correction_sd`` and ``classic_sd`` (standard deviations over
        trials of the correction and of the classic part) and ``drift_share``, the fraction
        of the correction's mean square that is its mean: ``drift**2 / mean(correction**2)``
        (1: a constant step; 0: no net drift).

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.rules import DNNRule
    >>> trials = simulate_cohort(1, "reinforce_baseline", n_trials=200, random_state=0)
    >>> summary = correction_summary(DNNRule(2, base="reinforce_baseline"), trials)
    >>> summary[["covariate", "n_trials"]].to_dict("records")
    [{'covariate': 'stimulus', 'n_trials': 200}, {'covariate': 'bias', 'n_trials': 200}]
    """
    rule, covariates = _resolve(model, covariates)
    if not hasattr(rule, "base_update"):
        raise ValueError(f"{type(rule).__name__} has no network correction; "
                         "correction_summary reads dnn and rnn rules")
    _, updates, _, arrays, weights = _teacher_forced_updates(model, trials, covariates)
    keep = arrays.valid
    step = TrialStep(*(torch.as_tensor(a, dtype=torch.float64) for a in (
        arrays.x[keep], arrays.y[keep], arrays.reward[keep], arrays.correct_side[keep],
        arrays.new_session[keep], updates["p_right"].to_numpy())))
    with torch.no_grad():
        classic = torch.as_tensor(_exact_copy(rule).base_update(
            torch.as_tensor(weights[keep]), step)).expand(len(updates), len(covariates)).numpy()
    out = []
    for j, name in enumerate(covariates):
        correction = updates[f"dw_{name}"].to_numpy() - classic[:, j]
        mean_square = np.mean(correction ** 2)
        out.append({"covariate": name, "n_trials": len(correction),
                    "drift": correction.mean(), "correction_sd": correction.std(),
                    "classic_sd": classic[:, j].std(),
                    "drift_share": correction.mean() ** 2 / mean_square if mean_square > 0
                    else np.nan})
    return pd.DataFrame(out)


# --------------------------------------------------------------- choice curves
def _go_table(trials: pd.DataFrame, p_right) -> pd.DataFrame:
    """Return the validated trials with a choice, plus the model's p(right) aligned to them."""
    table = validate_trials(trials.reset_index(drop=True))
    if p_right is not None:
        p_right = np.asarray(p_right, dtype=float).ravel()
        if len(p_right) != len(trials):
            raise ValueError(f"p_right has {len(p_right)} values for {len(trials)} trials")
        table["p_model"] = p_right[table.index.to_numpy()]
    table = table[table["choice"] != 0].copy()
    table["session_idx"] = session_index(table)
    return table


def learning_curve(trials: pd.DataFrame, p_right=None) -> pd.DataFrame:
    """Fraction correct per session, of the animal and (optionally) of the model.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table.
    p_right : array-like, optional
        The model's p(right) of each row of ``trials`` (e.g.
        ``est.predict_proba(trials)[:, 1]``).

    Returns
    -------
    pandas.DataFrame
        One row per session in order: ``subject``, ``session``, ``session_idx`` (rank within
        the animal), ``n_trials`` (trials with a choice; no-go trials are left out),
        ``p_correct`` (rewarded fraction) and, with ``p_right``, ``p_correct_model`` (mean
        probability the model gave to the correct side).

    Examples
    --------
    >>> from ibl_learnrules import load_ks014
    >>> curve = learning_curve(load_ks014())
    >>> len(curve), bool(curve["p_correct"].iloc[-1] > curve["p_correct"].iloc[0])
    (15, True)
    """
    table = _go_table(trials, p_right)
    table["correct"] = (table["feedbackType"] == 1).astype(float)
    agg = {"n_trials": ("correct", "size"), "p_correct": ("correct", "mean")}
    if p_right is not None:
        right = table["contrastRight"].notna()
        table["p_correct_model"] = np.where(right, table["p_model"], 1.0 - table["p_model"])
        agg["p_correct_model"] = ("p_correct_model", "mean")
    keys = ["subject", "session", "session_idx"]
    return table.groupby(keys, sort=False).agg(**agg).reset_index()


class Psychometric(NamedTuple):
    """What :func:`psychometric_curves` returns (two tidy tables)."""

    #: One row per (session, signed contrast): ``n_trials``, ``p_right`` (data) and
    #: ``p_right_model``.
    points: pd.DataFrame
    #: One row per (session, source): erf fit ``bias``, ``threshold`` (in % contrast),
    #: ``lapse_left``, ``lapse_right``.
    fits: pd.DataFrame


def _fit_psychometric(contrast, n, p) -> np.ndarray:
    import psychofit

    # brainbox's plotting settings (bias, threshold in % contrast, two lapses); psychofit
    # draws its restarts from numpy's global generator: seed it, then restore the caller's
    saved = np.random.get_state()  # noqa: NPY002 - psychofit uses the legacy global API
    np.random.seed(0)  # noqa: NPY002
    try:
        pars, _ = psychofit.mle_fit_psycho(
            np.vstack([100.0 * contrast, n, p]), P_model="erf_psycho_2gammas",
            parstart=np.array([0.0, 40.0, 0.1, 0.1]), parmin=np.array([-50.0, 10.0, 0.0, 0.0]),
            parmax=np.array([50.0, 50.0, 0.2, 0.2]), nfits=10)
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    return pars


def psychometric_curves(trials: pd.DataFrame, p_right=None, fit: bool = True) -> Psychometric:
    """Per-session psychometric curves of the animal and the model, with erf fits.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table.
    p_right : array-like, optional
        The model's p(right) of each row of ``trials`` (e.g.
        ``est.predict_proba(trials)[:, 1]``).
    fit : bool
        Fit psychofit's ``erf_psycho_2gammas`` per session (to the data, and to the model's
        mean p(right) with the same trial counts), with the starting values and bounds that
        brainbox uses for plotting.

    Returns
    -------
    Psychometric
        ``points``: ``subject``, ``session``, ``session_idx``, ``contrast`` (signed, right
        positive), ``n_trials``, ``p_right`` and ``p_right_model``; ``fits``: ``subject``,
        ``session``, ``session_idx``, ``source`` (``"data"`` / ``"model"``), ``bias``,
        ``threshold``, ``lapse_left`` (p(right) for strong left stimuli) and ``lapse_right``
        (p(left) for strong right ones). No-go trials are left out.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> trials = simulate_cohort(1, n_sessions=2, random_state=0, alpha=0.05)
    >>> curves = psychometric_curves(trials)
    >>> curves.points.groupby("session_idx")["n_trials"].sum().tolist() == [
    ...     (trials["session_idx"] == s).sum() for s in (0, 1)]
    True
    >>> list(curves.fits.columns)[-4:]
    ['bias', 'threshold', 'lapse_left', 'lapse_right']
    """
    table = _go_table(trials, p_right)
    table["contrast"] = (table["contrastRight"].fillna(0.0) - table["contrastLeft"].fillna(0.0))
    table["right"] = (table["choice"] == -1).astype(float)
    agg = {"n_trials": ("right", "size"), "p_right": ("right", "mean")}
    if p_right is not None:
        agg["p_right_model"] = ("p_model", "mean")
    keys = ["subject", "session", "session_idx"]
    points = (table.groupby(keys + ["contrast"], sort=False).agg(**agg).reset_index()
              .sort_values(["subject", "session_idx", "contrast"], kind="stable")
              .reset_index(drop=True))
    rows = []
    if fit:
        sources = ["p_right"] + (["p_right_model"] if p_right is not None else [])
        for (subject, session, idx), group in points.groupby(keys, sort=False):
            for column in sources:
                pars = _fit_psychometric(group["contrast"].to_numpy(), group["n_trials"].to_numpy(),
                                         group[column].to_numpy())
                rows.append({"subject": subject, "session": session, "session_idx": idx,
                             "source": "data" if column == "p_right" else "model",
                             **dict(zip(("bias", "threshold", "lapse_left", "lapse_right"),
                                        pars, strict=True))})
    fits = pd.DataFrame(rows, columns=keys + ["source", "bias", "threshold", "lapse_left",
                                              "lapse_right"])
    return Psychometric(points, fits)
