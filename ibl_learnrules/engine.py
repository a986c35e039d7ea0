"""Roll a GLM policy and a learning rule forward over padded batches of animals, and train.

The one hot loop is :func:`rollout`: trial by trial for all animals at once, it computes the
policy's p(right), the log-likelihood of the observed choice, and the rule's weight update.
Training (:func:`train_rule`) runs it over chunks of ``tbptt`` trials (truncated
back-propagation through time), with Adam, gradient clipping and optional early stopping
on validation animals; it checks every chunk for numerical trouble (:mod:`.numerics`) and can
save and resume its state at epoch boundaries (:mod:`.checkpoint`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .drift_guard import DriftGuard
from .numerics import (
    LR_FACTOR,
    MAX_LR_CUTS,
    WEIGHT_LIMIT,
    NumericalTroubleError,
    NumericalWarning,
    Trouble,
    all_finite,
    weight_trouble,
)
from .rules.base import ChunkInputs, LearningRule, TrialStep
from .trials import TrialArrays

if TYPE_CHECKING:  # the checkpoint module imports the io package, which imports the engine
    from .checkpoint import Checkpoint

__all__ = [
    "TensorBatch",
    "Stimulus",
    "Environment",
    "Replay",
    "RolloutResult",
    "resolve_device",
    "rollout",
    "initial_weights",
    "fit_initial_weights",
    "train_rule",
    "TrainingHistory",
    "ChunkRunner",
    "split_animals",
    "progress_bar",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; "
                         "use device='auto' or 'cpu'")
    return device


@dataclass
class TensorBatch:
    """Trial arrays of a batch of animals as tensors, time on axis 1 (B, T, ...)."""

    x: torch.Tensor
    y: torch.Tensor
    reward: torch.Tensor
    correct_side: torch.Tensor
    new_session: torch.Tensor
    valid: torch.Tensor  # float 0/1: counts in the likelihood and updates the weights

    @classmethod
    def from_arrays(cls, arrays: TrialArrays, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> TensorBatch:
        """Move :class:`~ibl_learnrules.trials.TrialArrays` to ``device``."""
        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)
        return cls(x=t(arrays.x), y=t(arrays.y), reward=t(arrays.reward),
                   correct_side=t(arrays.correct_side), new_session=t(arrays.new_session),
                   valid=t(arrays.valid))

    @property
    def n_animals(self) -> int:
        """B."""
        return self.x.shape[0]

    @property
    def n_trials(self) -> int:
        """T (padded length)."""
        return self.x.shape[1]

    def animal(self, index: int) -> TensorBatch:
        """Return the batch of animal ``index`` alone."""
        return TensorBatch(**{f.name: getattr(self, f.name)[index:index + 1]
                              for f in dataclasses.fields(self)})

    # the environment interface of :func:`rollout`: teacher forcing replays everything
    def trial(self, t: int) -> Stimulus:
        """Present trial ``t``: what the animals face."""
        return Stimulus(self.x[:, t], self.correct_side[:, t], self.new_session[:, t],
                        self.valid[:, t])

    def respond(self, t: int, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the observed choice and reward of trial ``t`` (teacher forcing)."""
        return self.y[:, t], self.reward[:, t]


class Stimulus(NamedTuple):
    """One trial as the environment presents it, for all animals (leading dimension B)."""

    x: torch.Tensor  # (B, K) covariates
    correct_side: torch.Tensor  # (B,) 1 when right is rewarded
    new_session: torch.Tensor  # (B,) 1 on a session's first trial
    valid: torch.Tensor  # (B,) 1 when the trial counts (0: no-go or padding)


