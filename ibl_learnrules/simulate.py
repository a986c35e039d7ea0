"""IBL training protocol simulator and ground-truth learners.

A simulated mouse follows the GLM policy ``p(right) = sigmoid(w . x)`` and changes ``w``
after every trial with a known learning rule. The protocol reproduces the parts of IBL's
training that shape the data a learning rule is inferred from:

* contrasts introduced in stages: {1, 0.5}, then 0.25, 0.125, then 0.0625 and 0, and finally
  0.5 dropped; a mouse moves one stage on after a session with at least
  ``STAGE_CRITERION`` correct on easy (>= 0.5) non-repeat trials;
* zero contrast drawn half as often as each other contrast level;
* debiasing: after an error on an easy contrast the same stimulus is repeated until the
  mouse gets it right (``probabilityLeft`` is then 1 or 0: the side is certain);
* sessions of 300-900 trials, one per day;
* optionally (``protocol="biased"``), once a mouse is trained (final stage and a session at
  ``TRAINED_CRITERION`` on easy trials), biased blocks: 90 unbiased trials, then blocks of
  20-100 trials with p(left) alternating 0.2 / 0.8, and no repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .trials import check_covariates, covariate_matrix

__all__ = [
    "Learner",
    "Reinforce",
    "ReinforceBaseline",
    "RewardHistoryReinforce",
    "LEARNERS",
    "CONTRAST_STAGES",
    "simulate_cohort",
    "run_protocol",
]

CONTRAST_STAGES = (
    (1.0, 0.5),
    (1.0, 0.5, 0.25),
    (1.0, 0.5, 0.25, 0.125),
    (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),
    (1.0, 0.25, 0.125, 0.0625, 0.0),
)
STAGE_CRITERION = 0.7
TRAINED_CRITERION = 0.8
EASY_CONTRAST = 0.5
SESSION_LENGTH_RANGE = (300, 900)
DEFAULT_N_SESSIONS = 15
_PROTOCOLS = ("training", "biased")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class Learner:
    """A ground-truth learning rule: the weight update after one trial.

    Subclasses implement :meth:`delta_w`. All arrays broadcast, so the same method steps one
    simulated mouse and evaluates a whole grid of (weights, stimulus, choice, reward).
    """

    def initial_state(self):
        """State carried between trials (``None`` for Markovian rules)."""
        return None

    def delta_w(self, w, x, y, reward, correct_side=None, new_session=None, state=None):
        """Return ``(dw, new_state)`` for a trial.

        Parameters
        ----------
        w, x : ndarray (..., K)
            Weights before the trial and its covariates.
        y : ndarray (...)
            Choice, 1 = right, 0 = left.
        reward : ndarray (...)
            1 rewarded, 0 not.
        correct_side : ndarray (...), optional
            1 when right was rewarded.
        new_session : ndarray (...), optional
            1 on the first trial of a session.
        state : optional
            The learner's state before the trial.
        """
        raise NotImplementedError


@dataclass
class Reinforce(Learner):
    """REINFORCE: ``dw = alpha * r * (y - p) * x``.

    Examples
    --------
    >>> import numpy as np
    >>> dw, _ = Reinforce(alpha=0.1).delta_w(np.zeros(2), np.ones(2), 1.0, 1.0)
    >>> dw
    array([0.05, 0.05])
    """

    alpha: float | Sequence[float] = 0.003

    def delta_w(self, w, x, y, reward, correct_side=None, new_session=None, state=None):
        """See :meth:`Learner.delta_w`."""
        p = _sigmoid(np.sum(w * x, axis=-1))
        factor = np.asarray(reward) * (np.asarray(y) - p)
        return np.asarray(self.alpha) * factor[..., None] * x, state


@dataclass
class ReinforceBaseline(Learner):
    """REINFORCE with a reward baseline: ``dw = alpha * (r - beta) * (y - p) * x``.

    Examples
    --------
    >>> import numpy as np
    >>> dw, _ = ReinforceBaseline(alpha=0.1, beta=0.5).delta_w(np.zeros(2), np.ones(2), 0.0, 0.0)
    >>> dw
    array([0.025, 0.025])
    """

    alpha: float | Sequence[float] = 0.003
    beta: float | Sequence[float] = 0.5

    def delta_w(self, w, x, y, reward, correct_side=None, new_session=None, state=None):
        """See :meth:`Learner.delta_w`."""
        p = _sigmoid(np.sum(w * x, axis=-1))
        scale = (np.asarray(reward)[..., None] - np.asarray(self.beta))
        return np.asarray(self.alpha) * scale * (np.asarray(y) - p)[..., None] * x, state


@dataclass
class RewardHistoryReinforce(Learner):
    """REINFORCE with baseline whose step grows with the run of rewards before the trial.

    ``dw = alpha * (1 + gamma * min(run, max_run)) * (r - beta) * (y - p) * x``, where ``run``
    counts the consecutive rewarded trials just before this one in the session (the state).
    A Markovian rule cannot see ``run``; a recurrent rule can.

    Examples
    --------
    >>> import numpy as np
    >>> rule = RewardHistoryReinforce(alpha=0.1, beta=0.0, gamma=1.0)
    >>> dw, run = rule.delta_w(np.zeros(1), np.ones(1), 1.0, 1.0, state=3)
    >>> dw, run
    (array([0.2]), 4)
    """

    alpha: float | Sequence[float] = 0.002
    beta: float | Sequence[float] = 0.5
    gamma: float = 0.5
    max_run: int = 10

    def initial_state(self):
        """Run length 0."""
        return 0

    def delta_w(self, w, x, y, reward, correct_side=None, new_session=None, state=None):
        """See :meth:`Learner.delta_w`; ``state`` is the run of rewards before the trial."""
        run = np.asarray(0 if state is None else state)
        if new_session is not None:
            run = np.where(np.asarray(new_session) > 0, 0, run)
        p = _sigmoid(np.sum(w * x, axis=-1))
        gain = 1.0 + self.gamma * np.minimum(run, self.max_run)
        scale = gain[..., None] * (np.asarray(reward)[..., None] - np.asarray(self.beta))
        dw = np.asarray(self.alpha) * scale * (np.asarray(y) - p)[..., None] * x
        new_run = np.where(np.asarray(reward) > 0, run + 1, 0)
        return dw, (new_run.item() if new_run.ndim == 0 else new_run)


LEARNERS = {
    "reinforce": Reinforce,
    "reinforce_baseline": ReinforceBaseline,
    "reward_history": RewardHistoryReinforce,
}


def _make_learner(rule, rule_params) -> Learner:
    if isinstance(rule, Learner) or hasattr(rule, "delta_w"):
        if rule_params:
            raise ValueError("rule parameters are given twice: in the learner and as keywords")
        return rule
    if rule not in LEARNERS:
        raise ValueError(f"unknown simulated rule {rule!r}; choose from {list(LEARNERS)} "
                         "or pass a Learner")
    try:
        return LEARNERS[rule](**rule_params)
    except TypeError as err:
        raise TypeError(f"bad parameters for rule {rule!r}: {err}") from None


def _contrast_draw(stage: int, u: np.ndarray) -> np.ndarray:
    levels = np.asarray(CONTRAST_STAGES[stage])
    weights = np.where(levels == 0.0, 0.5, 1.0)
    cdf = np.cumsum(weights) / weights.sum()
    return levels[np.minimum(np.searchsorted(cdf, u, side="right"), len(levels) - 1)]


def _block_probabilities(n: int, rng: np.random.Generator) -> np.ndarray:
    """p(left) of each trial of a biased session: 90 unbiased trials, then 0.2/0.8 blocks."""
    p_left = np.full(n, 0.5)
    t, current = 90, rng.choice([0.2, 0.8])
    while t < n:
        length = int(min(100, 20 + rng.exponential(60.0)))
        p_left[t:t + length] = current
        t += length
        current = 0.2 if current == 0.8 else 0.8
    return p_left


def run_protocol(
    learner: Learner,
    w0: np.ndarray,
    rng: np.random.Generator,
    *,
    n_trials: int | None = None,
    n_sessions: int | None = None,
    protocol: str = "training",
    covariates: Sequence[str] = ("stimulus", "bias"),
) -> dict[str, np.ndarray]:
    """Run one simulated animal through the training protocol.

    Returns a dict of per-trial arrays (``session_idx``, ``trial``, contrasts, ``choice``,
    ``feedbackType``, ``probabilityLeft``, ``true_w`` of shape (n, K)). See
    :func:`simulate_cohort` for the meaning of the arguments.
    """
    if n_trials is None and n_sessions is None:
        n_sessions = DEFAULT_N_SESSIONS
    total = np.inf if n_trials is None else n_trials
    max_sessions = np.inf if n_sessions is None else n_sessions
    # covariates depend on the trial's stimulus, plus the previous trial for history ones
    stimulus_x: dict = {}
    history = [(k, c) for k, c in enumerate(covariates) if c in ("prev_choice", "prev_reward_side")]
    w = np.array(w0, dtype=float)
    state = learner.initial_state()
    out = {k: [] for k in ("session_idx", "trial", "contrastLeft", "contrastRight", "choice",
                           "feedbackType", "probabilityLeft", "true_w")}
    stage, trained, done, session = 0, False, 0, 0
    while done < total and session < max_sessions:
        length = int(min(rng.integers(SESSION_LENGTH_RANGE[0], SESSION_LENGTH_RANGE[1] + 1),
                         total - done))
        biased = protocol == "biased" and trained
        p_left = _block_probabilities(length, rng) if biased else np.full(length, 0.5)
        u_side, u_contrast, u_choice = rng.random((3, length))
        contrasts = _contrast_draw(stage, u_contrast)
        repeat, last_contrast, last_right = False, None, None
        prev_choice = prev_side = 0.0
        n_easy = n_easy_correct = 0
        for t in range(length):
            if repeat:
                contrast, right = last_contrast, last_right
                p_trial = 0.0 if right else 1.0
            else:
                contrast, right = contrasts[t], u_side[t] >= p_left[t]
                p_trial = p_left[t]
            c_left, c_right = (np.nan, contrast) if right else (contrast, np.nan)
            x = stimulus_x.get((contrast, right))
            if x is None:
                x = stimulus_x[contrast, right] = covariate_matrix(covariates, c_left, c_right,
                                                                   0.0, 0.0)
            if history:
                x = x.copy()
                for k, name in history:
                    x[k] = prev_choice if name == "prev_choice" else prev_side
            p = _sigmoid(float(w @ x))
            y = 1.0 if u_choice[t] < p else 0.0
            reward = 1.0 if (y == 1.0) == right else 0.0
            out["session_idx"].append(session)
            out["trial"].append(t)
            out["contrastLeft"].append(c_left)
            out["contrastRight"].append(c_right)
            out["choice"].append(-1 if y else 1)
            out["feedbackType"].append(1 if reward else -1)
            out["probabilityLeft"].append(p_trial)
            out["true_w"].append(w.copy())
            dw, state = learner.delta_w(w, x, y, reward, correct_side=float(right),
                                        new_session=float(t == 0), state=state)
            w = w + dw
            if not repeat and contrast >= EASY_CONTRAST:
                n_easy += 1
                n_easy_correct += int(reward)
            repeat = (not biased) and reward == 0.0 and contrast >= EASY_CONTRAST
            last_contrast, last_right = contrast, right
            prev_choice, prev_side = 2.0 * y - 1.0, (1.0 if right else -1.0)
        easy_perf = n_easy_correct / max(n_easy, 1)
        if stage == len(CONTRAST_STAGES) - 1 and easy_perf >= TRAINED_CRITERION:
            trained = True
        if easy_perf >= STAGE_CRITERION:
            stage = min(stage + 1, len(CONTRAST_STAGES) - 1)
        done += length
        session += 1
    arrays = {k: np.asarray(v) for k, v in out.items()}
    arrays["true_w"] = arrays["true_w"].reshape(-1, len(w))
    return arrays


def simulate_cohort(
    n_subjects: int,
    rule="reinforce",
    n_trials: int | None = None,
    n_sessions: int | None = None,
    protocol: str = "training",
    random_state: int | np.random.Generator | None = None,
    *,
    covariates: Sequence[str] = ("stimulus", "bias"),
    w0: Sequence[float] | None = None,
    **rule_params,
) -> pd.DataFrame:
    """Simulate a cohort of mice learning the IBL task with a known rule.

    Parameters
    ----------
    n_subjects : int
        Number of simulated mice.
    rule : str or Learner
        ``"reinforce"``, ``"reinforce_baseline"``, ``"reward_history"`` or a :class:`Learner`.
    n_trials : int, optional
        Trials per mouse (the last session is cut short to fit).
    n_sessions : int, optional
        Sessions per mouse. With neither limit, 15 sessions; with both, whichever comes first.
    protocol : {"training", "biased"}
        ``"biased"`` adds biased blocks once a mouse is trained.
    random_state : int or numpy.random.Generator, optional
        Seed; the same seed gives the same cohort.
    covariates : sequence of str
        GLM covariates of the simulated policy.
    w0 : sequence of float, optional
        Initial weights shared by all mice; by default each mouse draws its own, near chance
        (stimulus ~ N(0, 0.2), other weights ~ N(0, 0.7)).
    **rule_params
        Parameters of the rule, e.g. ``alpha=0.01``, ``beta=0.5`` (per-weight sequences allowed).

    Returns
    -------
    pandas.DataFrame
        A trials table in the contract (``subject``, ``session``, ``date``, ``session_idx``,
        ``trial``, contrasts, ``choice``, ``feedbackType``, ``probabilityLeft``) plus
        ``true_w_<covariate>``: the mouse's weights before each trial.

    Examples
    --------
    >>> cohort = simulate_cohort(3, n_trials=500, random_state=1, alpha=0.02)
    >>> cohort.groupby("subject").size().tolist()
    [500, 500, 500]
    >>> [c for c in cohort.columns if c.startswith("true_w_")]
    ['true_w_stimulus', 'true_w_bias']
    """
    if not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
        raise ValueError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    for name, value in (("n_trials", n_trials), ("n_sessions", n_sessions)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if protocol not in _PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(_PROTOCOLS)}")
    covariates = check_covariates(covariates)
    learner = _make_learner(rule, rule_params)
    if w0 is not None and len(w0) != len(covariates):
        raise ValueError(f"w0 has {len(w0)} values for {len(covariates)} covariates")
    rng = np.random.default_rng(random_state)
    tables = []
    for i in range(n_subjects):
        subject_rng = np.random.default_rng(rng.integers(2**63))
        if w0 is None:
            scale = np.where(np.asarray(covariates) == "stimulus", 0.2, 0.7)
            w_init = subject_rng.normal(0.0, scale)
        else:
            w_init = np.asarray(w0, dtype=float)
        arrays = run_protocol(learner, w_init, subject_rng, n_trials=n_trials,
                              n_sessions=n_sessions, protocol=protocol, covariates=covariates)
        subject = f"sim{i:03d}"
        true_w = arrays.pop("true_w")
        table = pd.DataFrame(arrays)
        table.insert(0, "subject", subject)
        table.insert(1, "session", [f"{subject}-s{s:02d}" for s in table["session_idx"]])
        table.insert(2, "date", pd.Timestamp("2026-01-05 10:00")
                     + pd.to_timedelta(table["session_idx"], unit="D"))
        for k, name in enumerate(covariates):
            table[f"true_w_{name}"] = true_w[:, k]
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
