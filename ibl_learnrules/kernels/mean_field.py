"""Compiled CPU kernel of the ``dnn`` rule's free-running (mean-field) likelihood over a chunk.

The weights move by the update expected under the rule's own policy (see
:mod:`ibl_learnrules.closed_loop`): the network is evaluated for both choices, with the
reward each would have earned, and its outputs are mixed by p(right),

    dw = scale * (p out(right) + (1 - p) out(left)) + alpha p (1 - p) (2c - 1) x,

the last term being REINFORCE-with-baseline's expected update (its baseline cancels). The
animal's choices are only scored. Back-propagation runs by hand as in
:mod:`ibl_learnrules.kernels.neural`, whose helpers it shares; on top of the two branches,
the path through the mixing weight p reaches w_t. ``tests/test_closed_loop.py`` holds it
equal to :func:`ibl_learnrules.closed_loop.mean_field_rollout`.
"""

from __future__ import annotations

import numba
import numpy as np

from .neural import (
    _JIT,
    _affine,
    _back_policy,
    _back_tanh,
    _cast,
    _dots,
    _policy,
    _sum_outer,
    _tanh_layer,
)

__all__ = ["dnn_mean_field_chunk"]


@numba.njit(**_JIT)
def _dnn_mean_field_chunk(x, u, y, valid, w0, scale, W1, b1, W2, b2, W3, b3, alpha, beta,
                          need_grad, loss_norm):
    B, T, K = x.shape
    H = W1.shape[0]
    D = W1.shape[1]
    dt = x.dtype
    loglik = np.zeros(B)
    w_end = np.empty((B, K), dt)
    gW1 = np.zeros((B,) + W1.shape)
    gb1 = np.zeros((B, H))
    gW2 = np.zeros((B,) + W2.shape)
    gb2 = np.zeros((B, H))
    gW3 = np.zeros((B,) + W3.shape)
    gb3 = np.zeros((B, K))
    gls = np.zeros((B, K))
    gla = np.zeros((B, K))
    gbeta = np.zeros((B, K))  # the baseline cancels in the expected update
    W1T, W2T = W1.T.copy(), W2.T.copy()
    no_bias = np.zeros(H, dt)
    one = _cast(scale[0], 1.0)
    zero = _cast(scale[0], 0.0)
    inv_norm = _cast(scale[0], 1.0 / loss_norm)
    for a in numba.prange(B):
        # branch 0: the choice right, branch 1: left
        inp = np.empty((2, T, D), dt)
        h1 = np.empty((2, T, H), dt)
        h2 = np.empty((2, T, H), dt)
        out = np.empty((2, T, K), dt)
        p = np.empty(T, dt)
        pre = np.empty(H, dt)
        w = w0[a].copy()
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[0, t])
            loglik[a] += ll
            side = u[a, t, K + 2]  # 2c - 1: the reward sign of the choice right
            for j in range(D):
                inp[1, t, j] = inp[0, t, j]
            inp[0, t, 2 * K] = one
            inp[0, t, 2 * K + 1] = side
            inp[1, t, 2 * K] = -one
            inp[1, t, 2 * K + 1] = -side
            for b in range(2):
                _affine(W1T, b1, inp[b, t], pre)
                _tanh_layer(pre, h1[b, t])
                _affine(W2T, b2, h1[b, t], pre)
                _tanh_layer(pre, h2[b, t])
                _dots(W3, b3, h2[b, t], out[b, t])
            pt = p[t]
            base = pt * (one - pt) * side
            for k in range(K):
                mixed = pt * out[0, t, k] + (one - pt) * out[1, t, k]
                w[k] += v * (scale[k] * mixed + alpha[k] * base * x[a, t, k])
        w_end[a] = w
        if not need_grad:
            continue
        go = np.zeros((2, T, K), dt)
        g2 = np.zeros((2, T, H), dt)
        g1 = np.zeros((2, T, H), dt)
        gw = np.zeros(K, dt)  # d loss / d w_{t+1}
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue
            pt = p[t]
            side = u[a, t, K + 2]
            gp = zero  # d loss / d p_t through the mixing and the classic part
            for k in range(K):
                gs = gw[k] * scale[k]
                go[0, t, k] = gs * pt
                go[1, t, k] = gs * (one - pt)
                gls[a, k] += np.float64(gs * (pt * out[0, t, k] + (one - pt) * out[1, t, k]))
                gla[a, k] += np.float64(gw[k] * alpha[k] * pt * (one - pt) * side * x[a, t, k])
                gp += gs * (out[0, t, k] - out[1, t, k])
                gp += gw[k] * alpha[k] * (one - (pt + pt)) * side * x[a, t, k]
            for b in range(2):
                _affine(W3, no_bias, go[b, t], g2[b, t])
                _back_tanh(g2[b, t], h2[b, t])
                _affine(W2, no_bias, g2[b, t], g1[b, t])
                _back_tanh(g1[b, t], h1[b, t])
            # the network inputs' paths to w_t; the likelihood's only once
            _back_policy(gw, W1T, g1[0, t], x[a, t], y[a, t], pt, inv_norm)
            _back_policy(gw, W1T, g1[1, t], x[a, t], y[a, t], pt, zero)
            s = gp * pt * (one - pt)
            for k in range(K):
                gw[k] += s * x[a, t, k]
        for b in range(2):
            _sum_outer(gW3[a], gb3[a], go[b], h2[b])
            _sum_outer(gW2[a], gb2[a], g2[b], h1[b])
            _sum_outer(gW1[a], gb1[a], g1[b], inp[b])
    grads = (gW1.sum(0), gb1.sum(0), gW2.sum(0), gb2.sum(0), gW3.sum(0), gb3.sum(0), gls.sum(0),
             gla.sum(0), gbeta.sum(0))
    return loglik, w_end, grads


def dnn_mean_field_chunk(x, u, y, valid, w0, params, need_grad=True, loss_norm=1.0):
    """Run the ``dnn`` rule's mean-field rollout over a chunk.

    Arguments and results as :func:`~ibl_learnrules.kernels.neural.dnn_chunk`; ``u``'s
    choice and reward signs are replaced by each branch's, ``y`` is only scored, and the
    ``beta`` gradient is zero.
    """
    return _dnn_mean_field_chunk(x, u, y, valid, w0, *params, need_grad, float(loss_norm))
