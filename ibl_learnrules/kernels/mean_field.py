"""Compiled CPU kernels of the network rules' free-running (mean-field) likelihood over a chunk.

The weights move by the update expected under the rule's own policy (see
:mod:`ibl_learnrules.closed_loop`): the network is evaluated for both choices, with the
reward each would have earned, and its outputs are mixed by p(right),

    dw = scale * (p out(right) + (1 - p) out(left)) + alpha p (1 - p) (2c - 1) x,

the last term being REINFORCE-with-baseline's expected update (its baseline cancels). The
``rnn`` rule's GRU state is mixed the same way, ``h_{t+1} = p h(right) + (1 - p) h(left)``
(unchanged on no-go trials), so both branches of a trial start from the one mixed state. The
animal's choices are only scored. Back-propagation runs by hand as in
:mod:`ibl_learnrules.kernels.neural`, whose helpers these kernels share; on top of the two
branches, the path through the mixing weight p reaches w_t. ``tests/test_closed_loop.py``
holds both kernels equal to :func:`ibl_learnrules.closed_loop.mean_field_rollout`.

Both kernels also run a third branch, the animal's own choice and reward, when some
weights are held to teacher forcing (``free_weights``); the ``rnn``'s starts from the mixed
state, and its next state is dropped (the state runs free). The ``dnn`` kernel computes the
corrections of a ``dnn`` centred or gated on the policy (``DNNRule(centre=..., gate=...)``),
which need both choices' outputs on every trial: with no weight free it is that rule's
teacher-forced chunk (:func:`dnn_centred_chunk`, held to the torch loop by
``tests/test_kernels.py``).
"""

from __future__ import annotations

import numba
import numpy as np

from .neural import (
    _JIT,
    GATE_ON_P,
    WORK_PER_THREAD,
    _affine,
    _back_base,
    _back_base_policy,
    _back_gate_weight,
    _back_gru_step,
    _back_leak,
    _back_output,
    _back_policy,
    _back_tanh,
    _base_gain,
    _cast,
    _dots,
    _gate_input,
    _gate_slope,
    _gated_scale,
    _gru_step,
    _leak,
    _policy,
    _store_rows,
    _sum_outer,
    _tanh_layer,
    _zero_rows,
    gate_codes,
    loss_weight,
    outputs,
    summed,
    transposed,
)
from .threads import over_animals

__all__ = ["dnn_centred_chunk", "dnn_mean_field_chunk", "rnn_mean_field_chunk"]


@numba.njit(inline="always")
def _branch_inputs(inp, t, side):
    """Make the left branch's network input of trial ``t`` from the right one's [w, u].

    Branch 0 chose right and earned the reward sign ``side`` (= 2c - 1), branch 1 left and
    ``-side``; everything else the two share.
    """
    K = (inp.shape[2] - 4) // 2
    one = _cast(side, 1.0)
    for j in range(inp.shape[2]):
        inp[1, t, j] = inp[0, t, j]
    inp[0, t, 2 * K] = one
    inp[0, t, 2 * K + 1] = side
    inp[1, t, 2 * K] = -one
    inp[1, t, 2 * K + 1] = -side


@numba.njit(inline="always")
def _branch_shares(p_t, mix_k, even_k):
    """Weights of the right and left branches' outputs in weight k's update.

    The outputs mixed by p times ``mix_k`` plus their plain average times ``even_k``.
    """
    half = _cast(p_t, 0.5)
    return (mix_k * p_t + even_k * half,
            mix_k * (_cast(p_t, 1.0) - p_t) + even_k * half)


@numba.njit(inline="always")
def _mixed_update(w, v, scale, alpha, out_t, p_t, side, x_t, free, mix, even):
    """Add trial t's expected update to ``w``: the branches' outputs ``out_t`` (2, K) mixed.

    The classic part only to the weights that run free (``free[k]`` 1; 0 leaves the weight to
    the taught update); the network's outputs mixed by p times ``mix[k]``, and their plain
    average times ``even[k]`` (see :func:`dnn_mean_field_chunk`).
    """
    base = p_t * (_cast(p_t, 1.0) - p_t) * side
    for k in range(w.shape[0]):
        right, left = _branch_shares(p_t, mix[k], even[k])
        net = right * out_t[0, k] + left * out_t[1, k]
        w[k] += v * (scale[k] * net + free[k] * alpha[k] * base * x_t[k])


