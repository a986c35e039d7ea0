"""The interface every learning rule implements, and the registry of rules."""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import nn

__all__ = ["TrialStep", "LearningRule", "available_rules", "get_rule_class", "RULES"]

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

    def __init__(self, n_weights: int):
        super().__init__()
        if n_weights < 1:
            raise ValueError(f"a rule needs at least one weight, got n_weights={n_weights}")
        self.n_weights = n_weights

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
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

    def extra_repr(self) -> str:  # noqa: D102
        return f"n_weights={self.n_weights}"


def per_weight_log_parameter(n_weights: int, value: float) -> nn.Parameter:
    """Make a positive per-weight parameter, stored as its log (Adam moves it by ratios)."""
    return nn.Parameter(torch.full((n_weights,), math.log(value)))


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
