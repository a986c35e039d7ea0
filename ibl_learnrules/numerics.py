"""Numerical trouble in training: what counts as trouble, and how it is reported.

:func:`~ibl_learnrules.engine.train_rule` checks every chunk: a non-finite loss or gradient,
or carried GLM weights beyond :data:`WEIGHT_LIMIT` (no mouse's choices need logits of
thousands: such weights only grow on the way to overflow). On trouble it names the epoch and
the animals, restores the state of the start of the epoch, lowers the learning rate and
retries, a bounded number of times; then it raises :class:`NumericalTroubleError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NumericalTroubleError", "NumericalWarning", "Trouble", "WEIGHT_LIMIT",
           "LR_FACTOR", "MAX_LR_CUTS", "weight_trouble", "all_finite"]

#: Largest absolute GLM weight a rule may carry before training calls it exploded.
WEIGHT_LIMIT = 1e3
#: The learning rate is multiplied by this on each retry ...
LR_FACTOR = 0.1
#: ... at most this many times in a fit.
MAX_LR_CUTS = 3


class NumericalTroubleError(FloatingPointError):
    """Training met non-finite numbers or exploding weights and could not recover."""


class NumericalWarning(RuntimeWarning):
    """Training met numerical trouble and lowered the learning rate to retry an epoch."""


@dataclass
class Trouble(Exception):
    """Numerical trouble found in one epoch (internal: caught by the training loop)."""

    epoch: int
    where: str  # "trials 100-200" or "validation"
    what: str  # the first problem seen, e.g. "non-finite gradient"
    # the animals whose own chunk, run alone, shows it (empty: none alone); None: not a chunk's
    animals: Sequence[str] | None = None

    def __str__(self) -> str:
        text = f"epoch {self.epoch}, {self.where}: {self.what}"
        if self.animals is None:
            return text
        if not self.animals:
            return f"{text}; no single animal alone (the batch together)"
        shown = ", ".join(repr(a) for a in self.animals[:5])
        more = f" and {len(self.animals) - 5} more" if len(self.animals) > 5 else ""
        return f"{text}; animal{'s' if len(self.animals) > 1 else ''} {shown}{more}"


def weight_trouble(w, limit: float = WEIGHT_LIMIT) -> str | None:
    """Describe what is wrong with carried weights (tensor or array), or None when fine.

    Examples
    --------
    >>> weight_trouble(np.array([[1.0, -2.0]])) is None
    True
    >>> weight_trouble(np.array([[1.0, 5e3]]))
    'weights exploded (|w| = 5e+03 > 1e+03)'
    >>> weight_trouble(np.array([[np.nan, 0.0]]))
    'non-finite weights'
    """
    if isinstance(w, torch.Tensor):
        biggest = float(w.detach().abs().max()) if w.numel() else 0.0
    else:
        biggest = float(np.abs(w).max()) if np.size(w) else 0.0
    if not math.isfinite(biggest):
        return "non-finite weights"
    if biggest > limit:
        return f"weights exploded (|w| = {biggest:.0e} > {limit:.0e})"
    return None


def all_finite(tensors) -> bool:
    """Whether every tensor given (None ignored) holds finite numbers only.

    Examples
    --------
    >>> all_finite([torch.ones(2), None]), all_finite([torch.ones(2), torch.tensor([np.inf])])
    (True, False)
    """
    flat = [t.detach().reshape(-1) for t in tensors if t is not None]
    # one check of them all: a chunk's few small tensors cost more in calls than in numbers
    return not flat or bool(torch.isfinite(torch.cat(flat)).all())
