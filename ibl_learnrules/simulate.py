"""The IBL training protocol, run free by the engine: simulated mice and a rule's twins.

A simulated mouse follows the GLM policy ``p(right) = sigmoid(w . x)`` and changes ``w``
after every trial with a learning rule: any :class:`~ibl_learnrules.rules.LearningRule`,
with known parameters (a ground truth, e.g. ``Reinforce(2, alpha=0.01)``) or fitted. The
trials come from :class:`Protocol`, an environment of :func:`ibl_learnrules.engine.rollout`
vectorised over animals, which decides each animal's next stimulus from its own choices.
It reproduces the parts of IBL's training that shape the data a learning rule is inferred
from:

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

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state

from .engine import Replay, Stimulus, TensorBatch, rollout
from .rules import RULES, LearningRule, available_rules, make_rule
from .trials import SIDE_TRACE_RATE, check_covariates, covariate_matrix

__all__ = [
    "GROUND_TRUTH_DEFAULTS",
    "CONTRAST_STAGES",
    "Protocol",
    "ground_truth_rule",
    "replay",
    "run_protocol",
    "simulate_cohort",
    "twins",
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

#: Parameters of the ground-truth rules when a simulation names a rule without giving them:
#: slow enough that a simulated mouse takes most of its 15 sessions to learn, as mice do.
GROUND_TRUTH_DEFAULTS: dict[str, dict] = {
    "reinforce": {"alpha": 0.003},
    "reinforce_baseline": {"alpha": 0.003, "beta": 0.5},
    "reward_history": {"alpha": 0.002, "beta": 0.5, "gamma": 0.5},
}


def ground_truth_rule(rule: str | LearningRule, n_weights: int,
                      rule_params: Mapping | None = None) -> LearningRule:
    """Build a learning rule with known parameters for simulation: float64, on the CPU.

    Parameters
    ----------
    rule : str or LearningRule
        A registered rule name (its parameters from ``rule_params``, else
        :data:`GROUND_TRUTH_DEFAULTS`, else the class defaults), or a rule instance (copied).
    n_weights : int
        Number of GLM weights.
    rule_params : dict, optional
        Keyword arguments of the rule's class, e.g. ``{"alpha": 0.01}``.

    Examples
    --------
    >>> rule = ground_truth_rule("reinforce", 2)
    >>> rule.alpha.dtype, rule.alpha.round(decimals=12).tolist()
    (torch.float64, [0.003, 0.003])
    """
    if isinstance(rule, LearningRule):
        if rule_params:
            raise ValueError("rule parameters are given twice: in the rule and as keywords")
        if rule.n_weights != n_weights:
            raise ValueError(f"the rule has {rule.n_weights} weights for {n_weights} covariates")
        instance = copy.deepcopy(rule)
    else:
        if rule not in RULES:
            raise ValueError(f"unknown simulated rule {rule!r}; choose from {available_rules()} "
                             "or pass a LearningRule")
        params = dict(rule_params) if rule_params else dict(GROUND_TRUTH_DEFAULTS.get(rule, {}))
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # known parameters stay exact (0.003, not ~)
        try:
            instance = make_rule(rule, n_weights, **params)
        finally:
            torch.set_default_dtype(default)
    return instance.to(device="cpu", dtype=torch.float64).eval().requires_grad_(False)


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


class Protocol:
    """The IBL training protocol as an environment of :func:`~ibl_learnrules.engine.rollout`.

    Session lengths are drawn up front; stimuli are drawn trial by trial from each animal's
    stage, repeats and blocks, all of which follow its own sampled choices. Vectorised over
    animals; each animal draws from its own generator, so an animal's data do not depend on
    the size of its cohort.

    Parameters
    ----------
    rngs : sequence of numpy.random.Generator
        One generator per animal.
    n_trials, n_sessions : int, optional
        Limits per animal (see :func:`simulate_cohort`).
    protocol : {"training", "biased"}
        ``"biased"`` adds biased blocks once an animal is trained.
    covariates : sequence of str
        GLM covariates.
    dtype, device
        Of the tensors handed to the rollout (those of the rule); the protocol's own
        bookkeeping stays in numpy.
    """

    _RECORDED = ("contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft")

    def __init__(self, rngs: Sequence[np.random.Generator], *, n_trials: int | None = None,
                 n_sessions: int | None = None, protocol: str = "training",
                 covariates: Sequence[str] = ("stimulus", "bias"),
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        if n_trials is None and n_sessions is None:
            n_sessions = DEFAULT_N_SESSIONS
        self.rngs, self.covariates = list(rngs), tuple(covariates)
        self.dtype, self.device = dtype, torch.device(device)
        self.biased_protocol = protocol == "biased"
        self.n_animals = len(self.rngs)
        lengths = [self._session_lengths(rng, n_trials, n_sessions) for rng in self.rngs]
        totals = np.array([sum(ls) for ls in lengths])
        self.n_trials = int(totals.max())
        shape = (self.n_animals, self.n_trials)
        self.valid = np.arange(self.n_trials) < totals[:, None]
        self.session_idx = np.full(shape, -1)
        self.trial_idx = np.full(shape, -1)
        for a, ls in enumerate(lengths):
            self.session_idx[a, :totals[a]] = np.repeat(np.arange(len(ls)), ls)
            self.trial_idx[a, :totals[a]] = np.concatenate([np.arange(n) for n in ls])
        self.new_session = self.trial_idx == 0
        last = np.zeros(shape, dtype=bool)
        last[:, :-1] = self.new_session[:, 1:]
        last[np.arange(self.n_animals), totals - 1] = True
        self.session_end = last & self.valid
        # uniforms for side, contrast and choice, in each animal's own stream
        self.uniforms = np.zeros((3,) + shape)
        for a, rng in enumerate(self.rngs):
            self.uniforms[:, a, :totals[a]] = rng.random((3, totals[a]))
        self.p_left = np.full(shape, 0.5)
        self.record = {name: np.full(shape, np.nan) for name in self._RECORDED}
        zeros = np.zeros(self.n_animals)
        self.stage = zeros.astype(int)
        self.trained = zeros.astype(bool)
        self.biased = zeros.astype(bool)  # the current session has blocks
        self.repeat = zeros.astype(bool)
        self.contrast, self.right = zeros.copy(), zeros.astype(bool)
        self.prev_choice, self.prev_side = zeros.copy(), zeros.copy()
        self.side_trace = zeros.copy()
        self.n_easy, self.n_easy_correct = zeros.copy(), zeros.copy()

    @staticmethod
    def _session_lengths(rng, n_trials, n_sessions) -> list[int]:
        total = np.inf if n_trials is None else n_trials
        max_sessions = np.inf if n_sessions is None else n_sessions
        lengths: list[int] = []
        while sum(lengths) < total and len(lengths) < max_sessions:
            drawn = rng.integers(SESSION_LENGTH_RANGE[0], SESSION_LENGTH_RANGE[1] + 1)
            lengths.append(int(min(drawn, total - sum(lengths))))
        return lengths

    def _tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=float), dtype=self.dtype,
                               device=self.device)

    def trial(self, t: int) -> Stimulus:
        """Draw trial ``t`` of every animal from its stage, repeat state and block."""
        new = self.new_session[:, t]
        if new.any():
            self._start_sessions(np.flatnonzero(new), t)
        u_side, u_contrast = self.uniforms[0, :, t], self.uniforms[1, :, t]
        contrast = np.empty(self.n_animals)
        for stage in np.unique(self.stage):
            animals = self.stage == stage
            contrast[animals] = _contrast_draw(stage, u_contrast[animals])
        p_left = self.p_left[:, t]
        fresh = ~self.repeat
        self.contrast = np.where(fresh, contrast, self.contrast)
        self.right = np.where(fresh, u_side >= p_left, self.right)
        self.record["probabilityLeft"][:, t] = np.where(fresh, p_left,
                                                        np.where(self.right, 0.0, 1.0))
        c_left = np.where(self.right, np.nan, self.contrast)
        c_right = np.where(self.right, self.contrast, np.nan)
        self.record["contrastLeft"][:, t], self.record["contrastRight"][:, t] = c_left, c_right
        x = covariate_matrix(self.covariates, c_left, c_right, self.prev_choice, self.prev_side,
                             self.side_trace)
        return Stimulus(self._tensor(x), self._tensor(self.right), self._tensor(new),
                        self._tensor(self.valid[:, t]))

    def respond(self, t: int, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the choices from ``p``, reward them, and move each animal's protocol on."""
        y = self.uniforms[2, :, t] < p.detach().cpu().numpy()
        reward = y == self.right
        self.record["choice"][:, t] = np.where(y, -1, 1)
        self.record["feedbackType"][:, t] = np.where(reward, 1, -1)
        easy = self.contrast >= EASY_CONTRAST
        counted = ~self.repeat & easy
        self.n_easy += counted
        self.n_easy_correct += counted & reward
        self.repeat = ~self.biased & ~reward & easy
        self.prev_choice = np.where(y, 1.0, -1.0)
        self.prev_side = np.where(self.right, 1.0, -1.0)
        self.side_trace += SIDE_TRACE_RATE * (self.prev_side - self.side_trace)
        ended = self.session_end[:, t]
        if ended.any():
            self._end_sessions(ended)
        return self._tensor(y), self._tensor(reward)

    def _start_sessions(self, animals: np.ndarray, t: int) -> None:
        self.repeat[animals] = False
        self.prev_choice[animals] = self.prev_side[animals] = self.side_trace[animals] = 0.0
        self.n_easy[animals] = self.n_easy_correct[animals] = 0.0
        self.biased[animals] = self.biased_protocol & self.trained[animals]
        for a in animals[self.biased[animals]]:
            n = int(np.argmax(self.session_end[a, t:])) + 1
            self.p_left[a, t:t + n] = _block_probabilities(n, self.rngs[a])

    def _end_sessions(self, ended: np.ndarray) -> None:
        easy_perf = self.n_easy_correct / np.maximum(self.n_easy, 1)
        final = self.stage == len(CONTRAST_STAGES) - 1
        self.trained |= ended & final & (easy_perf >= TRAINED_CRITERION)
        up = ended & (easy_perf >= STAGE_CRITERION)
        self.stage = np.where(up, np.minimum(self.stage + 1, len(CONTRAST_STAGES) - 1),
                              self.stage)

    def table(self, subjects: Sequence[str], weights: np.ndarray) -> pd.DataFrame:
        """Return the simulated trials as a trials table, with the policy weights before each.

        Parameters
        ----------
        subjects : sequence of str
            Name of each animal.
        weights : ndarray (B, T, K)
            Policy weights before each trial, from the rollout.
        """
        a, t = np.nonzero(self.valid)
        subject = np.asarray(subjects, dtype=object)[a]
        session_idx = self.session_idx[a, t]
        table = pd.DataFrame({
            "subject": subject,
            "session": [f"{s}-s{i:02d}" for s, i in zip(subject, session_idx, strict=True)],
            "date": pd.Timestamp("2026-01-05 10:00") + pd.to_timedelta(session_idx, unit="D"),
            "session_idx": session_idx,
            "trial": self.trial_idx[a, t],
        })
        for name in self._RECORDED:
            table[name] = self.record[name][a, t]
        for name in ("choice", "feedbackType"):
            table[name] = table[name].astype(int)
        for k, name in enumerate(self.covariates):
            table[f"true_w_{name}"] = weights[a, t, k]
        return table


