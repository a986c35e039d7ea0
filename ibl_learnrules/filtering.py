"""Noisy learners: a learning rule plus Gaussian weight noise, and the filter that scores them.

The model, per animal and valid trial t (no-go trials and padding leave everything as is)::

    p(right_t) = sigmoid(w_t . x_t)
    w_{t+1}    = w_t + dw_rule(w_t, trial_t) + eps_t,    eps_t ~ N(0, diag(sd**2))

``rule="none"`` with noise is the random walk of PsyTrack; ``sd -> 0`` is the deterministic,
teacher-forced model of :func:`ibl_learnrules.engine.rollout`.

The likelihood is computed by an assumed-density filter (:func:`filter_rollout`): a Gaussian
belief N(m, P) over the rule's weights, which on each valid trial

1. predicts the choice with the probit approximation of the logistic-Gaussian integral,
   ``p = sigmoid(a / sqrt(1 + pi/8 s2))``, ``a = (m + offset) . x``, ``s2 = x' P x``; the log
   probability of the observed choice is the trial's log-likelihood (a one-step-ahead
   prediction from earlier trials, like the deterministic model's);
2. updates the belief with the choice by one Newton step of the log posterior from ``m``
   (the Laplace / extended-Kalman update of a logistic observation; rank one)::

       g = y - sigmoid(a),  h = sigmoid(a) (1 - sigmoid(a)),  c = 1 / (1 + h s2)
       m+ = m + c g P x,    P+ = P - c h (P x)(P x)'

3. drifts: ``m <- m+ + dw_rule(m+, trial)`` (the rule sees the posterior mean and its
   p(right), with the observed choice and reward, as under teacher forcing) and
   ``P <- P+ + diag(sd**2)``. The rule's Jacobian is left out of the covariance: classic
   rates are ~1e-3-1e-2, so it changes P by that fraction of itself per trial.

With ``P = 0`` and ``sd = 0`` every step is exactly the deterministic rollout's.

**Fluctuations that revert.** With a ``reversion`` rate ``rho`` the noise does not add up
without bound: the weights are the learned part plus a fluctuation, ``w = u + f``, with::

    u_{t+1} = u_t + dw_rule(w_t, trial_t)
    f_{t+1} = (1 - rho) f_t + eps_t                (an Ornstein-Uhlenbeck process)

so ``f`` wanders about 0 with a stationary sd of ``sd / sqrt(rho (2 - rho))`` and forgets
itself in about ``1 / rho`` trials. ``rho = 0`` is the random walk above (same likelihood).
The filter's belief is then over ``(u, f)`` (2K numbers; the choice sees ``u + f``), and
what it records is the belief over the policy weights ``u + f``. Smoothing and
:func:`rule_share` assume the random walk and refuse a reverting noise.
Training runs :class:`FilterRunner` in :func:`ibl_learnrules.engine.train_rule`, so
truncated back-propagation, Adam and early stopping are unchanged.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .engine import TensorBatch, _detach, _keep_where, _one_cpu_thread
from .rules.base import LearningRule, TrialStep, per_weight

__all__ = ["WeightNoise", "NoisyRule", "FilterResult", "filter_rollout", "FilterRunner",
           "rts_smooth", "rule_share"]

_PROBIT = math.pi / 8.0


def _log_sd(n_weights: int, value, name: str) -> torch.Tensor:
    values = per_weight(n_weights, value, name)
    if not bool((values >= 0).all()) or not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return values.log()  # -inf for an exact 0: allowed when fixed, exp() gives 0 back


class WeightNoise(nn.Module):
    """Per-weight standard deviations: of the trial-to-trial noise and of the starting weights.

    Both are stored as logs (positive, and Adam moves them by ratios).

    Parameters
    ----------
    n_weights : int
        K.
    sd : float or sequence of K floats
        Standard deviation of the weight noise added after every valid trial.
    init_sd : float or sequence of K floats
        Standard deviation of each animal's starting weights around its ``w0``.
    learn_sd, learn_init_sd : bool
        Whether training moves them.
    reversion : float, optional
        Rate per trial (in [0, 1), one for all weights) at which the noise's fluctuation
        falls back to 0 (module docstring); ``None`` (default): a random walk.
    learn_reversion : bool
        Whether training moves it.

    Examples
    --------
    >>> noise = WeightNoise(2, sd=[0.1, 0.05], init_sd=1.0)
    >>> [round(v, 4) for v in noise.var.tolist()]
    [0.01, 0.0025]
    >>> round(float(WeightNoise(2, reversion=0.002).reversion), 6)
    0.002
    """

    def __init__(self, n_weights: int, sd=0.05, init_sd=0.5, learn_sd: bool = True,
                 learn_init_sd: bool = True, reversion: float | None = None,
                 learn_reversion: bool = False):
        super().__init__()
        self.log_sd = nn.Parameter(_log_sd(n_weights, sd, "sd"), requires_grad=learn_sd)
        self.log_init_sd = nn.Parameter(_log_sd(n_weights, init_sd, "init_sd"),
                                        requires_grad=learn_init_sd)
        if reversion is None:
            self.register_parameter("log_reversion", None)
        else:
            rate = per_weight(1, reversion, "reversion")
            if not bool(((rate >= 0) & (rate < 1)).all()):
                raise ValueError(f"reversion must lie in [0, 1), got {reversion!r}")
            self.log_reversion = nn.Parameter(rate.log(), requires_grad=learn_reversion)

    @property
    def reversion(self) -> torch.Tensor | None:
        """Per-trial reversion rate of the fluctuation, shape (1,) (None: a random walk)."""
        return None if self.log_reversion is None else self.log_reversion.exp()

    @property
    def sd(self) -> torch.Tensor:
        """Per-trial noise standard deviation (K,)."""
        return self.log_sd.exp()

    @property
    def var(self) -> torch.Tensor:
        """Per-trial noise variance (K,)."""
        return (2.0 * self.log_sd).exp()

    @property
    def init_var(self) -> torch.Tensor:
        """Variance of the starting weights (K,)."""
        return (2.0 * self.log_init_sd).exp()


class NoisyRule(LearningRule):
    """A learning rule with Gaussian weight noise: ``dw = dw_rule + eps``.

    Fitting and scoring run it through the filter (:func:`filter_rollout`). Through
    :func:`~ibl_learnrules.engine.rollout` its update is the rule's mean drift, unless it was
    given a ``generator``: then it samples the noise (a simulated noisy learner).

    Parameters
    ----------
    base : LearningRule
        The rule (its parameters are this module's ``base.*``).
    noise : WeightNoise
        The noise's standard deviations.
    generator : torch.Generator, optional
        Source of sampled noise; ``None`` (fitting, scoring) gives the mean drift.

    Examples
    --------
    >>> from ibl_learnrules.rules import Reinforce
    >>> rule = NoisyRule(Reinforce(2, alpha=0.1), WeightNoise(2, sd=0.0))
    >>> rule.policy_offset() is None, sorted(rule.state_dict())[:2]
    (True, ['base.log_alpha', 'noise.log_init_sd'])
    """

    formula = "dw = dw_rule + eps, eps ~ N(0, diag(sd**2))"

    def __init__(self, base: LearningRule, noise: WeightNoise,
                 generator: torch.Generator | None = None):
        super().__init__(base.n_weights)
        self.base, self.noise, self.generator = base, noise, generator

    @property
    def reverts(self) -> bool:
        """Whether the noise is a reverting fluctuation rather than a random walk."""
        return self.noise.log_reversion is not None

    def initial_state(self, n_animals, device=None):
        """Return the base rule's state; with a reverting noise, paired with the fluctuation."""
        state = self.base.initial_state(n_animals, device)
        if not self.reverts:
            return state
        f = torch.zeros(n_animals, self.n_weights, dtype=self.noise.log_sd.dtype,
                        device=device)
        return state, f

    def policy_offset(self):  # noqa: D102
        return self.base.policy_offset()

    def correction_parameters(self):  # noqa: D102
        return self.base.correction_parameters()

    def classic_parameters(self):  # noqa: D102
        return self.base.classic_parameters()

    def mean_rule(self) -> LearningRule:
        """Return the base rule: the noise adds nothing to the update on average."""
        return self.base

    def _eps(self, w: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(w.shape, generator=self.generator, dtype=w.dtype,
                          device=self.generator.device)
        return self.noise.sd * eps.to(w.device)

    def forward(self, w, trial: TrialStep, state=None):
        """Return the rule's update, plus sampled noise when the rule has a generator."""
        f = None
        if self.reverts:
            state, f = state
        dw, state = self.base(w, trial, state)
        eps = 0.0 if self.generator is None else self._eps(w)
        if f is None:
            return dw + eps, state
        f_next = (1.0 - self.noise.reversion) * f + eps
        return dw + (f_next - f), (state, f_next)

    def sampling(self, seed: int) -> NoisyRule:
        """Return a copy that samples its noise from a generator seeded with ``seed``."""
        twin = NoisyRule(copy.deepcopy(self.base), copy.deepcopy(self.noise))
        device = next(self.parameters()).device
        twin.generator = torch.Generator(device=device)
        twin.generator.manual_seed(int(seed))
        return twin.to(device)

    def __deepcopy__(self, memo):
        # a torch.Generator cannot be deep-copied; the copy restarts from the same state
        twin = NoisyRule(copy.deepcopy(self.base, memo), copy.deepcopy(self.noise, memo))
        if self.generator is not None:
            twin.generator = torch.Generator(device=self.generator.device)
            twin.generator.set_state(self.generator.get_state())
        return twin.train(self.training)

    def extra_repr(self) -> str:  # noqa: D102
        return f"n_weights={self.n_weights}, sampling={self.generator is not None}"


@dataclass
class FilterResult:
    """What :func:`filter_rollout` returns (per-trial arrays only when recorded)."""

    loglik: torch.Tensor  # (B,) summed over the range's valid trials
    m: torch.Tensor  # (B, K) mean of the rule weights after the range
    P: torch.Tensor  # (B, K, K) their covariance
    state: object  # rule state after the range
    prior_mean: torch.Tensor | None = None  # (B, T, K) policy weights' mean before the trial
    prior_cov: torch.Tensor | None = None  # (B, T, K, K)
    post_mean: torch.Tensor | None = None  # (B, T, K) after seeing the trial's choice
    post_cov: torch.Tensor | None = None  # (B, T, K, K)
    drift: torch.Tensor | None = None  # (B, T, K) the rule's update (0 where not valid)
    p_right: torch.Tensor | None = None  # (B, T) one-step-ahead predictive p(right)
    trial_loglik: torch.Tensor | None = None  # (B, T), 0 where not valid


def filter_rollout(rule: NoisyRule, batch: TensorBatch, m: torch.Tensor,
                   P: torch.Tensor | None = None, state=None, *, start: int = 0,
                   stop: int | None = None, record: bool = False) -> FilterResult:
    """Filter the beliefs over every animal's weights through trials ``start:stop``.

    The noisy counterpart of :func:`~ibl_learnrules.engine.rollout` under teacher forcing
    (equations in the module docstring). Differentiable in the rule's and the noise's
    parameters.

    Parameters
    ----------
    rule : NoisyRule
        Rule and noise.
    batch : TensorBatch
        The animals' trials (teacher forcing).
    m : Tensor (B, K)
        Mean of the rule weights before trial ``start`` (the policy adds the offset). With a
        reverting noise, of ``(u, f)`` (B, 2K); at trial 0 a (B, K) ``m`` is ``u`` (f = 0).
    P : Tensor (B, K, K), optional
        Their covariance; at trial 0 by default ``diag(rule.noise.init_var)`` (and 0 for
        ``f``).
    state : optional
        The base rule's state (``rule.base.initial_state`` at trial 0 by default).
    start, stop : int
        Trial range.
    record : bool
        Keep the per-trial beliefs, drifts, predictions and log-likelihoods.

    Returns
    -------
    FilterResult

    Examples
    --------
    >>> import torch
    >>> from ibl_learnrules import featurize, simulate_cohort
    >>> from ibl_learnrules.rules import make_rule
    >>> batch = TensorBatch.from_arrays(featurize(simulate_cohort(2, n_trials=50,
    ...                                 random_state=0)), torch.device("cpu"))
    >>> rule = NoisyRule(make_rule("reinforce", 2), WeightNoise(2, sd=0.1))
    >>> res = filter_rollout(rule, batch, torch.zeros(2, 2), record=True)
    >>> tuple(res.post_cov.shape), bool((res.post_cov.diagonal(dim1=-2, dim2=-1) > 0).all())
    ((2, 50, 2, 2), True)
    """
    stop = batch.n_trials if stop is None else stop
    reverts = rule.reverts
    if reverts and m.shape[-1] == rule.n_weights:
        if start != 0:
            raise ValueError("with a reverting noise the belief after trial 0 is over (u, f)")
        m = torch.cat([m, torch.zeros_like(m)], -1)
    if P is None:
        if start != 0:
            raise ValueError("P is needed to start the filter after trial 0")
        var = rule.noise.init_var.to(m.dtype)
        if reverts:
            var = torch.cat([var, torch.zeros_like(var)])
        P = torch.diag_embed(var).expand(m.shape[0], -1, -1)
    if state is None and start == 0:
        state = rule.base.initial_state(batch.n_animals, m.device)
    with _one_cpu_thread(m.device):
        return _filter(rule, batch, m, P, state, start, stop, record)


def _policy_cov(P: torch.Tensor, k: int) -> torch.Tensor:
    """Covariance of ``u + f`` from that of ``(u, f)``."""
    return P[..., :k, :k] + P[..., :k, k:] + P[..., k:, :k] + P[..., k:, k:]


def _filter(rule, batch, m, P, state, start, stop, record) -> FilterResult:
    """Run the filter's trial loop (module docstring).

    With a reverting noise the belief is over ``(u, f)``: the choice sees ``u + f`` and
    ``f`` falls back by ``rho``; what is recorded is the belief over ``u + f``.
    """
    k, split = rule.n_weights, rule.reverts
    offset = rule.policy_offset()
    var = rule.noise.var.to(m.dtype)
    if split:
        keep = torch.cat([m.new_ones(k), (1.0 - rule.noise.reversion.to(m.dtype)).expand(k)])
        var = torch.cat([torch.zeros_like(var), var])
    Q = torch.diag_embed(var)
    loglik = m.new_zeros(m.shape[0])
    rec: dict[str, list] = {name: [] for name in ("prior_mean", "prior_cov", "post_mean",
                                                  "post_cov", "drift", "p_right", "trial_loglik")}
    for t in range(start, stop):
        x, y, valid = batch.x[:, t], batch.y[:, t], batch.valid[:, t]
        h = torch.cat([x, x], -1) if split else x  # what the choice sees of the belief
        w = m[:, :k] + m[:, k:] if split else m
        mu = w if offset is None else w + offset
        Ph = (P @ h.unsqueeze(-1)).squeeze(-1)
        s2 = (h * Ph).sum(-1).clamp(min=0.0)
        a = (mu * x).sum(-1)
        logit = a * torch.rsqrt(1.0 + _PROBIT * s2)
        ll = -valid * F.binary_cross_entropy_with_logits(logit, y, reduction="none")
        loglik = loglik + ll
        # one Newton step of the log posterior from m: the Laplace update of a logistic choice
        p0 = torch.sigmoid(a)
        curv = p0 * (1.0 - p0)
        c = valid / (1.0 + curv * s2)
        m_post = m + (c * (y - p0)).unsqueeze(-1) * Ph
        P_post = P - (c * curv)[:, None, None] * (Ph.unsqueeze(-1) * Ph.unsqueeze(-2))
        w_post = m_post[:, :k] + m_post[:, k:] if split else m_post
        mu_post = w_post if offset is None else w_post + offset
        p_rule = torch.sigmoid((mu_post * x).sum(-1))
        dw, new_state = rule.base(w_post, TrialStep(x, y, batch.reward[:, t],
                                                    batch.correct_side[:, t],
                                                    batch.new_session[:, t], p_rule), state)
        dw = valid.unsqueeze(-1) * dw
        if record:
            rec["prior_mean"].append(mu)
            rec["prior_cov"].append(_policy_cov(P, k) if split else P)
            rec["post_mean"].append(mu_post)
            rec["post_cov"].append(_policy_cov(P_post, k) if split else P_post)
            rec["drift"].append(dw)
            rec["p_right"].append(torch.sigmoid(logit))
            rec["trial_loglik"].append(ll)
        if split:  # the rule moves u; f falls back, except on no-go trials and padding
            keep_t = torch.where(valid.unsqueeze(-1) > 0, keep, torch.ones_like(keep))
            m = (m_post + torch.cat([dw, torch.zeros_like(dw)], -1)) * keep_t
            P = keep_t.unsqueeze(-1) * P_post * keep_t.unsqueeze(-2) + valid[:, None, None] * Q
        else:
            m = m_post + dw
            P = P_post + valid[:, None, None] * Q
        state = _keep_where(valid, new_state, state)
    result = FilterResult(loglik=loglik, m=m, P=P, state=state)
    if record:
        for name, values in rec.items():
            setattr(result, name, torch.stack(values, 1) if values else None)
    return result


class FilterRunner:
    """Run a TBPTT chunk of the filter: a drop-in for the engine's ``ChunkRunner``.

    Same call signature as :class:`~ibl_learnrules.engine.ChunkRunner`, so that
    :func:`~ibl_learnrules.engine.train_rule` trains noisy rules unchanged.

    The carried "weights" are the belief ``(mean, P)`` over the *policy* weights (offset
    included), detached between chunks: a rule's constant offset (``rule="none"``) then acts
    as the prior mean of the starting weights only, learned from the first chunk. Carrying
    the rule weights instead would let every chunk push the offset as if the filter could
    not absorb it, and it drifts. The filter is a per-trial torch loop (no compiled kernel),
    on any device; ``engine`` is accepted for the signature and ignored.
    """

    def __init__(self, rule: NoisyRule, batch: TensorBatch, engine: str = "auto"):
        if not isinstance(rule, NoisyRule):
            raise TypeError(f"FilterRunner needs a NoisyRule, got {type(rule).__name__}")
        self.rule, self.batch = rule, batch

    def start(self, w0: torch.Tensor):
        """Belief and rule state before trial 0 (P is made inside the first chunk's graph).

        With a reverting noise the mean is over ``(u, f)``, ``f`` starting at 0.
        """
        m0 = torch.cat([w0, torch.zeros_like(w0)], -1) if self.rule.reverts else w0
        return (m0, None), self.rule.base.initial_state(self.batch.n_animals, w0.device)

    def only(self, animal: int) -> FilterRunner:
        """Return this runner on one animal of its batch (to find who causes numerical trouble)."""
        return FilterRunner(self.rule, self.batch.animal(animal))

    def policy_weights(self, w):
        """Return the GLM's weights of a carried belief ``(mean, P)``: its mean (``u + f``)."""
        k = self.rule.n_weights
        return w[0][:, :k] + w[0][:, k:] if self.rule.reverts else w[0]

    def _shift(self, m: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``m`` with ``offset`` added to its rule weights (``u`` of ``(u, f)``)."""
        if self.rule.reverts:
            offset = torch.cat([offset, torch.zeros_like(offset)])
        return m + offset

    def __call__(self, w, state, start: int, stop: int, need_grad: bool, loss_norm: float = 1.0):
        """Run trials ``start:stop``; return ``(loglik_sum, (m, P), state)``."""
        m, P = w
        with torch.set_grad_enabled(need_grad):
            offset = self.rule.policy_offset()
            if P is not None and offset is not None:
                m = self._shift(m, -offset)  # the carried mean is the policy's; see above
            res = filter_rollout(self.rule, self.batch, m, P, state, start=start, stop=stop)
            if need_grad:
                (-res.loglik.sum() / loss_norm).backward()
            mean = res.m if offset is None else self._shift(res.m, offset)
        return (float(res.loglik.sum().detach()), (mean.detach(), res.P.detach()),
                _detach(res.state))


def rts_smooth(post_mean: np.ndarray, post_cov: np.ndarray, drift: np.ndarray,
               noise_var: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rauch-Tung-Striebel smoothing of one animal's filtered beliefs (numpy).

    Parameters
    ----------
    post_mean, post_cov : ndarray (T, K), (T, K, K)
        Filtered belief over the weights of each trial, given the choices up to it.
    drift : ndarray (T, K)
        The rule's update after each trial (as the filter computed it).
    noise_var : ndarray (K,)
        Per-trial noise variance.
    valid : ndarray (T,) of bool
        Trials that moved the weights; the others leave them as they were.

    Returns
    -------
    mean, cov : ndarray (T, K), (T, K, K)
        Belief over the weights of each trial given all of the animal's choices. As in the
        filter, the rule's Jacobian is left out of the backward gain.

    Examples
    --------
    >>> m = np.zeros((3, 1)); P = np.ones((3, 1, 1)); d = np.zeros((3, 1))
    >>> mean, cov = rts_smooth(m, P, d, np.array([1.0]), np.ones(3, bool))
    >>> cov[:, 0, 0].round(3).tolist()
    [0.688, 0.75, 1.0]
    """
    T = len(post_mean)
    mean, cov = post_mean.astype(float).copy(), post_cov.astype(float).copy()
    Q = np.diag(np.asarray(noise_var, dtype=float))
    nxt = None  # the next valid trial
    for t in range(T - 1, -1, -1):
        if not valid[t]:
            if nxt is not None:  # weights did not move on this trial: same belief as the next
                mean[t], cov[t] = mean[nxt], cov[nxt]
            continue
        if nxt is not None:
            pred_cov = post_cov[t] + Q
            gain = np.linalg.solve(pred_cov.T, post_cov[t].T).T  # P_f (P_f + Q)^-1
            mean[t] = post_mean[t] + gain @ (mean[nxt] - (post_mean[t] + drift[t]))
            cov[t] = post_cov[t] + gain @ (cov[nxt] - pred_cov) @ gain.T
        nxt = t
    return mean, cov


def rule_share(drift: np.ndarray, noise_var: np.ndarray, valid: np.ndarray,
               window: int | None = None) -> np.ndarray:
    """Share of one animal's expected squared weight change that the rule accounts for.

    Over a window of ``n`` valid trials the weights move by ``D + E``: ``D``, the sum of the
    rule's drifts, and ``E``, the sum of the noise, with mean 0 and variance ``n sd**2``
    (independent of ``D`` under the model). The expected squared change is
    ``D**2 + n sd**2``; the rule's share of it, summed over the windows, is::

        share = sum_windows D**2 / sum_windows (D**2 + n sd**2)

    ``window=None`` takes the whole of training as one window: the share of the animal's net
    learning (where it ended up against where it started) due to the rule. Noise adds up as
    the square root of the number of trials and a consistent drift linearly, so the share
    falls with the window; ``window=1`` compares single-trial steps.

    Parameters
    ----------
    drift : ndarray (T, K)
        The rule's update after each trial (0 on invalid trials).
    noise_var : ndarray (K,)
        Per-trial noise variance.
    valid : ndarray (T,) of bool
    window : int, optional
        Valid trials per window.

    Returns
    -------
    ndarray (K + 1,)
        The share per weight, then for all weights together (squared lengths summed).

    Examples
    --------
    >>> drift = np.full((100, 1), 0.01)
    >>> rule_share(drift, np.array([0.01 ** 2]), np.ones(100, bool)).round(3).tolist()
    [0.99, 0.99]
    """
    d = np.asarray(drift, dtype=float)[np.asarray(valid, dtype=bool)]
    n = len(d)
    if window is not None and int(window) < 1:
        raise ValueError(f"window must be a positive number of trials, got {window!r}")
    if n == 0:
        return np.full(d.shape[1] + 1, np.nan)
    starts = np.arange(0, n, n if window is None else int(window))
    sums = np.add.reduceat(d, starts, axis=0)
    counts = np.diff(np.append(starts, n))
    rule_part = (sums ** 2).sum(0)
    noise_part = counts.sum() * np.asarray(noise_var, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_weight_share = rule_part / (rule_part + noise_part)
        total = rule_part.sum() / (rule_part.sum() + noise_part.sum())
    return np.append(per_weight_share, total)


def share_table(subjects, drift: np.ndarray, noise_var: np.ndarray, valid: np.ndarray,
                covariates, window: int | None = None) -> pd.DataFrame:
    """:func:`rule_share` for every animal of a batch, as a DataFrame."""
    rows = []
    for a, subject in enumerate(subjects):
        share = rule_share(drift[a], noise_var, valid[a], window)
        row = {"subject": subject, "n_trials": int(np.asarray(valid[a], bool).sum())}
        row.update({f"share_{c}": s for c, s in zip(covariates, share[:-1], strict=True)})
        row["share"] = share[-1]
        rows.append(row)
    return pd.DataFrame(rows)


#: Starting values of a learned noise sd, of the starting weights' spread and of a learned
#: reversion rate (per trial: a time constant of 1,000 trials, about a session and a half).
NOISE_START, INIT_SD_START, REVERSION_START = 0.05, 0.5, 1e-3


def noise_settings(weight_noise, noise_reversion=None) -> dict | None:
    """Check an estimator's noise settings; return :class:`WeightNoise` keywords (None: off).

    Examples
    --------
    >>> noise_settings("learn")
    {'sd': 0.05, 'learn_sd': True}
    >>> noise_settings([0.1, 0.0])
    {'sd': [0.1, 0.0], 'learn_sd': False}
    >>> noise_settings("learn", "learn")["reversion"]
    0.001
    """
    if weight_noise is None:
        if noise_reversion is not None:
            raise ValueError("noise_reversion needs weight_noise: a fluctuation to revert")
        return None
    if isinstance(weight_noise, str):
        if weight_noise != "learn":
            raise ValueError(f"weight_noise must be None, 'learn' or standard deviations, "
                             f"got {weight_noise!r}")
        settings = {"sd": NOISE_START, "learn_sd": True}
    else:
        sd = np.asarray(weight_noise, dtype=float)
        if sd.ndim > 1 or not np.isfinite(sd).all() or (sd < 0).any():
            raise ValueError(f"weight_noise must be None, 'learn' or standard deviations >= 0, "
                             f"got {weight_noise!r}")
        settings = {"sd": sd.tolist(), "learn_sd": False}
    if noise_reversion is None:
        return settings
    if isinstance(noise_reversion, str):
        if noise_reversion != "learn":
            raise ValueError(f"noise_reversion must be None, 'learn' or a rate in [0, 1), "
                             f"got {noise_reversion!r}")
        return {**settings, "reversion": REVERSION_START, "learn_reversion": True}
    if not (isinstance(noise_reversion, (int, float, np.integer, np.floating))
            and 0 <= noise_reversion < 1):
        raise ValueError(f"noise_reversion must be None, 'learn' or a rate in [0, 1), "
                         f"got {noise_reversion!r}")
    return {**settings, "reversion": float(noise_reversion), "learn_reversion": False}


def with_noise(rule: LearningRule, settings: dict | None) -> LearningRule:
    """Return ``rule`` carrying weight noise built from :func:`noise_settings` (or bare)."""
    if settings is None:
        return rule
    return NoisyRule(rule, WeightNoise(rule.n_weights, init_sd=INIT_SD_START, **settings))


def beliefs(rule: NoisyRule, batch: TensorBatch, w0: torch.Tensor, valid: np.ndarray,
            smoothed: bool) -> dict:
    """Per-trial (B, T, ...) filtered (or smoothed) beliefs over the policy weights.

    Returns ``p`` (one-step-ahead p(right)), ``w`` and ``sd`` (the belief's mean and standard
    deviations), ``loglik`` and ``drift`` (the rule's update).
    """
    if smoothed and rule.reverts:
        raise ValueError("smoothed beliefs assume random-walk noise; this model's noise "
                         "reverts (noise_reversion): use the filtered ones (smoothed=False)")
    res = filter_rollout(rule, batch, w0, record=True)
    mean, cov = res.post_mean.cpu().double().numpy(), res.post_cov.cpu().double().numpy()
    if smoothed:
        offset = rule.policy_offset()
        offset = 0.0 if offset is None else offset.detach().cpu().double().numpy()
        drift = res.drift.cpu().double().numpy()
        var = rule.noise.var.detach().cpu().double().numpy()
        mean, cov = mean.copy(), cov.copy()
        for a in range(mean.shape[0]):
            m, P = rts_smooth(mean[a] - offset, cov[a], drift[a], var, valid[a])
            mean[a], cov[a] = m + offset, P
    sd = np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 0.0, None))
    return {"p": res.p_right, "w": mean, "sd": sd, "loglik": res.trial_loglik,
            "drift": res.drift}
