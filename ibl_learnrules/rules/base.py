"""The interface every learning rule implements, and the registry of rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = ["TrialStep", "ChunkInputs", "KernelResult", "LearningRule", "available_rules",
           "get_rule_class", "make_rule", "RULES"]

#: name -> class of every rule defined (filled in by ``LearningRule.__init_subclass__``).
RULES: dict[str, type[LearningRule]] = {}


class TrialStep(NamedTuple):
    """What a rule sees of one trial, for a batch of animals (leading dimension B).

    Attributes
    ----------
    x : Tensor (B, K)
        Covariates of the trial.
    y : Tensor (B,)
        Choice, 1 = right, 0 = left.
    reward : Tensor (B,)
        1 rewarded, 0 not.
    correct_side : Tensor (B,)
        1 when right was the rewarded side.
    new_session : Tensor (B,)
        1 on the first trial of a session.
    p : Tensor (B,)
        The policy's p(right) on this trial, before the update.
    """

    x: torch.Tensor
    y: torch.Tensor
    reward: torch.Tensor
    correct_side: torch.Tensor
    new_session: torch.Tensor
    p: torch.Tensor


class ChunkInputs(NamedTuple):
    """A chunk of trials as numpy arrays for a rule's fast kernel, shape (B, T, ...).

    All arrays have the dtype of the rule's parameters and are C-contiguous. ``u`` is what the
    network rules see of a trial besides the weights: ``[x, 2y-1, 2r-1, 2c-1, new_session]``.
    """

    x: np.ndarray  # (B, T, K)
    y: np.ndarray  # (B, T)
    reward: np.ndarray  # (B, T)
    correct_side: np.ndarray  # (B, T)
    new_session: np.ndarray  # (B, T)
    valid: np.ndarray  # (B, T), 1.0 where the trial enters the likelihood and the update
    u: np.ndarray  # (B, T, K + 4)


class KernelResult(NamedTuple):
    """What a rule's chunk kernel returns (numpy arrays)."""

    loglik: np.ndarray  # (B,) summed over the chunk's valid trials
    w: np.ndarray  # (B, K) rule weights after the chunk
    state: object  # rule state after the chunk (arrays shaped as the torch state; or None)
    grads: list | None  # d(-loglik.sum() / loss_norm) / d parameter, per rule.parameters()


#: A chunk kernel: ``kernel(inputs, w, state, need_grad, loss_norm) -> KernelResult``.
ChunkKernel = Callable[[ChunkInputs, np.ndarray, object, bool, float], KernelResult]


