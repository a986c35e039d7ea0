"""Compiled CPU kernels for training the network rules over one TBPTT chunk.

A per-trial PyTorch loop spends its time dispatching tiny operations, not computing. For the
``dnn`` and ``rnn`` rules on the CPU, these numba kernels run a whole chunk of trials for all
animals (in parallel over animals) and back-propagate through it by hand, returning the
chunk's log-likelihood, the carried state and the parameter gradients. The torch modules
remain the definition of the rules: :func:`ibl_learnrules.engine.rollout` evaluates them, and
``tests/test_kernels.py`` checks that these kernels give the same loss, gradients and
trajectories.

Inputs per chunk are float64 arrays of shape (B, T, ...): covariates ``x``, rule inputs
``u = [x, 2y-1, 2r-1, 2c-1, new_session]`` (everything the network sees besides ``w``),
choices ``y`` and the ``valid`` mask.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["dnn_chunk", "rnn_chunk"]

_JIT = dict(parallel=True, fastmath=True, cache=True)


@numba.njit(inline="always")
def _log_sigmoid(z):
    if z >= 0:
        return -np.log1p(np.exp(-z))
    return z - np.log1p(np.exp(z))


@numba.njit(inline="always")
def _tanh(z):
    # libm's tanh costs ~25 ns; exp ~7 ns. Near 0, where (e - 1) would cancel, a Taylor
    # polynomial takes over; both branches are exact to ~1e-15 relative.
    a = abs(z)
    if a < 0.02:
        z2 = z * z
        return z * (1.0 - z2 * (1.0 / 3.0 - z2 * (2.0 / 15.0 - z2 * (17.0 / 315.0))))
    if a > 20.0:
        return 1.0 if z > 0 else -1.0
    e = np.exp(2.0 * z)
    return (e - 1.0) / (e + 1.0)


@numba.njit(inline="always")
def _policy(w, x_t, u_t, y_t, v, inp_t):
    """Fill the network input [w, u] of a trial; return (p_right, its log-likelihood * v)."""
    K = w.shape[0]
    z = 0.0
    for k in range(K):
        z += w[k] * x_t[k]
        inp_t[k] = w[k]
    for j in range(u_t.shape[0]):
        inp_t[K + j] = u_t[j]
    ll = 0.0
    if v > 0:
        ll = _log_sigmoid(z) if y_t > 0.5 else _log_sigmoid(-z)
    return _sigmoid(z), ll


@numba.njit(inline="always")
def _dense(W, b, inputs, out, activate):
    """Set ``out = tanh(W @ inputs + b)`` (without the tanh unless ``activate``)."""
    for i in range(W.shape[0]):
        s = b[i]
        for j in range(W.shape[1]):
            s += W[i, j] * inputs[j]
        out[i] = _tanh(s) if activate else s


@numba.njit(inline="always")
def _back_tanh(WT, g_out, act, g_in, carry):
    """g_in = (carry + W.T @ g_out) * tanh' at the layer's output ``act`` (``WT`` = W.T)."""
    for j in range(WT.shape[0]):
        s = carry[j]
        for i in range(WT.shape[1]):
            s += WT[j, i] * g_out[i]
        g_in[j] = s * (1.0 - act[j] * act[j])


@numba.njit(inline="always")
def _back_output(gw, scale, out_t, go_t, gls_a):
    """Gradient at the network output from d loss / d w_{t+1}; accumulates the log-scale's."""
    for k in range(gw.shape[0]):
        go_t[k] = gw[k] * scale[k]
        gls_a[k] += go_t[k] * out_t[k]


@numba.njit(inline="always")
def _back_policy(gw, WT_in, g_first, x_t, y_t, p_t, loss_norm):
    """Add to ``gw`` the paths to w_t: network input and the trial's likelihood."""
    for k in range(gw.shape[0]):
        s = 0.0
        for i in range(WT_in.shape[1]):
            s += WT_in[k, i] * g_first[i]
        gw[k] += s - (y_t - p_t) * x_t[k] / loss_norm


@numba.njit(inline="always")
def _add_outer_sum(out, g, inputs):
    """Out += g.T @ inputs, as loops: BLAS called from numba's threads can deadlock OpenBLAS."""
    for t in range(g.shape[0]):
        for i in range(g.shape[1]):
            gi = g[t, i]
            if gi != 0.0:
                for j in range(inputs.shape[1]):
                    out[i, j] += gi * inputs[t, j]


