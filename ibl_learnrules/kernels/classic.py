"""Compiled CPU kernels for training the classic rules over one TBPTT chunk.

The classic rules have few parameters (P <= 2K + 1), so these kernels differentiate forward:
alongside the weights ``w`` and the rule's state they carry the tangents ``dw/dtheta`` (K, P)
and ``dstate/dtheta``, and add each trial's ``(y - p) * x . dpolicy_w/dtheta`` to the
gradient of the log-likelihood. No trajectory is stored and there is no backward pass. TBPTT
detaches the weights and state between chunks, so the tangents start at zero in each chunk.

One driver (:func:`_chunk`, on groups of animals in threads when a chunk is big enough to pay
for them: :mod:`ibl_learnrules.kernels.threads`) runs the policy and the likelihood for every
rule; a small step function per rule applies the update and its hand-derived partials. The
rule is chosen by an integer code (the constants below) rather than by passing the step
function in, because numba cannot cache a function that takes another as an argument (nor a
closure).

``theta`` is the flat concatenation of ``list(rule.parameters())`` (logs where the rule
stores logs); the state is flattened per animal to (B, M): nothing for the Markovian rules,
``[q_right, q_left]`` (2K) for ``q_learning``, the run of rewards (1) for ``reward_history``.
``reinforce_baseline_leak``'s leak is applied first, from the weights before the trial: it
scales their tangents by ``1 - leak`` and adds its own partials by ``log_leak`` and ``rest``.
``reinforce_baseline_leak_side`` adds ``eta (2c - 1) x`` last (``eta`` stored as its log).
The ``MEAN_FIELD_*`` codes run these three rules free (their expected update, for
:func:`ibl_learnrules.closed_loop.mean_field_rollout`) through the same driver; a 0/1 mask
``free`` (K,) keeps the weights marked 0 on the teacher-forced update, the animal's own choice
and reward (``mean_field_rollout(free=...)``).

Precision: the kernel works in the dtype of its inputs (the rule's parameters: float32 by
default, float64 in the equality tests). Weights, state and tangents are held in that dtype,
as the reference holds them; scalar intermediates of a trial may be computed in float64
(numba promotes float literals). The log-likelihood and the gradient are summed over trials
in float64, and the outputs are cast back to the input dtype.

The torch modules in :mod:`ibl_learnrules.rules.classic` remain the definition of the rules;
``tests/test_kernels.py`` checks these kernels against :func:`ibl_learnrules.engine.rollout`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from .neural import _log_sigmoid, _sigmoid
from .threads import over_animals

__all__ = [
    "NONE",
    "REINFORCE",
    "REINFORCE_BASELINE",
    "REWARD_MAX",
    "PREDICTION_ERROR",
    "Q_LEARNING",
    "REWARD_HISTORY",
    "REINFORCE_BASELINE_LEAK",
    "REINFORCE_BASELINE_LEAK_SIDE",
    "MEAN_FIELD_BASELINE",
    "MEAN_FIELD_LEAK",
    "MEAN_FIELD_LEAK_SIDE",
    "classic_chunk",
]

#: Rule codes: which step function the driver applies.
(NONE, REINFORCE, REINFORCE_BASELINE, REWARD_MAX, PREDICTION_ERROR, Q_LEARNING, REWARD_HISTORY,
 REINFORCE_BASELINE_LEAK, REINFORCE_BASELINE_LEAK_SIDE) = range(9)
#: The free-running (mean-field) versions of the REINFORCE-with-baseline family: the update
#: expected under the policy's own choice, ``p dw(right) + (1 - p) dw(left)``, where ``beta``
#: cancels and REINFORCE's part is ``alpha p (1 - p) (2c - 1) x``. Same parameters.
MEAN_FIELD_BASELINE, MEAN_FIELD_LEAK, MEAN_FIELD_LEAK_SIDE = range(9, 12)

# no fastmath: the work per trial is a few dozen flops, and the equality tests ask for 1e-10
_JIT = dict(cache=True, nogil=True)
#: Animal-trials per thread below which a chunk runs on one thread. A trial costs ~50 ns, so
#: a typical chunk (12 animals x 500 trials) takes ~0.3 ms alone; waking the other threads
#: gains little then, and on a busy machine a descheduled worker can stall it for far longer.
_WORK_PER_THREAD = 200_000


@numba.njit(inline="always")
def _leaks(rule):
    return (rule == REINFORCE_BASELINE_LEAK or rule == REINFORCE_BASELINE_LEAK_SIDE
            or rule == MEAN_FIELD_LEAK or rule == MEAN_FIELD_LEAK_SIDE)


@numba.njit(inline="always")
def _sides(rule):
    return rule == REINFORCE_BASELINE_LEAK_SIDE or rule == MEAN_FIELD_LEAK_SIDE


@numba.njit(cache=True)
def _natural(rule, theta, K):
    """Parameters as the rules use them: the rates (q-learning's beta, the leaks) exponentiated."""
    par = theta.copy()
    if rule != NONE:
        for k in range(K):
            par[k] = np.exp(theta[k])
    if rule == Q_LEARNING:
        par[K] = np.exp(theta[K])
    if _leaks(rule):
        for k in range(2 * K, 3 * K):
            par[k] = np.exp(theta[k])
    if _sides(rule):
        for k in range(4 * K, 5 * K):
            par[k] = np.exp(theta[k])
    return par


@numba.njit(inline="always")
def _leak_step(par, K, v, w, Jw, need_grad):
    """``w -= v * leak * (w - rest)`` (parameters 2K.. and 3K..) and its tangent."""
    for k in range(K):
        leak = par[2 * K + k]
        away = w[k] - par[3 * K + k]
        if need_grad:
            keep = 1.0 - v * leak
            for j in range(Jw.shape[1]):
                Jw[k, j] *= keep
            Jw[k, 2 * K + k] -= v * leak * away  # d / d log_leak
            Jw[k, 3 * K + k] += v * leak
        w[k] -= v * leak * away


@numba.njit(inline="always")
def _side_step(par, K, xt, side, v, w, Jw, need_grad):
    """``w += v * eta * side * x`` (``eta`` = parameters 4K.., stored as logs).

    No weight enters the step, so only its own parameter's tangent does: d / d log_eta = step.
    """
    for k in range(K):
        step = v * par[4 * K + k] * side * xt[k]
        if need_grad:
            Jw[k, 4 * K + k] += step
        w[k] += step


@numba.njit(inline="always")
def _rate_update(par, K, xt, v, pp, g, gp, gb, gg, has_beta, has_gamma, dz, w, Jw, need_grad):
    """``w += v * alpha * g * x`` and its tangent, for a gain ``g`` per weight.

    ``gp`` is dg/dp (``pp`` = dp/dz = p (1 - p)); ``gb`` and ``gg`` are the direct partials of
    ``g`` by the weight's own ``beta`` (parameter K + k) and by ``gamma`` (parameter 2K).
    ``alpha`` is parameter k, stored as its log: d dw / d log_alpha = dw.
    """
    P = Jw.shape[1]
    for k in range(K):
        ax = par[k] * xt[k]
        dw = ax * g[k]
        if need_grad:
            c = v * ax * gp[k] * pp
            for j in range(P):
                Jw[k, j] += c * dz[j]
            Jw[k, k] += v * dw
            if has_beta:
                Jw[k, K + k] += v * ax * gb[k]
            if has_gamma:
                Jw[k, 2 * K] += v * ax * gg[k]
        w[k] += v * dw


@numba.njit(inline="always")
def _q_step(par, K, xt, yt, rt, v, w, Jw, s, Js, dvr, dvl, need_grad):
    """Q-learning: the chosen side's values move by ``alpha (r - q_a . x) x``.

    ``s = [q_right, q_left]``; parameters ``log_alpha`` (K) then ``log_beta``. The values do
    not depend on the policy, so neither do their tangents.
    """
    P = Jw.shape[1]
    vr = 0.0
    vl = 0.0
    for k in range(K):
        vr += s[k] * xt[k]
        vl += s[K + k] * xt[k]
    dr = (rt - vr) * yt
    dl = (rt - vl) * (1.0 - yt)
    if need_grad:  # d delta_a / d theta, from the old values' tangents
        for j in range(P):
            gr = 0.0
            gl = 0.0
            for k in range(K):
                gr += xt[k] * Js[k, j]
                gl += xt[k] * Js[K + k, j]
            dvr[j] = -yt * gr
            dvl[j] = -(1.0 - yt) * gl
    qb = par[K]
    for k in range(K):
        ax = par[k] * xt[k]
        dqr = par[k] * dr * xt[k]
        dql = par[k] * dl * xt[k]
        dw = qb * (dqr - dql)
        if need_grad:
            for j in range(P):
                ddr = ax * dvr[j]
                ddl = ax * dvl[j]
                if j == k:
                    ddr += dqr
                    ddl += dql
                Js[k, j] += ddr
                Js[K + k, j] += ddl
                Jw[k, j] += v * qb * (ddr - ddl)
            Jw[k, K] += v * dw
        w[k] += v * dw
        s[k] += dqr
        s[K + k] += dql


@numba.njit(inline="always")
def _step(rule, par, K, max_run, free, xt, yt, rt, ct, nt, v, p, dz, w, Jw, s, Js, g, gp, gb,
          gg, dvr, dvl, need_grad):
    """Apply the rule's update after one valid trial (in place), with its tangents."""
    if rule == NONE:
        return
    if rule == Q_LEARNING:
        _q_step(par, K, xt, yt, rt, v, w, Jw, s, Js, dvr, dvl, need_grad)
        return
    has_beta = False
    has_gamma = False
    if rule == REINFORCE:
        for k in range(K):
            g[k] = rt * (yt - p)
            gp[k] = -rt
    elif rule == REWARD_MAX:
        sign = 2.0 * ct - 1.0
        for k in range(K):
            g[k] = sign * p * (1.0 - p)
            gp[k] = sign * (1.0 - 2.0 * p)
    elif rule == PREDICTION_ERROR:
        sign = 2.0 * yt - 1.0
        chosen = yt * p + (1.0 - yt) * (1.0 - p)
        for k in range(K):
            g[k] = (rt - chosen) * sign
            gp[k] = -sign * sign
    elif rule == MEAN_FIELD_BASELINE or rule == MEAN_FIELD_LEAK or rule == MEAN_FIELD_LEAK_SIDE:
        if _leaks(rule):
            _leak_step(par, K, v, w, Jw, need_grad)
        has_beta = True  # a weight held to teacher forcing keeps its baseline
        sign = 2.0 * ct - 1.0
        for k in range(K):
            if free[k] > 0:
                g[k] = sign * p * (1.0 - p)
                gp[k] = sign * (1.0 - 2.0 * p)
                gb[k] = 0.0
            else:
                g[k] = (rt - par[K + k]) * (yt - p)
                gp[k] = -(rt - par[K + k])
                gb[k] = -(yt - p)
    elif (rule == REINFORCE_BASELINE or rule == REINFORCE_BASELINE_LEAK
          or rule == REINFORCE_BASELINE_LEAK_SIDE):
        if _leaks(rule):
            # from the weights before the trial: REINFORCE's step only adds to them
            _leak_step(par, K, v, w, Jw, need_grad)
        has_beta = True
        for k in range(K):
            g[k] = (rt - par[K + k]) * (yt - p)
            gp[k] = -(rt - par[K + k])
            gb[k] = -(yt - p)
    elif rule == REWARD_HISTORY:
        has_beta = True
        has_gamma = True
        run = 0.0 if nt > 0 else s[0]
        m = min(run, max_run)
        scale = 1.0 + par[2 * K] * m
        for k in range(K):
            rb = rt - par[K + k]
            g[k] = rb * scale * (yt - p)
            gp[k] = -rb * scale
            gb[k] = -scale * (yt - p)
            gg[k] = rb * m * (yt - p)
        # the run depends on no parameter: it has no tangent
        s[0] = run + 1.0 if rt > 0 else 0.0
    _rate_update(par, K, xt, v, p * (1.0 - p), g, gp, gb, gg, has_beta, has_gamma, dz, w, Jw,
                 need_grad)
    if _sides(rule):
        _side_step(par, K, xt, 2.0 * ct - 1.0, v, w, Jw, need_grad)


@numba.njit(**_JIT)
def _chunk(first, stop, rule, x, y, reward, correct_side, new_session, valid, w0, s0, par,
           max_run, free, need_grad, loglik, grad, w_end, s_end):
    """Fill the output rows of animals ``first`` to ``stop - 1`` (:func:`classic_chunk`)."""
    T, K = x.shape[1], x.shape[2]
    P = par.shape[0]
    M = s0.shape[1]
    for a in range(first, stop):
        w = w0[a].copy()
        s = s0[a].copy()
        # summed per trial in the animal's own memory: rows of shared outputs written on
        # every trial would bounce their cache lines between threads
        loglik_a = 0.0
        grad_a = np.zeros(P)
        Jw = np.zeros((K, P), dtype=w0.dtype)
        Js = np.zeros((M, P), dtype=w0.dtype)
        dz = np.zeros(P)
        g = np.zeros(K)
        gp = np.zeros(K)
        gb = np.zeros(K)
        gg = np.zeros(K)
        dvr = np.zeros(P)
        dvl = np.zeros(P)
        for t in range(T):
            v = valid[a, t]
            if v == 0:
                continue  # no-go and padding: no likelihood, weights and state untouched
            xt = x[a, t]
            yt = y[a, t]
            z = 0.0
            for k in range(K):
                pw = w[k] + par[k] if rule == NONE else w[k]
                z += pw * xt[k]
            p = _sigmoid(z)
            loglik_a += v * (_log_sigmoid(z) if yt > 0.5 else _log_sigmoid(-z))
            if need_grad:
                # dz/dtheta through the weights, and through NoLearning's offset (= theta)
                for j in range(P):
                    acc = 0.0
                    for k in range(K):
                        acc += xt[k] * Jw[k, j]
                    dz[j] = acc
                if rule == NONE:
                    for k in range(K):
                        dz[k] += xt[k]
                e = v * (yt - p)
                for j in range(P):
                    grad_a[j] += e * dz[j]
            _step(rule, par, K, max_run, free, xt, yt, reward[a, t], correct_side[a, t],
                  new_session[a, t], v, p, dz, w, Jw, s, Js, g, gp, gb, gg, dvr, dvl, need_grad)
        w_end[a] = w
        s_end[a] = s
        loglik[a] = loglik_a
        grad[a] = grad_a


def classic_chunk(
    rule: int,
    x: np.ndarray,
    y: np.ndarray,
    reward: np.ndarray,
    correct_side: np.ndarray,
    new_session: np.ndarray,
    valid: np.ndarray,
    w0: np.ndarray,
    state: np.ndarray | None,
    params: Sequence[np.ndarray],
    need_grad: bool = True,
    loss_norm: float = 1.0,
    max_run: int = 0,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[np.ndarray] | None]:
    """Run a classic rule over a chunk of trials; see the module docstring.

    Parameters
    ----------
    rule : int
        Rule code (:data:`NONE`, :data:`REINFORCE`, ...).
    x, y, reward, correct_side, new_session, valid : ndarray
        Chunk inputs, (B, T, K) and (B, T), all of one float dtype.
    w0 : ndarray (B, K)
        Rule weights before the chunk's first trial.
    state : ndarray or None
        Rule state before the chunk, (B, ...) as the torch rule holds it.
    params : sequence of ndarray
        The rule's parameters, in the order of ``rule.parameters()``.
    need_grad : bool
        Also compute the gradients.
    loss_norm : float
        The loss is ``-loglik.sum() / loss_norm``; gradients are of that loss.
    max_run : int
        ``reward_history``'s cap on the run of rewards.
    free : ndarray (K,) of 0/1, optional
        The ``MEAN_FIELD_*`` codes' weights that run free; those marked 0 follow the animal's
        choices. ``None``: all free. Other codes ignore it.

    Returns
    -------
    loglik : ndarray (B,)
    w_end : ndarray (B, K)
    state_end : ndarray or None
        Shaped as ``state``.
    grads : list of ndarray or None
        Shaped as ``params``.
    """
    dtype = x.dtype

    def arr(a):
        return np.ascontiguousarray(a, dtype=dtype)

    n_animals, n_trials = x.shape[:2]
    flat_state = (np.zeros((n_animals, 0), dtype) if state is None
                  else arr(state).reshape(n_animals, -1))
    theta = np.concatenate([np.ravel(arr(p)) for p in params]).astype(dtype)
    free = np.ones(x.shape[2]) if free is None else np.asarray(free, dtype=np.float64)
    par = _natural(int(rule), theta, x.shape[2])
    loglik = np.zeros(n_animals)
    grad = np.zeros((n_animals, theta.shape[0]))
    w_end = np.empty_like(arr(w0))
    s_end = np.empty_like(flat_state)
    over_animals(_chunk, n_animals, n_trials, _WORK_PER_THREAD, int(rule), arr(x), arr(y),
                 arr(reward), arr(correct_side), arr(new_session), arr(valid), arr(w0),
                 flat_state, par, float(max_run), free, bool(need_grad), loglik, grad, w_end,
                 s_end)
    # summed over animals in a fixed order, so that results do not depend on the threads
    grad = _summed_loss_gradient(grad, float(loss_norm))
    state_end = None if state is None else s_end.reshape(np.shape(state))
    grads = None
    if need_grad:
        grads, start = [], 0
        for p in params:
            size = int(np.size(p))
            grads.append(grad[start:start + size].astype(dtype).reshape(np.shape(p)))
            start += size
    return loglik.astype(dtype), w_end, state_end, grads


@numba.njit(cache=True)
def _summed_loss_gradient(grad, loss_norm):
    """Return the loss's gradient ``-sum_a grad[a] / loss_norm``, animals summed in order."""
    total = np.zeros(grad.shape[1])
    for a in range(grad.shape[0]):
        for j in range(grad.shape[1]):
            total[j] -= grad[a, j] / loss_norm
    return total
