"""Classic learning rules: few parameters, fitted by the same likelihood as the networks.

Notation (per trial): ``x`` covariates, ``y`` choice (1 = right), ``r`` reward (0/1),
``c`` correct side (1 = right), ``p`` the policy's p(right) before the update. Per-weight
learning rates ``alpha`` are positive and stored as logs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import (
    ChunkKernel,
    KernelResult,
    LearningRule,
    TrialStep,
    per_weight_log_parameter,
    per_weight_parameter,
)

__all__ = [
    "NoLearning",
    "Reinforce",
    "ReinforceBaseline",
    "ReinforceBaselineLeak",
    "ReinforceBaselineLeakSide",
    "RewardMax",
    "PredictionError",
    "QLearning",
    "RewardHistoryReinforce",
]


def _classic_kernel(rule: LearningRule, cls: type, code: str, max_run: int = 0,
                    free: np.ndarray | None = None) -> ChunkKernel | None:
    """Wrap the chunk of :mod:`ibl_learnrules.kernels.classic` for rule ``code`` as a kernel.

    ``free``: the mean-field codes' mask of the weights that run free (``None``: all).
    ``None`` for a subclass of ``cls``: it may change the update, which the kernel would
    not see.
    """
    if type(rule) is not cls:
        return None
    from ..kernels import classic

    rule_code = getattr(classic, code)

    def kernel(inputs, w, state, need_grad, loss_norm):
        params = [p.detach().cpu().numpy() for p in rule.parameters()]
        loglik, w_end, state_end, grads = classic.classic_chunk(
            rule_code, inputs.x, inputs.y, inputs.reward, inputs.correct_side,
            inputs.new_session, inputs.valid, w, state, params, need_grad, loss_norm, max_run, free)
        return KernelResult(loglik, w_end, state_end, grads)

    return kernel


class NoLearning(LearningRule):
    """A fixed GLM: the weights never change; their values are fitted (the floor)."""

    name = "none"
    formula = "dw = 0; w = w0 + fitted constant"

    def __init__(self, n_weights: int):
        super().__init__(n_weights)
        self.weights = nn.Parameter(torch.zeros(n_weights))

    def policy_offset(self):
        """Return the fitted constant weights."""
        return self.weights

    def forward(self, w, trial: TrialStep, state=None):
        """No update."""
        return torch.zeros_like(w), state

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, NoLearning, "NONE")


def baseline_gain(beta: torch.Tensor, trial: TrialStep) -> torch.Tensor:
    """REINFORCE with baseline's per-weight factor ``(r - beta) (y - p)``, shape (B, K)."""
    return (trial.reward.unsqueeze(-1) - beta) * (trial.y - trial.p).unsqueeze(-1)


def leak_pull(leak: torch.Tensor, rest: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Forgetting's part of an update: ``-leak (w - rest)``, per weight."""
    return -leak * (w - rest)


class _RateRule(LearningRule):
    """A rule ``dw = alpha * g(trial) * x`` with one positive rate per weight."""

    def __init__(self, n_weights: int, alpha=0.01):
        super().__init__(n_weights)
        self.log_alpha = per_weight_log_parameter(n_weights, alpha, "alpha")

    @property
    def alpha(self) -> torch.Tensor:
        """Per-weight learning rate."""
        return self.log_alpha.exp()

    def gain(self, trial: TrialStep) -> torch.Tensor:
        """Scalar factor per animal (B,) or per weight (B, K) multiplying ``alpha * x``."""
        raise NotImplementedError

    def forward(self, w, trial: TrialStep, state=None):
        """``dw = alpha * gain * x``."""
        gain = self.gain(trial)
        if gain.dim() == 1:
            gain = gain.unsqueeze(-1)
        return self.alpha * gain * trial.x, state


class Reinforce(_RateRule):
    """REINFORCE: ``dw = alpha * r * (y - p) * x``."""

    name = "reinforce"
    formula = "dw = alpha * r * (y - p) * x"

    def gain(self, trial):
        """``r (y - p)``."""
        return trial.reward * (trial.y - trial.p)

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, Reinforce, "REINFORCE")