@numba.njit(inline="always")
def _back_mixed_update(gw, scale, alpha, out_t, p_t, side, x_t, go_t, gls_a, gla_a, free, mix,
                       even):
    """Back through :func:`_mixed_update` from ``gw`` = d loss / d w_{t+1}.

    Sets the branches' output gradients ``go_t`` (2, K) and accumulates those of log-scale
    and log-alpha; returns d loss / d p_t through the mixing and the classic part.
    """
    one = _cast(p_t, 1.0)
    gp = _cast(p_t, 0.0)
    for k in range(gw.shape[0]):
        g = gw[k] * scale[k]
        gs = mix[k] * g
        right, left = _branch_shares(p_t, mix[k], even[k])
        go_t[0, k] = g * right
        go_t[1, k] = g * left
        gls_a[k] += np.float64(go_t[0, k] * out_t[0, k] + go_t[1, k] * out_t[1, k])
        gla_a[k] += np.float64(free[k] * gw[k] * alpha[k] * p_t * (one - p_t) * side * x_t[k])
        gp += gs * (out_t[0, k] - out_t[1, k])
        gp += free[k] * gw[k] * alpha[k] * (one - (p_t + p_t)) * side * x_t[k]
    return gp


@numba.njit(inline="always")
def _taught_update(w, v, scale, alpha, beta, out_t, u_t, y_t, p_t, x_t, free):
    """Add the teacher-forced update to the weights that do not run free.

    ``out_t`` (K,) is the network's output for the animal's own choice and reward.
    """
    for k in range(w.shape[0]):
        base = _base_gain(alpha, beta, k, u_t, y_t, p_t) * x_t[k]
        w[k] += (1 - free[k]) * v * (scale[k] * out_t[k] + base)


@numba.njit(inline="always")
def _back_taught_update(gw, g_taught, scale, alpha, beta, out_t, go_t, u_t, x_t, y_t, p_t,
                        free, gls_a, gla_a, gbeta_a):
    """Back through :func:`_taught_update` from ``gw`` = d loss / d w_{t+1}.

    Sets the taught branch's output gradient ``go_t`` (K,) (``g_taught`` is scratch) and
    accumulates those of log-scale, log-alpha and beta; returns ``c`` of
    :func:`~ibl_learnrules.kernels.neural._back_base` (the classic part's path through p).
    """
    for k in range(gw.shape[0]):
        g_taught[k] = (1 - free[k]) * gw[k]
    _back_output(g_taught, scale, out_t, go_t, gls_a)
    return _back_base(g_taught, alpha, beta, u_t, x_t, y_t, p_t, gla_a, gbeta_a)


@numba.njit(inline="always")
def _gated_sum(gw, scale, out_t, p_t, free, mix, even, only):
    """``sum_k gw_k scale_k net_k``: the network's gated share of the update, before the gate.

    ``out_t`` holds the branches' outputs (right, left[, the animal's]); ``only`` >= 0: the
    share of that weight alone.
    """
    s = _cast(p_t, 0.0)
    for k in range(gw.shape[0]):
        if only >= 0 and k != only:
            continue
        right, left = _branch_shares(p_t, mix[k], even[k])
        net = right * out_t[0, k] + left * out_t[1, k]
        if out_t.shape[0] > 2:
            net += (1 - free[k]) * out_t[2, k]
        s += gw[k] * scale[k] * net
    return s


@numba.njit(inline="always")
def _back_mixing_weight(gw, gp, p_t, x_t):
    """Add to ``gw`` the path of d loss / d p_t, ``gp``, to w_t: dp / dw = p (1 - p) x."""
    s = gp * p_t * (_cast(p_t, 1.0) - p_t)
    for k in range(gw.shape[0]):
        gw[k] += s * x_t[k]