class LearningRule(nn.Module):
    """A learning rule: trial in, weight update out.

    Subclasses set ``name`` (which registers them) and implement :meth:`forward`. A rule
    with memory across trials returns a state from :meth:`initial_state` and threads it
    through :meth:`forward`; Markovian rules keep the default ``None``.

    Parameters
    ----------
    n_weights : int
        Number of GLM weights K (one per covariate).
    """

    name: ClassVar[str] = ""
    #: One line for listings: what the rule computes.
    formula: ClassVar[str] = ""
    #: Training defaults of the rule, which ``LearningRuleGLM``'s ``"auto"`` settings take:
    #: the weight of the free-running likelihood, the learning-rate schedule and the
    #: precision of the prior on :meth:`correction_parameters`.
    default_free_running: ClassVar[float] = 0.0
    default_lr_schedule: ClassVar[str] = "constant"
    default_correction_prior: ClassVar[float] = 0.0
    #: Constructor arguments the estimator adds when ``rule_params`` sets no ``gate``, if
    #: the covariates have the weights that its ``gate_on`` reads.
    default_gate: ClassVar[dict | None] = None

    def __init__(self, n_weights: int):
        super().__init__()
        if n_weights < 1:
            raise ValueError(f"a rule needs at least one weight, got n_weights={n_weights}")
        self.n_weights = n_weights

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # only a class that names itself registers: a subclass inheriting its parent's name
        # must not replace the parent in the registry
        if cls.__dict__.get("name"):
            RULES[cls.name] = cls

    def initial_state(self, n_animals: int, device: torch.device | None = None):
        """State before the first trial (``None`` for Markovian rules)."""
        return None

    def policy_offset(self) -> torch.Tensor | None:
        """Constant (K,) added to the rule's weights to give the policy's (``None``: nothing).

        A fitted constant lives here rather than in the starting weights so that, under
        truncated back-propagation, every chunk of trials informs it.
        """
        return None

    def forward(self, w: torch.Tensor, trial: TrialStep, state=None):
        """Return ``(dw, new_state)``: the update of ``w`` (B, K) after ``trial``."""
        raise NotImplementedError

    def mean_rule(self) -> LearningRule:
        """Return the rule whose update is this one's expected update: itself.

        A rule with zero-mean noise on top of another (a noisy learner) returns that other.
        """
        return self

    def correction_parameters(self) -> list[nn.Parameter]:
        """Parameters that weight decay may shrink: a flexible part on top of a simple rule.

        Their zero is the simple rule (a network's correction of the classic rule it nests);
        by default none.
        """
        return []

    def classic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the classic rule this rule is or nests (a classic rule: all of its own).

        ``LearningRuleGLM(free_running_trains="base")`` lets the free-running likelihood
        train these alone.
        """
        flexible = {id(p) for p in self.correction_parameters()}
        return [p for p in self.parameters() if id(p) not in flexible]

    def chunk_kernel(self) -> ChunkKernel | None:
        """Return the rule's fast CPU implementation of a chunk of trials, or ``None``.

        A kernel runs the policy and this rule over every trial of a :class:`ChunkInputs`
        for all animals, exactly as :func:`ibl_learnrules.engine.rollout` does (policy
        offset included), and, when asked, back-propagates through the chunk. It reads the
        rule's parameters when called. ``w`` and ``state`` are numpy versions of the rule's
        weights and state; gradients are of ``-loglik.sum() / loss_norm``, one array per
        entry of ``list(self.parameters())``. The engine wraps it so that autograd sees one
        function; ``tests/test_kernels.py`` holds every registered kernel to the rollout.
        """
        return None

    def mean_field_kernel(self, free: np.ndarray | None = None) -> ChunkKernel | None:
        """Return a fast CPU chunk of the rule's free-running (mean-field) rollout, or ``None``.

        Same contract as :meth:`chunk_kernel`, for
        :func:`ibl_learnrules.closed_loop.mean_field_rollout` instead of the teacher-forced
        rollout (with its ``free`` mask of the weights that run free, (K,) of 0/1; ``None``
        for all); without one, that rollout runs as a per-trial torch loop.
        """
        return None

    def extra_repr(self) -> str:  # noqa: D102
        return f"n_weights={self.n_weights}"


def per_weight(n_weights: int, value, name: str = "value") -> torch.Tensor:
    """Make a (K,) float tensor from a scalar or a sequence of K values (else ValueError)."""
    values = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
    if values.numel() == 1:
        return values.expand(n_weights).clone()
    if values.numel() != n_weights:
        raise ValueError(f"{name} has {values.numel()} values for {n_weights} weights")
    return values.clone()


def per_weight_parameter(n_weights: int, value, name: str = "value") -> nn.Parameter:
    """Make a per-weight parameter from a scalar or a sequence of K values."""
    return nn.Parameter(per_weight(n_weights, value, name))


def per_weight_log_parameter(n_weights: int, value, name: str = "value") -> nn.Parameter:
    """Make a positive per-weight parameter, stored as its log (Adam moves it by ratios)."""
    values = per_weight(n_weights, value, name)
    if not bool((values > 0).all()):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return nn.Parameter(values.log())


def available_rules() -> list[str]:
    """Names of the learning rules that can be fitted.

    Examples
    --------
    >>> "dnn" in available_rules() and "reinforce" in available_rules()
    True
    """
    return sorted(RULES)


def get_rule_class(name: str) -> type[LearningRule]:
    """Return the rule class registered as ``name`` (ValueError listing the choices if none)."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown rule {name!r}; choose from {available_rules()}") from None


def make_rule(name: str, n_weights: int, **params) -> LearningRule:
    """Build the rule registered as ``name`` with ``n_weights`` weights and its parameters.

    Raises ValueError for an unknown name, TypeError naming the rule for bad parameters.

    Examples
    --------
    >>> rule = make_rule("reinforce", 2, alpha=[0.05, 0.01])
    >>> [round(a, 6) for a in rule.alpha.tolist()]
    [0.05, 0.01]
    """
    cls = get_rule_class(name)
    try:
        return cls(n_weights, **params)
    except TypeError as err:
        raise TypeError(f"bad parameters for rule {name!r}: {err}") from None