def run_protocol(
    rule: LearningRule,
    w0: np.ndarray,
    rngs: Sequence[np.random.Generator],
    subjects: Sequence[str],
    *,
    n_trials: int | None = None,
    n_sessions: int | None = None,
    protocol: str = "training",
    covariates: Sequence[str] = ("stimulus", "bias"),
) -> pd.DataFrame:
    """Run animals through the protocol with ``rule`` choosing and learning: one rollout.

    ``w0`` (B, K) are the rule's starting weights (the policy adds the rule's offset); the
    rule runs on its own device and dtype. Returns the trials table of :meth:`Protocol.table`
    (``true_w_<covariate>``: the policy weights before each trial).
    """
    param = next(rule.parameters(), None)
    dtype = param.dtype if param is not None else torch.float64
    device = param.device if param is not None else torch.device("cpu")
    env = Protocol(rngs, n_trials=n_trials, n_sessions=n_sessions, protocol=protocol,
                   covariates=covariates, dtype=dtype, device=device)
    w = torch.as_tensor(np.asarray(w0, dtype=float), dtype=dtype, device=device)
    with torch.no_grad():
        result = rollout(rule, env, w, record=True)
    return env.table(subjects, result.weights.cpu().double().numpy())


def twins(rule: LearningRule, covariates: Sequence[str], random_state=None,
          **protocol) -> pd.DataFrame:
    """Free-running twins of a rule: animals that start at zero weights.

    The rule (a copy, on its own device) chooses and learns under the protocol. ``protocol``
    holds ``n_subjects`` (default 1), ``n_trials``, ``n_sessions`` and ``protocol``, as in
    :func:`simulate_cohort`. Returns the trials table of :func:`run_protocol`.
    """
    unknown = set(protocol) - {"n_subjects", "n_trials", "n_sessions", "protocol"}
    if unknown:
        raise ValueError(f"unknown protocol argument(s) {sorted(unknown)}; use n_subjects, "
                         "n_trials, n_sessions, protocol")
    n_subjects = protocol.pop("n_subjects", 1)
    rng = np.random.default_rng(random_state)
    rngs = [np.random.default_rng(rng.integers(2**63)) for _ in range(n_subjects)]
    return run_protocol(copy.deepcopy(rule), np.zeros((n_subjects, len(covariates))), rngs,
                        [f"sim{i:03d}" for i in range(n_subjects)], covariates=covariates,
                        **protocol)