@numba.njit(**_JIT)
def _dnn_mean_field_chunk(first, stop, x, u, y, valid, w0, scale, W1, W1T, b1, W2, W2T, b2, W3,
                          b3, alpha, beta, leak, rest, free, mix, even, order, gate_on, only,
                          need_grad, inv_norm, loglik, w_end, gW1, gb1, gW2, gb2, gW3, gb3, gls,
                          gla, gbeta, gll, grest):
    """Fill the output rows of animals ``first`` to ``stop - 1`` (:func:`dnn_mean_field_chunk`)."""
    T, K = x.shape[1], x.shape[2]
    # a third branch, the animal's own choice and reward, for the weights that do not run free
    taught = free.min() < 1
    nb = 3 if taught else 2
    # the two choices' branches, unless no weight uses them (a gated dnn taught throughout)
    first_branch = 0 if np.abs(mix).max() > 0 or np.abs(even).max() > 0 else 2
    H, D = W1.shape
    dt = x.dtype
    no_bias = np.zeros(H, dt)
    zero = _cast(scale[0], 0.0)
    for a in range(first, stop):
        # branch 0: the choice right, branch 1: left, [branch 2: the animal's]
        inp = np.empty((nb, T, D), dt)
        h1 = np.empty((nb, T, H), dt)
        h2 = np.empty((nb, T, H), dt)
        out = np.zeros((nb, T, K), dt)  # zeros in skipped branches: they weigh 0 * 0
        p = np.empty(T, dt)
        pre = np.empty(H, dt)
        sc = np.empty(K, dt)  # the output scale, times the gate
        w = w0[a].copy()
        loglik_a = 0.0  # summed here, stored once: see _zero_rows
        gls_a, gla_a, gbeta_a, gll_a, grest_a = _zero_rows(K)
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[0, t])
            loglik_a += ll
            _gated_scale(scale, _gate_input(p[t], inp[0, t], gate_on), order, only, sc)
            if taught:
                inp[2, t] = inp[0, t]
            _branch_inputs(inp, t, u[a, t, K + 2])
            for b in range(first_branch, nb):
                _affine(W1T, b1, inp[b, t], pre)
                _tanh_layer(pre, h1[b, t])
                _affine(W2T, b2, h1[b, t], pre)
                _tanh_layer(pre, h2[b, t])
                _dots(W3, b3, h2[b, t], out[b, t])
            if taught:  # from the weights before the trial, as the mixed update
                _taught_update(w, v, sc, alpha, beta, out[2, t], u[a, t], y[a, t], p[t],
                               x[a, t], free)
            _mixed_update(w, v, sc, alpha, out[:2, t], p[t], u[a, t, K + 2], x[a, t], free,
                          mix, even)
            _leak(w, v, leak, rest, inp[0, t])
        w_end[a] = w
        loglik[a] = loglik_a
        if not need_grad:
            continue
        go = np.zeros((nb, T, K), dt)
        g2 = np.zeros((nb, T, H), dt)
        g1 = np.zeros((nb, T, H), dt)
        gw = np.zeros(K, dt)  # d loss / d w_{t+1}
        g_taught = np.zeros(K, dt)  # its part that reaches the taught update
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue
            q = _gate_input(p[t], inp[0, t], gate_on)
            _gated_scale(scale, q, order, only, sc)
            gq = zero  # d loss / d q, q the gate's probability
            if order > 0:
                gq = _gate_slope(q, order) * _gated_sum(gw, scale, out[:, t], p[t], free, mix,
                                                        even, only)
            gp_gate = gq if gate_on == GATE_ON_P else zero
            gp = _back_mixed_update(gw, sc, alpha, out[:2, t], p[t], u[a, t, K + 2],
                                    x[a, t], go[:2, t], gls_a, gla_a, free, mix, even)
            gp += gp_gate
            c = 0.0
            if taught:
                c = _back_taught_update(gw, g_taught, sc, alpha, beta, out[2, t], go[2, t],
                                        u[a, t], x[a, t], y[a, t], p[t], free, gls_a, gla_a,
                                        gbeta_a)
            for b in range(first_branch, nb):
                _affine(W3, no_bias, go[b, t], g2[b, t])
                _back_tanh(g2[b, t], h2[b, t])
                _affine(W2, no_bias, g2[b, t], g1[b, t])
                _back_tanh(g1[b, t], h1[b, t])
            _back_leak(gw, leak, rest, inp[0, t], gll_a, grest_a)
            # the network inputs' paths to w_t; the likelihood's only once
            _back_policy(gw, W1T, g1[0, t], x[a, t], y[a, t], p[t], inv_norm)
            for b in range(1, nb):
                _back_policy(gw, W1T, g1[b, t], x[a, t], y[a, t], p[t], zero)
            _back_mixing_weight(gw, gp, p[t], x[a, t])
            if taught:
                _back_base_policy(gw, c, x[a, t], p[t])
            _back_gate_weight(gw, gq, q, gate_on, inp[0, t])
        _store_rows(a, (gls, gla, gbeta, gll, grest), (gls_a, gla_a, gbeta_a, gll_a, grest_a))
        for b in range(first_branch, nb):
            _sum_outer(gW3[a], gb3[a], go[b], h2[b])
            _sum_outer(gW2[a], gb2[a], g2[b], h1[b])
            _sum_outer(gW1[a], gb1[a], g1[b], inp[b])