class ReinforceBaseline(_RateRule):
    """REINFORCE with a per-weight reward baseline: ``dw = alpha * (r - beta) * (y - p) * x``."""

    name = "reinforce_baseline"
    formula = "dw = alpha * (r - beta) * (y - p) * x"

    def __init__(self, n_weights: int, alpha=0.01, beta=0.5):
        super().__init__(n_weights, alpha)
        self.beta = per_weight_parameter(n_weights, beta, "beta")

    def gain(self, trial):
        """``(r - beta) (y - p)`` per weight."""
        return baseline_gain(self.beta, trial)

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, ReinforceBaseline, "REINFORCE_BASELINE")

    def mean_field_kernel(self, free: np.ndarray | None = None) -> ChunkKernel | None:
        """Compiled free-running chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, ReinforceBaseline, "MEAN_FIELD_BASELINE", free=free)


class ReinforceBaselineLeak(ReinforceBaseline):
    """REINFORCE with baseline whose weights leak toward a resting point between updates.

    ``dw = alpha * (r - beta) * (y - p) * x - leak * (w - rest)``, per weight: forgetting,
    which holds the weights of an animal that has stopped improving where they are, whereas
    REINFORCE's own update, whose mean points uphill on reward, would keep them growing. The
    leak rates are positive (stored as logs); ``rest`` is fitted. With ``leak`` at 0 it is
    :class:`ReinforceBaseline`.

    Examples
    --------
    >>> import torch
    >>> from ibl_learnrules.rules import TrialStep
    >>> rule = ReinforceBaselineLeak(1, alpha=0.1, beta=0.5, leak=0.01, rest=1.0)
    >>> one = torch.ones(1)
    >>> trial = TrialStep(x=one[:, None], y=one, reward=one, correct_side=one,
    ...                   new_session=0 * one, p=0.5 * one)
    >>> dw, _ = rule(torch.full((1, 1), 3.0), trial)  # 0.1 * 0.5 * 0.5 - 0.01 * (3 - 1)
    >>> round(dw.item(), 6)
    0.005
    """

    name = "reinforce_baseline_leak"
    formula = "dw = alpha * (r - beta) * (y - p) * x - leak * (w - rest)"

    def __init__(self, n_weights: int, alpha=0.01, beta=0.5, leak=1e-3, rest=0.0):
        super().__init__(n_weights, alpha, beta)
        self.log_leak = per_weight_log_parameter(n_weights, leak, "leak")
        self.rest = per_weight_parameter(n_weights, rest, "rest")

    @property
    def leak(self) -> torch.Tensor:
        """Per-weight leak rate per trial."""
        return self.log_leak.exp()

    def forward(self, w, trial: TrialStep, state=None):
        """REINFORCE with baseline's update less the leak toward ``rest``."""
        dw, state = super().forward(w, trial, state)
        return dw + leak_pull(self.leak, self.rest, w), state

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, ReinforceBaselineLeak, "REINFORCE_BASELINE_LEAK")

    def mean_field_kernel(self, free: np.ndarray | None = None) -> ChunkKernel | None:
        """Compiled free-running chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, ReinforceBaselineLeak, "MEAN_FIELD_LEAK", free=free)


class ReinforceBaselineLeakSide(ReinforceBaselineLeak):
    """The leak rule plus a step toward the side that the trial revealed as correct.

    ``dw = alpha (r - beta) (y - p) x - leak (w - rest) + eta (2c - 1) x``, per weight. The
    last term moves the weights toward the rewarded side whatever the animal chose and
    however sure its policy was (REINFORCE's steps shrink as ``p`` nears 0 or 1). On the bias
    weight, with the leak, it is a leaky running average of the correct sides: a prior that
    follows the biased blocks, as the mice do within a few trials of a switch. ``eta`` is
    positive, stored as its log like the rates (Adam then moves it by ratios: a step of the
    learning rate in ``eta`` itself, which adds up over thousands of trials, threw fits on
    KS014 far from REINFORCE with baseline); as it goes to 0 the rule becomes
    :class:`ReinforceBaselineLeak`.

    Fitted to the 27 bundled mice's first two biased sessions (five folds by mouse), it
    predicts held-out mice as the leak rule does (+0.0002 nats/trial, 17 of 27), and its
    replay twins follow block switches faster (trials to half a switch, per fold: 5.9-7.4
    against 6.6-12.2). Trained with the free-running likelihood as well
    (``free_running=3``), they take 3.2-4.2 trials, for 0.004 nats/trial of held-out
    likelihood; the mice take 2.65 (median of the 27).

    Examples
    --------
    >>> import torch
    >>> from ibl_learnrules.rules import TrialStep
    >>> rule = ReinforceBaselineLeakSide(1, alpha=0.1, beta=0.5, leak=0.01, rest=1.0, eta=0.2)
    >>> one = torch.ones(1)
    >>> trial = TrialStep(x=one[:, None], y=0 * one, reward=0 * one, correct_side=one,
    ...                   new_session=0 * one, p=0.5 * one)
    >>> dw, _ = rule(torch.full((1, 1), 3.0), trial)  # 0.1*(0-0.5)*(0-0.5) - 0.01*2 + 0.2
    >>> round(dw.item(), 6)
    0.205
    """

    name = "reinforce_baseline_leak_side"
    formula = "dw = alpha * (r - beta) * (y - p) * x - leak * (w - rest) + eta * (2c - 1) * x"

    def __init__(self, n_weights: int, alpha=0.01, beta=0.5, leak=1e-3, rest=0.0, eta=1e-4):
        super().__init__(n_weights, alpha, beta, leak, rest)
        self.log_eta = per_weight_log_parameter(n_weights, eta, "eta")

    @property
    def eta(self) -> torch.Tensor:
        """Per-weight step toward the correct side per trial."""
        return self.log_eta.exp()

    def forward(self, w, trial: TrialStep, state=None):
        """Return the leak rule's update plus ``eta (2c - 1) x``."""
        dw, state = super().forward(w, trial, state)
        side = (2.0 * trial.correct_side - 1.0).unsqueeze(-1)
        return dw + self.eta * side * trial.x, state

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, ReinforceBaselineLeakSide, "REINFORCE_BASELINE_LEAK_SIDE")

    def mean_field_kernel(self, free: np.ndarray | None = None) -> ChunkKernel | None:
        """Compiled free-running chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, ReinforceBaselineLeakSide, "MEAN_FIELD_LEAK_SIDE", free=free)


class RewardMax(_RateRule):
    """Gradient ascent on expected reward: ``dw = alpha * (2c - 1) * p * (1 - p) * x``.

    ``E[r] = p`` when right is correct and ``1 - p`` otherwise; its gradient with respect to
    ``w`` is the update. It needs the correct side, not the animal's choice.
    """

    name = "reward_max"
    formula = "dw = alpha * (2c - 1) * p * (1 - p) * x"

    def gain(self, trial):
        """``(2c - 1) p (1 - p)``."""
        return (2.0 * trial.correct_side - 1.0) * trial.p * (1.0 - trial.p)

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, RewardMax, "REWARD_MAX")


class PredictionError(_RateRule):
    """Reward-prediction-error rule: ``dw = alpha * (r - pi) * (2y - 1) * x``.

    ``pi`` is the probability the policy gave to the action taken; the chosen side's drive
    moves by the surprise in the reward it brought.
    """

    name = "prediction_error"
    formula = "dw = alpha * (r - pi(y)) * (2y - 1) * x"

    def gain(self, trial):
        """``(r - pi(y)) (2y - 1)``."""
        chosen = trial.y * trial.p + (1.0 - trial.y) * (1.0 - trial.p)
        return (trial.reward - chosen) * (2.0 * trial.y - 1.0)

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, PredictionError, "PREDICTION_ERROR")


class QLearning(LearningRule):
    """Rescorla-Wagner / Q-learning of linear action values.

    Each side has values ``Q_a(x) = q_a . x``; after choosing ``a``,
    ``q_a += alpha * (r - Q_a(x)) * x``. The policy is a softmax with inverse temperature
    ``beta``: ``w = w0 + beta * (q_right - q_left)``. The state holds ``(q_right, q_left)``.
    """

    name = "q_learning"
    formula = "dq_a = alpha * (r - q_a . x) * x for the chosen a; w = w0 + beta (q_R - q_L)"

    def __init__(self, n_weights: int, alpha=0.005, beta: float = 3.0):
        super().__init__(n_weights)
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        self.log_alpha = per_weight_log_parameter(n_weights, alpha, "alpha")
        self.log_beta = nn.Parameter(torch.tensor(float(beta)).log())

    def initial_state(self, n_animals, device=None):
        """Zero action values, shape (B, 2, K): right then left."""
        return torch.zeros(n_animals, 2, self.n_weights, device=device,
                           dtype=self.log_alpha.dtype)

    def forward(self, w, trial: TrialStep, state=None):
        """Update the chosen side's values; return the change of the policy weights."""
        q = state
        chosen = torch.stack([trial.y, 1.0 - trial.y], dim=-1)  # (B, 2) one-hot, right first
        value = (q * trial.x.unsqueeze(1)).sum(-1)  # (B, 2)
        delta = (trial.reward.unsqueeze(-1) - value) * chosen
        dq = self.log_alpha.exp() * delta.unsqueeze(-1) * trial.x.unsqueeze(1)
        dw = self.log_beta.exp() * (dq[:, 0] - dq[:, 1])
        return dw, q + dq

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, QLearning, "Q_LEARNING")