def replay(rule: LearningRule, table: pd.DataFrame, arrays, w0: torch.Tensor,
           random_state=None) -> pd.DataFrame:
    """Free running on recorded stimuli: the animals' sessions, the rule's own choices.

    Parameters
    ----------
    rule : LearningRule
        The rule; it runs on the device of ``w0``.
    table : ValidTrials
        The animals' validated trials table; ``arrays`` its :func:`~ibl_learnrules.featurize`.
    w0 : Tensor (B, K)
        Starting rule weights.
    random_state : int, optional
        Seed of the sampled choices.

    Returns
    -------
    pandas.DataFrame
        ``table`` (no-go trials kept as no-go) with the rule's choices and rewards, and
        ``true_w_<covariate>``: the policy weights before each trial.
    """
    batch = TensorBatch.from_arrays(arrays, w0.device, dtype=w0.dtype)
    generator = torch.Generator(device=w0.device)
    generator.manual_seed(int(check_random_state(random_state).randint(2**31 - 1)))
    with torch.no_grad():
        column = (arrays.covariates.index("prev_choice") if "prev_choice" in arrays.covariates
                  else None)
        res = rollout(rule.eval(), Replay(batch, generator, prev_choice_column=column), w0,
                      record=True)
    observed = arrays.observed
    y = res.y.cpu().numpy()[observed]
    out = table.iloc[arrays.row_position[observed]].copy()
    go = out["choice"].to_numpy() != 0
    out["choice"] = np.where(go, np.where(y == 1, -1, 1), 0)
    right = out["contrastRight"].notna().to_numpy()
    out["feedbackType"] = np.where(go & ((y == 1) == right), 1, -1)
    w = res.weights.cpu().numpy()[observed]
    for k, name in enumerate(arrays.covariates):
        out[f"true_w_{name}"] = w[:, k]
    return out


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
    weight_noise=None,
    noise_reversion: float | None = None,
    **rule_params,
) -> pd.DataFrame:
    """Simulate a cohort of mice learning the IBL task with a known rule.

    Parameters
    ----------
    n_subjects : int
        Number of simulated mice.
    rule : str or LearningRule
        A registered rule (``"reinforce"``, ``"reinforce_baseline"``, ``"reward_history"``,
        ...; parameters from ``rule_params`` or :data:`GROUND_TRUTH_DEFAULTS`) or a rule
        instance with its parameters set, e.g. ``Reinforce(2, alpha=[0.01, 0.003])``.
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
    weight_noise : float or sequence of float, optional
        Standard deviation of Gaussian noise added to each weight after every trial, on top
        of the rule's update (a noisy learner, :class:`~ibl_learnrules.filtering.NoisyRule`;
        with ``rule="none"`` a random walk). The noise of a cohort comes from one stream, so
        unlike the rest of an animal's data it depends on the cohort's size.
    noise_reversion : float, optional
        With ``weight_noise``: the noise is a fluctuation about the learned weights that
        falls back by this share every trial (in [0, 1); see
        :mod:`ibl_learnrules.filtering`), not a random walk.
    **rule_params
        Parameters of the named rule, e.g. ``alpha=0.01``, ``beta=0.5`` (per-weight sequences
        allowed).

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
    learner = ground_truth_rule(rule, len(covariates), rule_params)
    if w0 is not None and len(w0) != len(covariates):
        raise ValueError(f"w0 has {len(w0)} values for {len(covariates)} covariates")
    rng = np.random.default_rng(random_state)
    rngs = [np.random.default_rng(rng.integers(2**63)) for _ in range(n_subjects)]
    if noise_reversion is not None and weight_noise is None:
        raise ValueError("noise_reversion needs weight_noise: a fluctuation to revert")
    if weight_noise is not None:
        from .filtering import NoisyRule, WeightNoise

        noise = WeightNoise(len(covariates), sd=weight_noise, init_sd=0.0,
                            reversion=noise_reversion)
        learner = NoisyRule(learner, noise.to(torch.float64).requires_grad_(False))
        learner = learner.sampling(int(rng.integers(2**62))).eval()
    if w0 is None:
        scale = np.where(np.asarray(covariates) == "stimulus", 0.2, 0.7)
        w_init = np.stack([r.normal(0.0, scale) for r in rngs])
    else:
        w_init = np.tile(np.asarray(w0, dtype=float), (n_subjects, 1))
    return run_protocol(learner, w_init, rngs, [f"sim{i:03d}" for i in range(n_subjects)],
                        n_trials=n_trials, n_sessions=n_sessions, protocol=protocol,
                        covariates=covariates)