def dnn_mean_field_chunk(x, u, y, valid, w0, params, need_grad=True, loss_norm=1.0, free=None,
                         centre=None, gate=0, gate_on=None, gate_all=True):
    """Run the ``dnn`` rule's mean-field rollout over a chunk.

    Arguments and results as :func:`~ibl_learnrules.kernels.neural.dnn_chunk`; ``u``'s
    choice and reward signs are replaced by each branch's, ``y`` is only scored, and the
    ``beta`` gradient is zero. ``free`` (K,) of 0/1 (``None``: all 1) marks the weights that
    run free; those marked 0 take the teacher-forced update of the animal's own choice and
    reward (and have a ``beta`` gradient). ``centre`` is the rule's (see
    :class:`~ibl_learnrules.rules.DNNRule`): ``"policy"`` subtracts from the correction its
    outputs mixed over both choices by p, ``"even"`` subtracts that mix and adds back their
    plain average. ``gate`` (an order m, 0 for none): the network's share of the update is
    multiplied by ``1 - (1 - 2p)^(2m)`` (``4 p (1 - p)`` for m = 1), with p the trial's
    p(right), or, for ``gate_on=j``, the sigmoid of weight j (the bias: p at zero contrast);
    ``gate_all=False`` gates weight j's share alone.
    """
    free = _free_mask(free, x)
    centred = centre is not None
    mix = free - 1 if centred else free
    even = np.full_like(free, 1.0 if centre == "even" else 0.0)
    scale, W1, b1, W2, b2, W3, b3, alpha, beta, leak, rest = params
    # beta's gradient: the baseline cancels in the expected update, not in the taught one
    loglik, w_end, grads = outputs(x, (W1, b1, W2, b2, W3, b3, scale, alpha, beta, leak, rest))
    over_animals(_dnn_mean_field_chunk, *x.shape[:2], WORK_PER_THREAD, x, u, y, valid, w0, scale,
                 W1, transposed(W1), b1, W2, transposed(W2), b2, W3, b3, alpha, beta, leak, rest,
                 free, mix, even, *gate_codes(gate, gate_on, gate_all), bool(need_grad),
                 loss_weight(scale, loss_norm), loglik, w_end, *grads)
    return loglik, w_end, summed(grads)


def dnn_centred_chunk(x, u, y, valid, w0, params, need_grad=True, loss_norm=1.0,
                      centre="policy", gate=0, gate_on=None, gate_all=True):
    """Run a centred or gated ``dnn`` rule teacher forced over a chunk (no weight free).

    Arguments and results as :func:`~ibl_learnrules.kernels.neural.dnn_chunk`, for the
    correction of :func:`dnn_mean_field_chunk` with ``centre`` (``None``, ``"policy"`` or
    ``"even"``) and the gate.
    """
    return dnn_mean_field_chunk(x, u, y, valid, w0, params, need_grad, loss_norm,
                                free=np.zeros(x.shape[2]), centre=centre, gate=gate,
                                gate_on=gate_on, gate_all=gate_all)


def _free_mask(free, x):
    """Return the (K,) 0/1 mask in the inputs' dtype; all ones for ``None``."""
    K = x.shape[2]
    return np.ones(K, x.dtype) if free is None else np.asarray(free, dtype=x.dtype).reshape(K)