class Environment(Protocol):
    """Where the trials of :func:`rollout` come from.

    ``trial(t)`` presents trial ``t``; ``respond(t, p)`` returns the choice (1 = right) and
    reward given the policy's p(right): the observed ones (teacher forcing,
    :class:`TensorBatch`), or choices sampled from ``p`` (free running: :class:`Replay`, or
    :class:`ibl_learnrules.simulate.Protocol`, which also picks the next stimuli from them).
    """

    n_animals: int
    n_trials: int

    def trial(self, t: int) -> Stimulus: ...  # noqa: D102

    def respond(self, t: int, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...  # noqa: D102


class Replay:
    """Free running on recorded stimuli: the animals' trials, with choices sampled from ``p``.

    The reward is the sampled choice being on the correct side. A ``prev_choice`` covariate
    (column ``prev_choice_column`` of ``x``) is the sampled previous choice, not the
    recorded one: the twin must not see the animal's choices. It stays 0 where the
    recording has 0 (a session's first trial, or after a no-go trial).
    """

    def __init__(self, batch: TensorBatch, generator: torch.Generator,
                 prev_choice_column: int | None = None):
        self.batch, self.generator = batch, generator
        self.n_animals, self.n_trials = batch.n_animals, batch.n_trials
        self.prev_choice_column = prev_choice_column
        self._last_choice: torch.Tensor | None = None

    def trial(self, t: int) -> Stimulus:  # noqa: D102
        stimulus = self.batch.trial(t)
        k = self.prev_choice_column
        if k is None or self._last_choice is None:
            return stimulus
        x = stimulus.x.clone()
        x[:, k] = torch.where(x[:, k] != 0, 2.0 * self._last_choice - 1.0, x[:, k])
        return stimulus._replace(x=x)

    def respond(self, t: int, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        u = torch.rand(p.shape, generator=self.generator, device=p.device, dtype=p.dtype)
        y = (u < p).to(p.dtype)
        self._last_choice = y
        return y, (y == self.batch.correct_side[:, t]).to(p.dtype)


@dataclass
class RolloutResult:
    """What :func:`rollout` returns."""

    loglik: torch.Tensor  # (B,) summed over valid trials of the range
    w: torch.Tensor  # (B, K) rule weights after the range
    state: object  # rule state after the range
    weights: torch.Tensor | None = None  # (B, T_range, K) policy weights before each trial
    p_right: torch.Tensor | None = None  # (B, T_range)
    y: torch.Tensor | None = None  # (B, T_range) choices (sampled when free-running)
    trial_loglik: torch.Tensor | None = None  # (B, T_range), 0 where not valid


def _keep_where(mask: torch.Tensor, new, old):
    """Per-animal select between two rule states (tensors or tuples of tensors)."""
    if new is None:
        return None
    if isinstance(new, torch.Tensor):
        shape = (-1,) + (1,) * (new.dim() - 1)
        return torch.where(mask.reshape(shape) > 0, new, old)
    return type(new)(_keep_where(mask, n, o) for n, o in zip(new, old, strict=True))


def _detach(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


def rollout(
    rule: LearningRule,
    env: Environment,
    w: torch.Tensor,
    state=None,
    *,
    start: int = 0,
    stop: int | None = None,
    record: bool = False,
) -> RolloutResult:
    """Run policy and rule over trials ``start:stop`` of every animal: the package's trial loop.

    Fitting, scoring, prediction, simulation and interpretation all run this loop; the rules'
    compiled kernels are held equal to it by the tests.

    Parameters
    ----------
    rule : LearningRule
        The learning rule.
    env : Environment
        Where trials, choices and rewards come from: a :class:`TensorBatch` (teacher forcing,
        the animals' own choices), a :class:`Replay` or a :class:`~ibl_learnrules.simulate.
        Protocol` (free running: choices sampled from the policy).
    w : Tensor (B, K)
        Rule weights before trial ``start`` (the policy adds ``rule.policy_offset()``).
    state : optional
        Rule state before trial ``start``; ``rule.initial_state`` when left out at trial 0.
    start, stop : int
        Trial range (``stop`` defaults to ``env.n_trials``).
    record : bool
        Keep per-trial policy weights, p(right), choices and log-likelihoods.

    Returns
    -------
    RolloutResult
        Log-likelihood summed over the valid trials of the range (of the observed choices,
        or of the sampled ones when free running).

    Examples
    --------
    >>> import torch
    >>> from ibl_learnrules import featurize, simulate_cohort
    >>> from ibl_learnrules.rules import Reinforce
    >>> batch = TensorBatch.from_arrays(featurize(simulate_cohort(2, n_trials=100,
    ...                                 random_state=0)), torch.device("cpu"))
    >>> res = rollout(Reinforce(2, alpha=0.1), batch, torch.zeros(2, 2), record=True)
    >>> tuple(res.weights.shape), bool(torch.allclose(res.trial_loglik.sum(1), res.loglik))
    ((2, 100, 2), True)
    """
    stop = env.n_trials if stop is None else stop
    if state is None and start == 0:
        state = rule.initial_state(env.n_animals, w.device)
    with _one_cpu_thread(w.device):
        return _rollout(rule, env, w, state, start, stop, record)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run torch on one thread on the CPU: the trial loop's ops are far too small to share.

    With more threads each tiny op pays for waking them, and on a busy machine (numba's
    workers, other processes) that cost grows 10-30 fold.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rollout(rule, env, w, state, start, stop, record) -> RolloutResult:
    offset = rule.policy_offset()
    loglik = torch.zeros(env.n_animals, dtype=w.dtype, device=w.device)
    weights, p_right, choices, trial_ll = [], [], [], []
    for t in range(start, stop):
        x, correct_side, new_session, valid = env.trial(t)
        policy_w = w if offset is None else w + offset
        logit = (policy_w * x).sum(-1)
        p = torch.sigmoid(logit)
        y, reward = env.respond(t, p)
        ll = -valid * F.binary_cross_entropy_with_logits(logit, y, reduction="none")
        loglik = loglik + ll
        if record:
            weights.append(policy_w)
            p_right.append(p)
            choices.append(y)
            trial_ll.append(ll)
        dw, new_state = rule(w, TrialStep(x, y, reward, correct_side, new_session, p), state)
        # no-go trials and padding leave weights and state untouched
        w = w + valid.unsqueeze(-1) * dw
        state = _keep_where(valid, new_state, state)
    result = RolloutResult(loglik=loglik, w=w, state=state)
    if record:
        def stack(values, *shape):
            return torch.stack(values, 1) if values else w.new_zeros(env.n_animals, 0, *shape)
        result.weights = stack(weights, w.shape[-1])
        result.p_right, result.y, result.trial_loglik = (stack(p_right), stack(choices),
                                                         stack(trial_ll))
    return result


def initial_weights(arrays: TrialArrays, how: str = "zero", n_trials: int = 100) -> np.ndarray:
    """Each animal's starting weights (A, K): ``"zero"``, or ``"fitted"`` on its first trials.

    See :func:`fit_initial_weights`.
    """
    if how == "fitted":
        return fit_initial_weights(arrays, n_trials)
    return np.zeros((arrays.n_animals, arrays.x.shape[-1]))


def fit_initial_weights(arrays: TrialArrays, n_trials: int = 100, l2: float = 1.0) -> np.ndarray:
    """Per-animal starting weights: L2-regularised logistic regression on its first trials.

    A few Newton steps rather than scikit-learn's LogisticRegression, because an animal's
    first trials may hold a single choice (a strong bias), which that class refuses; the
    penalty keeps the solution finite either way.

    Parameters
    ----------
    arrays : TrialArrays
        The animals' trials.
    n_trials : int
        Number of first valid trials per animal to fit on.
    l2 : float
        Ridge penalty on the weights.

    Returns
    -------
    ndarray (n_animals, K)
    """
    n_animals, _, k = arrays.x.shape
    w0 = np.zeros((n_animals, k))
    for a in range(n_animals):
        idx = np.flatnonzero(arrays.valid[a])[:n_trials]
        x, y = arrays.x[a, idx], arrays.y[a, idx]
        w = np.zeros(k)
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-x @ w))
            grad = x.T @ (p - y) + l2 * w
            hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(k)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        w0[a] = w
    return w0


@dataclass
class TrainingHistory:
    """Per-epoch training record."""

    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int
    stopped_early: bool
    lr: list[float] = field(default_factory=list)  # Adam's rate in each epoch


def _to_numpy(state):
    """Convert a rule state (tensor, tuple of tensors or None) to numpy arrays."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().numpy()
    return type(state)(_to_numpy(s) for s in state)


class _KernelChunk(torch.autograd.Function):
    """A rule's chunk kernel seen by autograd as one function of the rule's parameters.

    Forward returns the chunk's loss ``-loglik.sum() / loss_norm`` and appends the kernel's
    result (carried weights and state) to ``carry``; backward hands out the gradients the
    kernel computed.
    """

    @staticmethod
    def forward(ctx, kernel, inputs, w, state, need_grad, loss_norm, carry, *params):
        result = kernel(inputs, w, state, need_grad, loss_norm)
        carry.append(result)
        ctx.grads = result.grads
        return params[0].new_tensor(-float(result.loglik.sum()) / loss_norm)

    @staticmethod
    def backward(ctx, grad_loss):
        grads = tuple(grad_loss * torch.as_tensor(g, dtype=grad_loss.dtype,
                                                  device=grad_loss.device)
                      for g in ctx.grads)
        return (None,) * 7 + grads


class ChunkRunner:
    """Runs one TBPTT chunk: log-likelihood, carried state and (optionally) gradients.

    The reference path calls :func:`rollout` under autograd; the kernel path calls the rule's
    own compiled chunk (:meth:`~ibl_learnrules.rules.LearningRule.chunk_kernel`, on the CPU)
    through one autograd function. Both leave the gradient of ``-loglik.sum() / loss_norm``
    in the parameters' ``.grad``. With ``free_running=True`` it runs the free-running
    likelihood instead (:func:`~ibl_learnrules.closed_loop.mean_field_rollout`, or the rule's
    :meth:`~ibl_learnrules.rules.LearningRule.mean_field_kernel`); ``free_weights`` (a (K,)
    0/1 mask) lets only some weights run free.
    """

    def __init__(self, rule: LearningRule, batch: TensorBatch, engine: str = "auto", *,
                 free_running: bool = False, free_weights: torch.Tensor | None = None):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
        self.rule, self.batch, self.free_running = rule, batch, free_running
        self.free_weights = free_weights
        kernel = None
        if batch.x.device.type == "cpu" and free_running:
            kernel = rule.mean_field_kernel(None if free_weights is None
                                            else free_weights.cpu().numpy())
        elif batch.x.device.type == "cpu":
            kernel = rule.chunk_kernel()
        if engine == "fused" and kernel is None:
            raise ValueError(f"engine='fused' needs a rule with a compiled kernel on the CPU; "
                             f"rule {rule.name!r} on {batch.x.device} has none"
                             + (" for free running" if free_running else ""))
        self.kernel = kernel if engine != "torch" else None
        self.fused = self.kernel is not None
        if free_running:  # imported here: closed_loop builds on this module
            from .closed_loop import mean_field_rollout
            self._rollout = functools.partial(mean_field_rollout, free=free_weights)
        else:
            self._rollout = rollout
        if self.fused:
            dtype = next(rule.parameters()).detach().numpy().dtype
            b = batch
            signs = torch.stack([b.y, b.reward, b.correct_side], -1) * 2.0 - 1.0
            u = torch.cat([b.x, signs, b.new_session.unsqueeze(-1)], -1)
            self._arrays = ChunkInputs(*(t.detach().cpu().numpy().astype(dtype) for t in (
                b.x, b.y, b.reward, b.correct_side, b.new_session, b.valid, u)))

    def start(self, w0: torch.Tensor):
        """Weights and state before the first trial, in this runner's representation."""
        state = self.rule.initial_state(self.batch.n_animals, w0.device)
        if not self.fused:
            return w0, state
        return w0.detach().cpu().numpy().astype(self._arrays.x.dtype), _to_numpy(state)

    def __call__(self, w, state, start: int, stop: int, need_grad: bool, loss_norm: float = 1.0):
        """Run trials ``start:stop``; return ``(loglik_sum, w, state)`` for the next chunk."""
        if not self.fused:
            with torch.set_grad_enabled(need_grad):
                res = self._rollout(self.rule, self.batch, w, state, start=start, stop=stop)
                if need_grad:
                    (-res.loglik.sum() / loss_norm).backward()
            return float(res.loglik.sum().detach()), res.w.detach(), _detach(res.state)
        inputs = ChunkInputs(*(np.ascontiguousarray(a[:, start:stop]) for a in self._arrays))
        carry: list = []
        with torch.set_grad_enabled(need_grad):
            loss = _KernelChunk.apply(self.kernel, inputs, w, state, need_grad, float(loss_norm),
                                      carry, *self.rule.parameters())
            if need_grad:
                loss.backward()
        result = carry[0]
        return float(result.loglik.sum()), result.w, result.state

    def only(self, animal: int) -> ChunkRunner:
        """Return this runner on one animal of its batch (to find who causes numerical trouble)."""
        return ChunkRunner(self.rule, self.batch.animal(animal),
                           "fused" if self.fused else "torch", free_running=self.free_running,
                           free_weights=self.free_weights)

    def policy_weights(self, w):
        """Return the GLM's weights: the carried ones (tensor or array) plus the rule's offset."""
        offset = self.rule.policy_offset()
        if offset is None:
            return w
        offset = offset.detach()
        return w + (offset.cpu().numpy() if isinstance(w, np.ndarray) else offset)


def _row(value, animal: int):
    """Animal ``animal``'s row of carried weights or state (tensor, array, tuple or None)."""
    if value is None:
        return None
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value[animal:animal + 1]
    return type(value)(_row(v, animal) for v in value)


def split_animals(n_animals: int, fraction: float,
                  rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``fraction`` of the animals (at least one, never all) for validation.

    Returns sorted indices ``(train, validation)``.

    Examples
    --------
    >>> train, val = split_animals(5, 0.2, np.random.RandomState(0))
    >>> len(train), len(val)
    (4, 1)
    """
    if n_animals < 2:
        raise ValueError("early_stopping needs at least 2 animals: one to validate on")
    n_val = min(max(1, round(fraction * n_animals)), n_animals - 1)
    order = rng.permutation(n_animals)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def progress_bar(total: int, desc: str, verbose: int) -> Callable | None:
    """Make a ``progress`` callback of :func:`train_rule` that draws a tqdm bar (or None)."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="epoch")

    def progress(epoch, train_loss, val_loss):
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.4f}",
                        **({} if math.isnan(val_loss) else {"val": f"{val_loss:.4f}"}))
        if epoch + 1 >= total:
            bar.close()

    return progress