@numba.njit(inline="always")
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@numba.njit(**_JIT)
def _dnn_chunk(x, u, y, valid, w0, scale, W1, b1, W2, b2, W3, b3, need_grad, loss_norm):
    B, T, K = x.shape
    H = W1.shape[0]
    D = W1.shape[1]
    loglik = np.zeros(B)
    w_end = np.empty((B, K))
    gW1 = np.zeros((B,) + W1.shape)
    gb1 = np.zeros((B, H))
    gW2 = np.zeros((B,) + W2.shape)
    gb2 = np.zeros((B, H))
    gW3 = np.zeros((B,) + W3.shape)
    gb3 = np.zeros((B, K))
    gls = np.zeros((B, K))
    # the backward pass reads the weights by columns
    W1T, W2T, W3T = W1.T.copy(), W2.T.copy(), W3.T.copy()
    no_carry = np.zeros(H)
    for a in numba.prange(B):
        inp = np.empty((T, D))
        h1 = np.empty((T, H))
        h2 = np.empty((T, H))
        out = np.empty((T, K))
        p = np.empty(T)
        w = w0[a].copy()
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[t])
            loglik[a] += ll
            _dense(W1, b1, inp[t], h1[t], True)
            _dense(W2, b2, h1[t], h2[t], True)
            _dense(W3, b3, h2[t], out[t], False)
            for k in range(K):
                w[k] += v * scale[k] * out[t, k]
        w_end[a] = w
        if not need_grad:
            continue
        # per-trial gradients of the pre-activations; weight gradients are their products
        # with the layer inputs, summed over trials at the end in one matrix product each
        go = np.zeros((T, K))
        g2 = np.zeros((T, H))
        g1 = np.zeros((T, H))
        gw = np.zeros(K)  # d loss / d w_{t+1}
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue  # the weights pass through unchanged
            _back_output(gw, scale, out[t], go[t], gls[a])
            _back_tanh(W3T, go[t], h2[t], g2[t], no_carry)
            _back_tanh(W2T, g2[t], h1[t], g1[t], no_carry)
            _back_policy(gw, W1T, g1[t], x[a, t], y[a, t], p[t], loss_norm)
        _add_outer_sum(gW3[a], go, h2)
        _add_outer_sum(gW2[a], g2, h1)
        _add_outer_sum(gW1[a], g1, inp)
        for t in range(T):
            for k in range(K):
                gb3[a, k] += go[t, k]
            for i in range(H):
                gb2[a, i] += g2[t, i]
                gb1[a, i] += g1[t, i]
    grads = (gW1.sum(0), gb1.sum(0), gW2.sum(0), gb2.sum(0), gW3.sum(0), gb3.sum(0), gls.sum(0))
    return loglik, w_end, grads


def dnn_chunk(x, u, y, valid, w0, params, need_grad=True, loss_norm=1.0):
    """Run the ``dnn`` rule (2 hidden tanh layers) over a chunk; see the module docstring.

    Parameters
    ----------
    x, u, y, valid, w0 : ndarray
        Chunk inputs (float64) and the weights before its first trial.
    params : sequence of ndarray
        ``scale, W1, b1, W2, b2, W3, b3`` (``scale`` = exp of the rule's log-scale).
    need_grad : bool
        Also back-propagate.
    loss_norm : float
        The loss is ``-loglik.sum() / loss_norm``; gradients are of that loss.

    Returns
    -------
    loglik : ndarray (B,)
    w_end : ndarray (B, K)
    grads : tuple of ndarray
        Gradients for ``W1, b1, W2, b2, W3, b3, log_scale``.
    """
    return _dnn_chunk(x, u, y, valid, w0, *params, need_grad, float(loss_norm))