@numba.njit(**_JIT)
def _rnn_mean_field_chunk(first, stop, x, u, y, valid, w0, h0, scale, Wih, WihT, Whh, WhhT, bih,
                          bhh, R1, R1T, c1, R2, c2, alpha, beta, leak, rest, free, order, gate_on,
                          only, need_grad, inv_norm, loglik, w_end, h_end, gWih, gWhh, gbih,
                          gbhh, gR1, gc1, gR2, gc2, gls, gla, gbeta, gll, grest):
    """Fill the output rows of animals ``first`` to ``stop - 1`` (:func:`rnn_mean_field_chunk`)."""
    T, K = x.shape[1], x.shape[2]
    # a third branch, the animal's own choice and reward from the mixed state, for the
    # weights that do not run free; its new state is not kept (the state runs free)
    taught = free.min() < 1
    nb = 3 if taught else 2
    H = Whh.shape[1]
    D = Wih.shape[1]
    dt = x.dtype
    no_even = np.zeros(K, dt)
    no_bias = np.zeros(3 * H, dt)
    one = _cast(scale[0], 1.0)
    zero = _cast(scale[0], 0.0)
    for a in range(first, stop):
        # branch 0: the choice right, branch 1: left[, branch 2: the animal's]; all start from
        # the mixed state hs[t], so the recurrent side of the gates (gh_, hn) is shared
        inp = np.empty((nb, T, D), dt)
        hs = np.empty((T + 1, H), dt)  # mixed state before each trial
        r = np.empty((nb, T, H), dt)
        zg = np.empty((nb, T, H), dt)
        n = np.empty((nb, T, H), dt)
        hn = np.empty((T, H), dt)  # W_hn h + b_hn
        hnew = np.empty((nb, T, H), dt)
        ro = np.empty((nb, T, H), dt)  # read-out hidden layer
        out = np.empty((nb, T, K), dt)
        p = np.empty(T, dt)
        gi = np.empty(3 * H, dt)
        gh_ = np.empty(3 * H, dt)
        pre = np.empty(H, dt)
        sc = np.empty(K, dt)  # the output scale, times the gate
        w = w0[a].copy()
        loglik_a = 0.0  # summed here, stored once: see _zero_rows
        gls_a, gla_a, gbeta_a, gll_a, grest_a = _zero_rows(K)
        hs[0] = h0[a]
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[0, t])
            loglik_a += ll
            if taught:
                inp[2, t] = inp[0, t]
            _branch_inputs(inp, t, u[a, t, K + 2])
            _affine(WhhT, bhh, hs[t], gh_)
            for i in range(H):
                hn[t, i] = gh_[2 * H + i]
            for b in range(nb):
                _affine(WihT, bih, inp[b, t], gi)
                _gru_step(gi, gh_, hs[t], r[b, t], zg[b, t], n[b, t], hnew[b, t])
                _affine(R1T, c1, hnew[b, t], pre)
                _tanh_layer(pre, ro[b, t])
                _dots(R2, c2, ro[b, t], out[b, t])
            pt = p[t]
            _gated_scale(scale, _gate_input(pt, inp[0, t], gate_on), order, only, sc)
            if taught:  # from the weights before the trial, as the mixed update
                _taught_update(w, v, sc, alpha, beta, out[2, t], u[a, t], y[a, t], pt, x[a, t],
                               free)
            _mixed_update(w, v, sc, alpha, out[:2, t], pt, u[a, t, K + 2], x[a, t], free,
                          free, no_even)
            _leak(w, v, leak, rest, inp[0, t])
            if v > 0:
                for i in range(H):
                    hs[t + 1, i] = pt * hnew[0, t, i] + (one - pt) * hnew[1, t, i]
            else:
                hs[t + 1] = hs[t]
        w_end[a] = w
        loglik[a] = loglik_a
        h_end[a] = hs[T]
        if not need_grad:
            continue
        g_ih = np.zeros((nb, T, 3 * H), dt)  # r, z, n gates: input side, per branch
        # recurrent side: every branch reads the same hs[t], so their sum is all W_hh needs
        g_hh = np.zeros((T, 3 * H), dt)
        gro = np.zeros((nb, T, H), dt)
        go = np.zeros((nb, T, K), dt)
        gw = np.zeros(K, dt)  # d loss / d w_{t+1}
        g_taught = np.zeros(K, dt)  # its part that reaches the taught update
        gh = np.zeros(H, dt)  # d loss / d h_{t+1}
        gnew = np.empty(H, dt)
        carried = np.empty(H, dt)  # the share of d loss / d h_{t+1} in a branch's new state
        carry = np.empty(H, dt)
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue  # weights and state pass through unchanged
            pt = p[t]
            q = _gate_input(pt, inp[0, t], gate_on)
            _gated_scale(scale, q, order, only, sc)
            gq = zero  # d loss / d q, q the gate's probability
            if order > 0:
                gq = _gate_slope(q, order) * _gated_sum(gw, scale, out[:, t], pt, free, free,
                                                        no_even, only)
            gp = _back_mixed_update(gw, sc, alpha, out[:2, t], pt, u[a, t, K + 2], x[a, t],
                                    go[:2, t], gls_a, gla_a, free, free, no_even)
            if gate_on == GATE_ON_P:
                gp += gq
            c = 0.0
            if taught:
                c = _back_taught_update(gw, g_taught, sc, alpha, beta, out[2, t], go[2, t],
                                        u[a, t], x[a, t], y[a, t], pt, free, gls_a, gla_a,
                                        gbeta_a)
            for i in range(H):
                gp += gh[i] * (hnew[0, t, i] - hnew[1, t, i])
                carry[i] = zero
            for b in range(nb):
                pb = pt if b == 0 else (one - pt if b == 1 else zero)
                for i in range(H):
                    carried[i] = pb * gh[i]
                _affine(R2, no_bias, go[b, t], gro[b, t])
                _back_tanh(gro[b, t], ro[b, t])
                _affine(R1, carried, gro[b, t], gnew)  # from the read-out and from h_{t+1}
                _back_gru_step(gnew, hs[t], r[b, t], zg[b, t], n[b, t], hn[t], g_ih[b, t])
                for i in range(H):
                    g_hh[t, i] += g_ih[b, t, i]
                    g_hh[t, H + i] += g_ih[b, t, H + i]
                    g_hh[t, 2 * H + i] += g_ih[b, t, 2 * H + i] * r[b, t, i]
                    carry[i] += gnew[i] * zg[b, t, i]
            _affine(Whh, carry, g_hh[t], gh)
            _back_leak(gw, leak, rest, inp[0, t], gll_a, grest_a)
            # the network inputs' paths to w_t; the likelihood's only once
            _back_policy(gw, WihT, g_ih[0, t], x[a, t], y[a, t], pt, inv_norm)
            for b in range(1, nb):
                _back_policy(gw, WihT, g_ih[b, t], x[a, t], y[a, t], pt, zero)
            _back_mixing_weight(gw, gp, pt, x[a, t])
            if taught:
                _back_base_policy(gw, c, x[a, t], pt)
            _back_gate_weight(gw, gq, q, gate_on, inp[0, t])
        _store_rows(a, (gls, gla, gbeta, gll, grest), (gls_a, gla_a, gbeta_a, gll_a, grest_a))
        _sum_outer(gWhh[a], gbhh[a], g_hh, hs[:T])
        for b in range(nb):
            _sum_outer(gWih[a], gbih[a], g_ih[b], inp[b])
            _sum_outer(gR1[a], gc1[a], gro[b], hnew[b])
            _sum_outer(gR2[a], gc2[a], go[b], ro[b])