def _mean_nll(runner: ChunkRunner, w0) -> float:
    w, state = runner.start(w0)
    loglik, _, _ = runner(w, state, 0, runner.batch.n_trials, need_grad=False)
    return -loglik / max(float(runner.batch.valid.sum()), 1.0)


LR_SCHEDULES = ("constant", "cosine")
#: Training loops: the rule's compiled kernel where it has one ("auto"), always ("fused"), never.
ENGINES = ("auto", "torch", "fused")


def check_lr_schedule(name: str) -> None:
    """Raise ValueError unless ``name`` is one of :data:`LR_SCHEDULES`."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {name!r}")


def _lr_schedule(optimizer, name: str, max_epochs: int):
    """Build the per-epoch learning-rate scheduler called ``name`` (None: constant)."""
    check_lr_schedule(name)
    if optimizer is None or name == "constant":
        return None
    # the chunks of an epoch span the whole of learning, from naive to expert, and every
    # one moves the parameters; only a falling step size lets them settle between them
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)


def _optimizer(rule: LearningRule, params: list, lr: float, weight_decay: float):
    """Adam; with ``weight_decay``, decoupled decay (AdamW) of the rule's correction only."""
    if not params:
        return None
    if not weight_decay:
        return torch.optim.Adam(params, lr=lr)
    shrunk = _correction(rule, params)
    groups = [{"params": shrunk, "weight_decay": weight_decay},
              {"params": [p for p in params if all(p is not q for q in shrunk)],
               "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _correction(rule: LearningRule, params: list) -> list:
    """Return the trained ones of ``rule.correction_parameters()`` (decay and prior)."""
    shrunk = {id(p) for p in rule.correction_parameters()}
    return [p for p in params if id(p) in shrunk]


class _TrainingState:
    """What changes from epoch to epoch; a snapshot of it at an epoch boundary is a checkpoint."""

    def __init__(self, rule: LearningRule, optimizer, schedule):
        self.rule, self.optimizer, self.schedule = rule, optimizer, schedule
        self.epoch = 0  # the next epoch to run
        self.history = TrainingHistory([], [], best_epoch=-1, stopped_early=False)
        self.best_loss, self.best_params, self.waited = math.inf, None, 0
        self.lr_cuts = 0

    def snapshot(self) -> dict:
        """Return a deep copy of the state: rule, optimiser, schedule, history, early stopping."""
        return copy.deepcopy({
            "epoch": self.epoch,
            "rule": self.rule.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "history": dataclasses.asdict(self.history),
            "best_loss": self.best_loss, "best_params": self.best_params,
            "waited": self.waited, "lr_cuts": self.lr_cuts})

    def restore(self, snapshot: dict) -> None:
        """Return to ``snapshot`` (of :meth:`snapshot`, or read from a checkpoint file)."""
        # the optimiser adopts the tensors it is given and updates them in place: give it copies
        snapshot = copy.deepcopy(snapshot)
        self.rule.load_state_dict(snapshot["rule"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(snapshot["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(snapshot["schedule"])
        self.epoch = snapshot["epoch"]
        self.history = TrainingHistory(**snapshot["history"])
        self.best_loss, self.best_params = snapshot["best_loss"], snapshot["best_params"]
        self.waited, self.lr_cuts = snapshot["waited"], snapshot["lr_cuts"]

    @property
    def finished(self) -> bool:
        """Whether training is over (in a resumed state too)."""
        return self.history.stopped_early

    def lower_lr(self, factor: float) -> float:
        """Multiply the learning rate (and the schedule's base) by ``factor``; return it."""
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        if self.schedule is not None:
            # cosine annealing rescales the current rate, so scaling both keeps its shape
            self.schedule.base_lrs = [lr * factor for lr in self.schedule.base_lrs]
        self.lr_cuts += 1
        return self.optimizer.param_groups[0]["lr"]


def _blame(runner: ChunkRunner, w, state, start: int, stop: int, need_grad: bool,
           max_weight: float, names: Sequence[str]) -> list[str]:
    """Animals whose chunk, run alone, shows the trouble (their own loss, weights, gradient)."""
    params = [p for p in runner.rule.parameters() if p.requires_grad]
    culprits = []
    for animal in range(runner.batch.n_animals):
        for p in params:
            p.grad = None
        loglik, w_end, _ = runner.only(animal)(_row(w, animal), _row(state, animal), start,
                                               stop, need_grad=need_grad)
        grads_ok = not need_grad or all_finite(p.grad for p in params)
        if (not (math.isfinite(loglik) and grads_ok)
                or weight_trouble(runner.policy_weights(w_end), max_weight)):
            culprits.append(names[animal])
    for p in params:
        p.grad = None
    return culprits


def _clip_gradient(params: list, grad_clip: float | None) -> bool:
    """Clip the parameters' gradient to norm ``grad_clip`` (if given); return whether finite."""
    if grad_clip is not None:
        return bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, grad_clip)))
    return all_finite(p.grad for p in params)


def _train_epoch(state: _TrainingState, runner: ChunkRunner, w0: torch.Tensor, chunks: list,
                 n_valid: list, params: list, grad_clip: float | None, max_weight: float,
                 names: Sequence[str], prior: _Prior | None = None,
                 guard: DriftGuard | None = None) -> float:
    """One pass over the training animals, one optimiser step per chunk; the mean loss.

    With a ``prior`` or a drift ``guard``, their gradients are added to every chunk's before
    clipping; the guard sees the weights and state every chunk ends with.

    Raises :class:`~ibl_learnrules.numerics.Trouble` at the first chunk in numerical trouble.
    """
    optimizer = state.optimizer
    w, carried = runner.start(w0)
    total = 0.0
    for (a, b), n in zip(chunks, n_valid, strict=True):
        learn = n > 0 and optimizer is not None
        if learn:
            optimizer.zero_grad()
        w_before, carried_before = w, carried
        loglik, w, carried = runner(w, carried, a, b, need_grad=learn, loss_norm=max(n, 1.0))
        if learn and prior is not None:
            prior.add_gradient()
        if learn and guard is not None:
            guard.add_gradient()
        if not math.isfinite(loglik):
            what = "non-finite loss"
        elif learn and not _clip_gradient(params, grad_clip):
            what = "non-finite gradient"
        else:
            what = weight_trouble(runner.policy_weights(w), max_weight)
        if what is not None:
            raise Trouble(state.epoch, f"trials {a}-{b}", what,
                          _blame(runner, w_before, carried_before, a, b, learn, max_weight,
                                 names))
        if guard is not None:  # only weights that passed the checks widen its box
            guard.observe(runner.policy_weights(w), carried)
        if learn:
            try:
                optimizer.step()
            except RuntimeError as err:  # Adam's step size itself overflows the dtype
                if "overflow" not in str(err):
                    raise
                raise Trouble(state.epoch, f"trials {a}-{b}", f"the optimiser step "
                              f"overflowed ({err})") from None
        total -= loglik
    if guard is not None:
        guard.end_epoch()
    # a bad step shows in the next chunk's loss and weights; after the last one, here
    offset = state.rule.policy_offset()
    if not all_finite(params):
        raise Trouble(state.epoch, "the last step", "parameters became non-finite")
    if offset is not None and weight_trouble(offset, max_weight):
        raise Trouble(state.epoch, "the last step", weight_trouble(offset, max_weight))
    return total / max(sum(n_valid), 1.0)


class _Prior:
    """Gaussian prior of precision ``precision`` on ``params``, shared over ``n_trials``.

    The prior adds ``precision / 2 * |theta|^2`` to the *total* negative log-likelihood of
    the training trials; every chunk's loss is a per-trial mean, so each step carries
    ``precision / n_trials`` of it. The pull thus weakens as the data grow: one mouse's
    sessions are shrunk toward the nested rule more than a cohort's.
    """

    def __init__(self, params: list, precision: float, n_trials: float):
        self.params = params
        self.coefficient = precision / max(n_trials, 1.0)

    def add_gradient(self) -> None:
        with torch.no_grad():
            for p in self.params:
                if p.grad is None:
                    p.grad = self.coefficient * p.detach()
                else:
                    p.grad.add_(p, alpha=self.coefficient)


def _validate(state: _TrainingState, runner: ChunkRunner, w0: torch.Tensor,
              names: Sequence[str]) -> float:
    """Mean loss of the validation animals; early-stopping bookkeeping."""
    val_loss = _mean_nll(runner, w0)
    if not math.isfinite(val_loss):
        raise Trouble(state.epoch, "validation", "non-finite loss",
                      _blame(runner, *runner.start(w0), 0, runner.batch.n_trials, False,
                             math.inf, names))
    state.history.val_loss.append(val_loss)
    if val_loss < state.best_loss - 1e-6:
        state.best_loss, state.waited = val_loss, 0
        state.best_params = copy.deepcopy(state.rule.state_dict())
        state.history.best_epoch = state.epoch
    else:
        state.waited += 1
    return val_loss


def _give_up(trouble: Trouble, state: _TrainingState) -> NumericalTroubleError:
    if state.optimizer is None:
        remedy = "the rule has nothing to train: check the inputs"
    else:
        remedy = (f"the learning rate was lowered {state.lr_cuts} time(s), to "
                  f"{state.optimizer.param_groups[0]['lr']:.3g}, without curing it: "
                  + ("check those animals' covariates, or " if trouble.animals else "")
                  + "start from a smaller lr or other rule_params")
    return NumericalTroubleError(f"training failed numerically at {trouble}; {remedy}")


def _on_one_cpu_thread(fit: Callable) -> Callable:
    """Run ``fit(rule, batch, w0, ...)`` with torch on one CPU thread (:func:`_one_cpu_thread`).

    Between chunks torch steps the optimiser over a few thousand numbers; with more threads
    their OpenMP workers spin afterwards on the cores the kernels' threads need.
    """

    @functools.wraps(fit)
    def on_one_thread(rule, batch, w0, *args, **kwargs):
        with _one_cpu_thread(w0.device):
            return fit(rule, batch, w0, *args, **kwargs)

    return on_one_thread


@_on_one_cpu_thread
def train_rule(
    rule: LearningRule,
    batch: TensorBatch,
    w0: torch.Tensor,
    *,
    max_epochs: int,
    lr: float,
    tbptt: int,
    lr_schedule: str = "constant",
    grad_clip: float | None = 1.0,
    val_batch: TensorBatch | None = None,
    val_w0: torch.Tensor | None = None,
    patience: int = 10,
    progress: Callable | None = None,
    engine: str = "auto",
    weight_decay: float = 0.0,
    correction_prior: float = 0.0,
    drift_guard: float = 0.0,
    checkpoint: Checkpoint | None = None,
    resume: dict | None = None,
    names: Sequence[str] | None = None,
    val_names: Sequence[str] | None = None,
    max_weight: float = WEIGHT_LIMIT,
    max_lr_cuts: int = MAX_LR_CUTS,
    lr_factor: float = LR_FACTOR,
    runner_class: Callable | None = None,
) -> TrainingHistory:
    """Fit ``rule`` in place by maximising the mean per-trial log-likelihood.

    Each epoch walks all animals through chunks of ``tbptt`` trials; after each chunk the
    loss (mean negative log-likelihood over that chunk's valid trials) is back-propagated
    through the chunk only, Adam takes a step, and the weights and state carry on detached.
    With a validation batch, training stops when its loss has not improved for ``patience``
    epochs, and the best parameters are restored.

    Every chunk is checked for numerical trouble (:mod:`ibl_learnrules.numerics`): a
    non-finite loss or gradient, or carried weights beyond ``max_weight``. On trouble the
    epoch is undone (parameters, optimiser and schedule back to its start), the learning rate
    is multiplied by ``lr_factor`` (a :class:`~ibl_learnrules.numerics.NumericalWarning` says
    where and why) and the epoch is run again; after ``max_lr_cuts`` such cuts a
    :class:`~ibl_learnrules.numerics.NumericalTroubleError` names the epoch and the animals.

    Parameters
    ----------
    rule : LearningRule
        Rule to train (its parameters change in place).
    batch : TensorBatch
        Training animals.
    w0 : Tensor (B, K)
        Their starting weights.
    max_epochs, lr, tbptt, grad_clip, patience
        Optimisation settings.
    lr_schedule : {"constant", "cosine"}
        ``"cosine"`` anneals the learning rate from ``lr`` to 0 over ``max_epochs`` (one
        step per epoch).
    val_batch, val_w0 : optional
        Validation animals and their starting weights (early stopping).
    progress : callable, optional
        Called as ``progress(epoch, train_loss, val_loss)`` after each epoch.
    engine : {"auto", "torch", "fused"}
        ``"auto"`` uses the rule's compiled kernel where it has one (on the CPU), the torch
        loop otherwise.
    weight_decay : float
        Decoupled weight decay (AdamW) of :meth:`LearningRule.correction_parameters` only:
        it shrinks a network's correction toward the rule it nests (or toward no update).
    correction_prior : float
        Precision of a Gaussian prior at zero on the same parameters: adds
        ``correction_prior / 2 * |theta|^2`` to the total negative log-likelihood of the
        training trials, so its pull falls as the number of trials grows.
    drift_guard : float
        Strength of a :class:`~ibl_learnrules.drift_guard.DriftGuard` on the same
        parameters: a penalty on the rule's expected update where it would carry weights
        further out of the range the training animals' weights span, widened by half of it
        (0: none).
    checkpoint : ibl_learnrules.checkpoint.Checkpoint, optional
        Save the training state there after every ``checkpoint.every`` epochs, after the
        last one, and when interrupted (Ctrl-C: the last completed epoch, then
        KeyboardInterrupt is raised again).
    resume : dict, optional
        A saved training state (``Checkpoint.load()["state"]``) to carry on from; the fit
        then ends with the very parameters of one that had never stopped.
    names, val_names : sequence of str, optional
        The animals' names in error messages (default: their positions in the batch).
    max_weight, max_lr_cuts, lr_factor
        Numerical trouble: the largest carried weight allowed, how many times the learning
        rate may be lowered, and by what factor.
    runner_class : callable, optional
        Builds the chunk runner as ``runner_class(rule, batch, engine)``; default
        :class:`ChunkRunner`. A noisy rule trains through
        :class:`~ibl_learnrules.filtering.FilterRunner`, whose carried weights are a belief.

    Returns
    -------
    TrainingHistory

    Examples
    --------
    >>> from ibl_learnrules import featurize, simulate_cohort
    >>> from ibl_learnrules.rules import Reinforce
    >>> batch = TensorBatch.from_arrays(featurize(simulate_cohort(2, n_trials=200,
    ...                                 random_state=0)), torch.device("cpu"))
    >>> hist = train_rule(Reinforce(2), batch, torch.zeros(2, 2), max_epochs=2, lr=0.01,
    ...                   tbptt=100)
    >>> len(hist.train_loss)
    2
    """
    params = [p for p in rule.parameters() if p.requires_grad]
    optimizer = _optimizer(rule, params, lr, weight_decay)
    schedule = _lr_schedule(optimizer, lr_schedule, max_epochs)
    runner_class = ChunkRunner if runner_class is None else runner_class
    runner = runner_class(rule, batch, engine)
    val_runner = None if val_batch is None else runner_class(rule, val_batch, engine)
    chunks = [(s, min(s + tbptt, batch.n_trials)) for s in range(0, batch.n_trials, tbptt)]
    n_valid = [float(batch.valid[:, a:b].sum()) for a, b in chunks]
    shrunk = _correction(rule, params)
    prior = _Prior(shrunk, correction_prior, sum(n_valid)) if correction_prior and shrunk else None
    guard = None
    if drift_guard and shrunk:
        valid = batch.valid.bool()
        guard = DriftGuard(rule, shrunk, batch.x[valid], batch.correct_side[valid], drift_guard)
    names = list(names) if names is not None else [f"#{i}" for i in range(batch.n_animals)]
    if val_batch is not None:
        val_names = (list(val_names) if val_names is not None
                     else [f"validation #{i}" for i in range(val_batch.n_animals)])
    state = _TrainingState(rule, optimizer, schedule)
    if resume is not None:
        state.restore(resume)
    good = state.snapshot()  # the last epoch boundary: where trouble and Ctrl-C return to
    try:
        while state.epoch < max_epochs and not state.finished:
            epoch = state.epoch
            epoch_lr = None if optimizer is None else optimizer.param_groups[0]["lr"]
            try:
                train_loss = _train_epoch(state, runner, w0, chunks, n_valid, params,
                                          grad_clip, max_weight, names, prior, guard)
                if schedule is not None:
                    schedule.step()
                val_loss = (math.nan if val_runner is None
                            else _validate(state, val_runner, val_w0, val_names))
            except Trouble as trouble:
                state.restore(good)
                if optimizer is None or state.lr_cuts >= max_lr_cuts:
                    raise _give_up(trouble, state) from None
                new_lr = state.lower_lr(lr_factor)
                warnings.warn(f"numerical trouble at {trouble}; the epoch is run again with "
                              f"learning rate {new_lr:.3g}", NumericalWarning, stacklevel=2)
                good = state.snapshot()
                continue
            state.history.train_loss.append(train_loss)
            if epoch_lr is not None:
                state.history.lr.append(epoch_lr)
            state.history.stopped_early = val_runner is not None and state.waited >= patience
            state.epoch += 1
            good = state.snapshot()
            if checkpoint is not None and checkpoint.due(epoch, state.epoch >= max_epochs
                                                         or state.finished):
                checkpoint.save(good)
            if progress is not None:
                progress(epoch, train_loss, val_loss)
    except KeyboardInterrupt:
        if checkpoint is not None:
            checkpoint.save(good)
        raise
    history = state.history
    if state.best_params is not None:
        rule.load_state_dict(state.best_params)
    else:
        history.best_epoch = len(history.train_loss) - 1
    # cannot happen after the checks; never hand out NaN. A fixed parameter may be infinite
    # on purpose (the log of a noise sd fixed at 0), a trained one may not.
    trained = [p for p in rule.parameters() if p.requires_grad]
    if not all_finite(trained) or any(bool(torch.isnan(p).any()) for p in rule.parameters()):
        raise NumericalTroubleError("training ended with non-finite parameters")
    return history