class RewardHistoryReinforce(_RateRule):
    """REINFORCE with baseline whose step grows with the run of rewards before the trial.

    ``dw = alpha * (1 + gamma * min(run, max_run)) * (r - beta) * (y - p) * x``, where
    ``run`` counts the consecutive rewarded trials just before this one in the session (the
    state, reset at each session's first trial). A Markovian rule cannot see ``run``; a
    recurrent one can. ``max_run`` is fixed; ``alpha``, ``beta`` and ``gamma`` are fitted.

    Examples
    --------
    >>> import torch
    >>> from ibl_learnrules.rules import TrialStep
    >>> rule = RewardHistoryReinforce(1, alpha=0.1, beta=0.0, gamma=1.0)
    >>> one = torch.ones(1)
    >>> trial = TrialStep(x=one[:, None], y=one, reward=one, correct_side=one,
    ...                   new_session=0 * one, p=0.5 * one)
    >>> dw, run = rule(torch.zeros(1, 1), trial, torch.tensor([3.0]))
    >>> round(dw.item(), 6), run.item()
    (0.2, 4.0)
    """

    name = "reward_history"
    formula = "dw = alpha * (1 + gamma * min(run, max_run)) * (r - beta) * (y - p) * x"

    def __init__(self, n_weights: int, alpha=0.002, beta=0.5, gamma: float = 0.5,
                 max_run: int = 10):
        super().__init__(n_weights, alpha)
        self.beta = per_weight_parameter(n_weights, beta, "beta")
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))
        self.max_run = int(max_run)

    def initial_state(self, n_animals, device=None):
        """Run length 0, shape (B,)."""
        return torch.zeros(n_animals, device=device, dtype=self.beta.dtype)

    def forward(self, w, trial: TrialStep, state=None):
        """Update scaled by the run of rewards; return the new run length."""
        run = torch.where(trial.new_session > 0, torch.zeros_like(state), state)
        gain = (1.0 + self.gamma * run.clamp(max=self.max_run)) * (trial.y - trial.p)
        dw = self.alpha * (trial.reward.unsqueeze(-1) - self.beta) * gain.unsqueeze(-1) * trial.x
        return dw, torch.where(trial.reward > 0, run + 1.0, torch.zeros_like(run))

    def chunk_kernel(self) -> ChunkKernel | None:
        """Compiled chunk of :mod:`ibl_learnrules.kernels.classic`."""
        return _classic_kernel(self, RewardHistoryReinforce, "REWARD_HISTORY", self.max_run)

    def extra_repr(self) -> str:  # noqa: D102
        return f"n_weights={self.n_weights}, max_run={self.max_run}"