def rnn_mean_field_chunk(x, u, y, valid, w0, h0, params, need_grad=True, loss_norm=1.0, free=None,
                         gate=0, gate_on=None, gate_all=True):
    """Run the ``rnn`` rule's mean-field rollout over a chunk.

    Arguments and results as :func:`~ibl_learnrules.kernels.neural.rnn_chunk` (the gate
    too); ``u``'s choice and reward signs are replaced by each branch's, ``y`` is only
    scored, the GRU state is the branches' states mixed by p(right), and the ``beta``
    gradient is zero. ``free`` as :func:`dnn_mean_field_chunk`'s: the weights marked 0
    take the update of the animal's own choice and reward, from the mixed state (whose
    own next state is dropped: the state runs free).
    """
    scale, Wih, Whh, bih, bhh, R1, c1, R2, c2, alpha, beta, leak, rest = params
    loglik, w_end, grads = outputs(x, (Wih, Whh, bih, bhh, R1, c1, R2, c2, scale, alpha, beta,
                                       leak, rest))
    h_end = np.empty_like(h0)
    over_animals(_rnn_mean_field_chunk, *x.shape[:2], WORK_PER_THREAD, x, u, y, valid, w0, h0,
                 scale, Wih, transposed(Wih), Whh, transposed(Whh), bih, bhh, R1, transposed(R1),
                 c1, R2, c2, alpha, beta, leak, rest, _free_mask(free, x),
                 *gate_codes(gate, gate_on, gate_all), bool(need_grad),
                 loss_weight(scale, loss_norm), loglik, w_end, h_end, *grads)
    return loglik, w_end, h_end, summed(grads)