@numba.njit(**_JIT)
def _rnn_chunk(x, u, y, valid, w0, h0, scale, Wih, Whh, bih, bhh, R1, c1, R2, c2, need_grad,
               loss_norm):
    B, T, K = x.shape
    H = Whh.shape[1]
    D = Wih.shape[1]
    loglik = np.zeros(B)
    w_end = np.empty((B, K))
    h_end = np.empty((B, H))
    gWih = np.zeros((B,) + Wih.shape)
    gWhh = np.zeros((B,) + Whh.shape)
    gbih = np.zeros((B, 3 * H))
    gbhh = np.zeros((B, 3 * H))
    gR1 = np.zeros((B,) + R1.shape)
    gc1 = np.zeros((B, H))
    gR2 = np.zeros((B,) + R2.shape)
    gc2 = np.zeros((B, K))
    gls = np.zeros((B, K))
    # the backward pass reads these by columns
    R1T, R2T = R1.T.copy(), R2.T.copy()
    WhhT = Whh.T.copy()
    WihT = Wih.T.copy()
    no_carry = np.zeros(H)
    for a in numba.prange(B):
        inp = np.empty((T, D))
        hs = np.empty((T + 1, H))  # state before each trial
        r = np.empty((T, H))
        zg = np.empty((T, H))
        n = np.empty((T, H))
        hn = np.empty((T, H))  # W_hn h + b_hn
        hnew = np.empty((T, H))
        ro = np.empty((T, H))  # readout hidden layer
        out = np.empty((T, K))
        p = np.empty(T)
        w = w0[a].copy()
        hs[0] = h0[a]
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[t])
            loglik[a] += ll
            for i in range(H):
                ar = bih[i] + bhh[i]
                az = bih[H + i] + bhh[H + i]
                an = bih[2 * H + i]
                for j in range(D):
                    ar += Wih[i, j] * inp[t, j]
                    az += Wih[H + i, j] * inp[t, j]
                    an += Wih[2 * H + i, j] * inp[t, j]
                hh = bhh[2 * H + i]
                for j in range(H):
                    ar += Whh[i, j] * hs[t, j]
                    az += Whh[H + i, j] * hs[t, j]
                    hh += Whh[2 * H + i, j] * hs[t, j]
                r[t, i] = _sigmoid(ar)
                zg[t, i] = _sigmoid(az)
                hn[t, i] = hh
                n[t, i] = _tanh(an + r[t, i] * hh)
                hnew[t, i] = (1.0 - zg[t, i]) * n[t, i] + zg[t, i] * hs[t, i]
            _dense(R1, c1, hnew[t], ro[t], True)
            _dense(R2, c2, ro[t], out[t], False)
            for k in range(K):
                w[k] += v * scale[k] * out[t, k]
            for i in range(H):
                hs[t + 1, i] = v * hnew[t, i] + (1.0 - v) * hs[t, i]
        w_end[a] = w
        h_end[a] = hs[T]
        if not need_grad:
            continue
        # per-trial gradients of the pre-activations; weight gradients are summed over
        # trials at the end, one matrix product each
        g_ih = np.zeros((T, 3 * H))  # r, z, n gates: input side
        g_hh = np.zeros((T, 3 * H))  # r, z, n gates: recurrent side
        gro = np.zeros((T, H))
        go = np.zeros((T, K))
        gw = np.zeros(K)  # d loss / d w_{t+1}
        gh = np.zeros(H)  # d loss / d h_{t+1}
        gnew = np.empty(H)
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue  # weights and state pass through unchanged
            _back_output(gw, scale, out[t], go[t], gls[a])
            _back_tanh(R2T, go[t], ro[t], gro[t], no_carry)
            for j in range(H):  # into the new state: from the read-out and from h_{t+1}
                s = gh[j]
                for i in range(H):
                    s += R1T[j, i] * gro[t, i]
                gnew[j] = s
            for i in range(H):
                gn = gnew[i] * (1.0 - zg[t, i])
                gz = gnew[i] * (hs[t, i] - n[t, i])
                gan = gn * (1.0 - n[t, i] * n[t, i])
                g_ih[t, i] = gan * hn[t, i] * r[t, i] * (1.0 - r[t, i])
                g_ih[t, H + i] = gz * zg[t, i] * (1.0 - zg[t, i])
                g_ih[t, 2 * H + i] = gan
                g_hh[t, i] = g_ih[t, i]
                g_hh[t, H + i] = g_ih[t, H + i]
                g_hh[t, 2 * H + i] = gan * r[t, i]
            for j in range(H):
                s = gnew[j] * zg[t, j]
                for i in range(3 * H):
                    s += WhhT[j, i] * g_hh[t, i]
                gh[j] = s
            _back_policy(gw, WihT, g_ih[t], x[a, t], y[a, t], p[t], loss_norm)
        _add_outer_sum(gWih[a], g_ih, inp)
        _add_outer_sum(gWhh[a], g_hh, hs)
        _add_outer_sum(gR1[a], gro, hnew)
        _add_outer_sum(gR2[a], go, ro)
        for t in range(T):
            for i in range(3 * H):
                gbih[a, i] += g_ih[t, i]
                gbhh[a, i] += g_hh[t, i]
            for i in range(H):
                gc1[a, i] += gro[t, i]
            for k in range(K):
                gc2[a, k] += go[t, k]
    grads = (gWih.sum(0), gWhh.sum(0), gbih.sum(0), gbhh.sum(0), gR1.sum(0), gc1.sum(0),
             gR2.sum(0), gc2.sum(0), gls.sum(0))
    return loglik, w_end, h_end, grads


def rnn_chunk(x, u, y, valid, w0, h0, params, need_grad=True, loss_norm=1.0):
    """Run the ``rnn`` rule (GRU, then a 1-hidden-layer tanh read-out) over a chunk.

    Parameters are as in :func:`dnn_chunk`, plus ``h0`` (B, H), the GRU state before the
    chunk; ``params`` is ``scale, W_ih, W_hh, b_ih, b_hh, R1, c1, R2, c2`` in torch's GRUCell
    layout (gates r, z, n). Returns ``loglik, w_end, h_end, grads`` with gradients for
    ``W_ih, W_hh, b_ih, b_hh, R1, c1, R2, c2, log_scale``.
    """
    return _rnn_chunk(x, u, y, valid, w0, h0, *params, need_grad, float(loss_norm))
