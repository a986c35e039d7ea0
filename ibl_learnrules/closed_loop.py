"""The free-running part of the training objective: the rule left to run on its own choices.

Teacher forcing rolls a rule forward on the animal's own choices, so a rule can predict the
next choice well by *following* those choices (an update that tracks the choice whatever the
outcome) and still, left alone, learn nothing like the animal: the tracking averages out
when the choices are its own. A rule run free is a twin (:mod:`ibl_learnrules.twins`); its
choices are random, but its *expected* trajectory is not. :func:`mean_field_rollout` rolls
the weights forward by the update expected under the rule's own policy,

    w_{t+1} = w_t + p_t dw(choice right, its reward) + (1 - p_t) dw(choice left, its reward),

on the animal's stimuli (the reward of each choice follows from the trial's correct side),
and scores the animal's choices with the policy of those weights. No choice of the animal
moves them, so this likelihood is high only for a rule that, by itself, learns at the
animal's pace. :class:`ClosedLoopRunner` adds it, weighted, to the teacher-forced
likelihood during training (``LearningRuleGLM(free_running=...)``). For a rule with weight
noise the teacher-forced part is the filter's likelihood and the free part runs the rule's
drift alone: the noise has zero mean, so it leaves the expected update unchanged (to first
order; the policy's curvature is ignored).

A recurrent rule's state is mixed the same way (``p h(right) + (1 - p) h(left)``): exact for
the update of a memoryless rule, an approximation for a state that enters the next update
non-linearly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .engine import ChunkRunner, RolloutResult, TensorBatch, _keep_where
from .filtering import FilterRunner, NoisyRule
from .rules.base import LearningRule, TrialStep

__all__ = ["expected_update", "mean_field_rollout", "ClosedLoopRunner"]

#: What the free-running likelihood trains: every parameter, or the classic rule's alone.
FREE_RUNNING_TRAINS = ("all", "base")


def _mix(p: torch.Tensor, right, left):
    """``p * right + (1 - p) * left`` for tensors, or tuples of them (None stays None)."""
    if right is None:
        return None
    if isinstance(right, torch.Tensor):
        q = p.reshape(p.shape + (1,) * (right.dim() - p.dim()))
        return q * right + (1 - q) * left
    return type(right)(_mix(p, a, b) for a, b in zip(right, left, strict=True))


def _twice(value):
    """Stack ``value`` on itself along the animals (the two choices in one rule call)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return torch.cat([value, value], 0)
    return type(value)(_twice(v) for v in value)


def _halves(value, n: int):
    """Split what :func:`_twice` stacked: ``(first n rows, the rest)``."""
    if value is None:
        return None, None
    if isinstance(value, torch.Tensor):
        return value[:n], value[n:]
    pairs = [_halves(v, n) for v in value]
    return type(value)(a for a, _ in pairs), type(value)(b for _, b in pairs)


def expected_update(rule: LearningRule, w: torch.Tensor, x: torch.Tensor,
                    correct_side: torch.Tensor, new_session: torch.Tensor, p: torch.Tensor,
                    state=None):
    """Return the rule's update expected under the policy's own choice, and the mixed state.

    ``p dw(right) + (1 - p) dw(left)``, each choice with the reward it earns on a trial whose
    correct side is ``correct_side``; both choices run in one call to the rule.

    Examples
    --------
    >>> from ibl_learnrules.rules import ReinforceBaseline
    >>> rule = ReinforceBaseline(2, alpha=0.1, beta=0.5)
    >>> x, half = torch.tensor([[1.0, 1.0]]), torch.tensor([0.5])
    >>> dw, _ = expected_update(rule, torch.zeros(1, 2), x, torch.ones(1), torch.zeros(1), half)
    >>> dw  # alpha p (1 - p) (2c - 1) x: the baseline cancels
    tensor([[0.0250, 0.0250]], grad_fn=<AddBackward0>)
    """
    n = w.shape[0]
    choices = torch.cat([torch.ones(n, dtype=w.dtype, device=w.device),
                         torch.zeros(n, dtype=w.dtype, device=w.device)])
    # the first n rows chose right, the last n left
    reward = torch.cat([correct_side, 1 - correct_side])
    step = TrialStep(_twice(x), choices, reward, _twice(correct_side), _twice(new_session),
                     _twice(p))
    dw, new_state = rule(_twice(w), step, _twice(state))
    return _mix(p, *_halves(dw, n)), _mix(p, *_halves(new_state, n))


def mean_field_rollout(rule: LearningRule, batch: TensorBatch, w: torch.Tensor, state=None, *,
                       start: int = 0, stop: int | None = None, record: bool = False,
                       free: torch.Tensor | None = None) -> RolloutResult:
    """Roll the weights forward by the rule's expected update under its own policy.

    Parameters
    ----------
    rule : LearningRule
        The learning rule.
    batch : TensorBatch
        The animals' trials: their stimuli drive the weights, their choices are only scored.
    w : Tensor (B, K)
        Rule weights before trial ``start`` (the policy adds ``rule.policy_offset()``).
    state : optional
        Rule state before ``start``; ``rule.initial_state`` when left out at trial 0.
    start, stop : int
        Trial range (``stop`` defaults to ``batch.n_trials``).
    record : bool
        Keep per-trial policy weights, p(right) and log-likelihoods.
    free : Tensor (K,) of 0/1, optional
        Which weights run free (1, by the expected update); the others (0) move by the update
        of the animal's own choice and reward, as under teacher forcing. ``None``: all free.
        A rule's state runs free either way (mixed over both choices); the weights held to
        the animal take the update of its choice from that state.

    Returns
    -------
    RolloutResult
        Log-likelihood of the animals' choices under the free-running policy, summed over the
        valid trials of the range.

    Examples
    --------
    >>> from ibl_learnrules import featurize, simulate_cohort
    >>> from ibl_learnrules.rules import ReinforceBaseline
    >>> batch = TensorBatch.from_arrays(featurize(simulate_cohort(2, n_trials=50,
    ...                                 random_state=0)), torch.device("cpu"))
    >>> res = mean_field_rollout(ReinforceBaseline(2, alpha=0.1), batch, torch.zeros(2, 2))
    >>> tuple(res.loglik.shape), bool((res.loglik < 0).all())
    ((2,), True)
    """
    stop = batch.n_trials if stop is None else stop
    n = batch.n_animals
    if state is None and start == 0:
        state = rule.initial_state(n, w.device)
    partial = free is not None and not bool((free == 1).all())
    if partial:
        free = free.to(w)
    offset = rule.policy_offset()
    loglik = torch.zeros(n, dtype=w.dtype, device=w.device)
    weights, p_right, trial_ll = [], [], []
    for t in range(start, stop):
        x, correct_side, new_session, valid = batch.trial(t)
        logit = ((w if offset is None else w + offset) * x).sum(-1)
        p = torch.sigmoid(logit)
        ll = -valid * F.binary_cross_entropy_with_logits(logit, batch.y[:, t], reduction="none")
        loglik = loglik + ll
        if record:
            weights.append(w if offset is None else w + offset)
            p_right.append(p)
            trial_ll.append(ll)
        expected, new_state = expected_update(rule, w, x, correct_side, new_session, p, state)
        if partial:
            taught, _ = rule(w, TrialStep(x, batch.y[:, t], batch.reward[:, t], correct_side,
                                          new_session, p), state)
            expected = free * expected + (1 - free) * taught
        w = w + valid.unsqueeze(-1) * expected
        state = _keep_where(valid, new_state, state)
    result = RolloutResult(loglik=loglik, w=w, state=state)
    if record:
        result.weights = torch.stack(weights, 1)
        result.p_right, result.trial_loglik = torch.stack(p_right, 1), torch.stack(trial_ll, 1)
    return result


class ClosedLoopRunner:
    """Train on the teacher-forced *and* the free-running likelihood, ``tf + weight * free``.

    A drop-in for :class:`~ibl_learnrules.engine.ChunkRunner` in
    :func:`~ibl_learnrules.engine.train_rule` (build it with :meth:`factory`): two chunk
    runners, one teacher-forced and one free-running, each through the rule's compiled
    kernel where it has one (``dnn`` and ``rnn`` have both; elsewhere the free part is a
    per-trial torch loop). Each carries its own weights and state from chunk to chunk,
    detached, as truncated back-propagation does. With ``trains="base"`` the free-running
    part's gradient reaches only the rule's ``classic_parameters()`` (a network's correction
    learns from the teacher-forced part alone).
    """

    def __init__(self, rule: LearningRule, batch: TensorBatch, engine: str = "auto",
                 weight: float = 1.0, free_weights: torch.Tensor | None = None,
                 trains: str = "all"):
        if not weight >= 0:
            raise ValueError(f"the free-running weight must be >= 0, got {weight!r}")
        if trains not in FREE_RUNNING_TRAINS:
            raise ValueError(f"trains must be one of {list(FREE_RUNNING_TRAINS)}, "
                             f"got {trains!r}")
        classic = {id(p) for p in rule.classic_parameters()}
        if trains == "base" and not classic:
            raise ValueError(f"free_running_trains='base' trains the classic rule that the "
                             f"rule nests, and {type(rule).__name__} nests none")
        self.rule, self.batch, self.weight, self.engine = rule, batch, float(weight), engine
        self.free_weights, self.trains = free_weights, trains
        # parameters whose gradient the free-running part must leave as the teacher left it
        self._taught_only = ([] if trains == "all" else
                             [p for p in rule.parameters() if id(p) not in classic])
        noisy = isinstance(rule, NoisyRule)
        self.teacher = FilterRunner(rule, batch) if noisy else ChunkRunner(rule, batch, engine)
        # the free part has no kernel for most rules: "fused" must not refuse them
        self.free = ChunkRunner(rule.mean_rule(), batch,
                                "torch" if engine == "torch" else "auto", free_running=True,
                                free_weights=free_weights)

    @classmethod
    def factory(cls, weight: float, free_weights: torch.Tensor | None = None,
                trains: str = "all"):
        """Return a ``runner_class`` for :func:`~ibl_learnrules.engine.train_rule`."""
        def build(rule, batch, engine="auto"):
            return cls(rule, batch, engine, weight, free_weights, trains)
        return build

    def start(self, w0: torch.Tensor):
        """Weights and states of both parts before trial 0."""
        (w, state), (w_free, state_free) = self.teacher.start(w0), self.free.start(w0)
        return (w, w_free), (state, state_free)

    def only(self, animal: int) -> ClosedLoopRunner:
        """Return this runner on one animal of its batch (to find who causes numerical trouble)."""
        return ClosedLoopRunner(self.rule, self.batch.animal(animal), self.engine, self.weight,
                                self.free_weights, self.trains)

    def policy_weights(self, w):
        """Return both parts' GLM weights side by side (numerical checks look at them all)."""
        parts = (self.teacher.policy_weights(w[0]), self.free.policy_weights(w[1]))
        return np.concatenate([part.detach().cpu().numpy() if isinstance(part, torch.Tensor)
                               else part for part in parts], -1)

    def __call__(self, w, state, start: int, stop: int, need_grad: bool, loss_norm: float = 1.0):
        """Run trials ``start:stop``; return ``(tf + weight * free loglik, weights, states)``."""
        taught, w_taught, s_taught = self.teacher(w[0], state[0], start, stop, need_grad,
                                                  loss_norm)
        held = self._taught_only if need_grad else []
        taught_grads = [None if p.grad is None else p.grad.clone() for p in held]
        free, w_free, s_free = self.free(w[1], state[1], start, stop, need_grad,
                                         loss_norm / self.weight if self.weight else math.inf)
        for p, grad in zip(held, taught_grads, strict=True):
            p.grad = grad
        return taught + self.weight * free, (w_taught, w_free), (s_taught, s_free)
