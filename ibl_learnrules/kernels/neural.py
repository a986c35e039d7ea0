"""Compiled CPU kernels for training the network rules over one TBPTT chunk.

A per-trial PyTorch loop spends its time dispatching tiny operations, not computing. For the
``dnn`` and ``rnn`` rules on the CPU, these numba kernels run a whole chunk of trials for all
animals (groups of animals on threads: :mod:`ibl_learnrules.kernels.threads`) and
back-propagate through it by hand, returning the
chunk's log-likelihood, the carried state and the parameter gradients. The torch modules
remain the definition of the rules: :func:`ibl_learnrules.engine.rollout` evaluates them, and
``tests/test_kernels.py`` checks that these kernels give the same loss, gradients and
trajectories.

Inputs per chunk are arrays of shape (B, T, ...): covariates ``x``, rule inputs
``u = [x, 2y-1, 2r-1, 2c-1, new_session]`` (everything the network sees besides ``w``),
choices ``y`` and the ``valid`` mask.

Precision: a kernel computes in the dtype of its inputs (the rule's parameters: float32 by
default, float64 in the equality tests) and accumulates the log-likelihood and the gradient
sums over trials in float64. numba compiles one specialisation per dtype from the same source;
only :func:`_tanh` and :func:`_sigmoid` differ: in float32 a rational approximation that the
compiler vectorises over the hidden units (a few ulps from float32's tanh), in float64 the
exact exp-based formulas.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import overload

from .threads import over_animals

__all__ = ["dnn_chunk", "rnn_chunk"]

# error_model="numpy": Python's ZeroDivisionError check on every division would keep the
# hidden-unit loops (the rational tanh divides) from vectorising.
# Fast-math flags that cannot change a finite result. Reassociation ("reassoc"), fused
# multiply-adds ("contract") and approximate reciprocals would let LLVM round differently in
# a fresh compilation and in code loaded from numba's cache: a float32 dnn fit on KS014 then
# scored its later sessions -0.4709 compiled fresh and -0.4682 from the cache, a gap as large
# as the differences between rules. With these flags both give the same bits, as fast.
_FAST = {"nnan", "ninf", "nsz"}
#: The helpers' flags; a kernel's add a cache and release the GIL (threads run animals apart)
_HELPER = dict(fastmath=_FAST, error_model="numpy")
_JIT = dict(_HELPER, cache=True, nogil=True)


def _cast(like, value):
    """``value`` as a scalar of ``like``'s type (jitted code only)."""
    raise NotImplementedError


@overload(_cast, inline="always")
def _cast_overload(like, value):
    # numba promotes float32 (op) Python float to float64; casting the constants keeps
    # float32 arithmetic in float32
    to = like

    def impl(like, value):
        return to(value)

    return impl


@numba.njit(**_HELPER)
def _tanh_exact(z):
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


@numba.njit(**_HELPER)
def _tanh_f32(z):
    # Eigen's float tanh: a 13/6 rational function on [-7.9, 7.9] (where float32's tanh
    # reaches 1), < 3e-7 from the exact value; branch-free, so loops over units vectorise
    f = numba.float32
    c = f(7.90531110763549805)
    x = z if z < c else c
    x = x if x > -c else -c
    x2 = x * x
    p = x2 * f(-2.76076847742355e-16) + f(2.00018790482477e-13)
    p = p * x2 + f(-8.60467152213735e-11)
    p = p * x2 + f(5.12229709037114e-08)
    p = p * x2 + f(1.48572235717979e-05)
    p = p * x2 + f(6.37261928875436e-04)
    p = p * x2 + f(4.89352455891786e-03)
    q = x2 * f(1.19825839466702e-06) + f(1.18534705686654e-04)
    q = q * x2 + f(2.26843463243900e-03)
    q = q * x2 + f(4.89352518554385e-03)
    return x * p / q


@numba.njit(**_HELPER)
def _sigmoid_exact(z):
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


def _tanh(z):
    """Hyperbolic tangent in ``z``'s precision (jitted code only)."""
    raise NotImplementedError


def _sigmoid(z):
    """Logistic function in ``z``'s precision (jitted code only)."""
    raise NotImplementedError


@overload(_tanh)
def _tanh_overload(z):
    if z == types.float32:
        return lambda z: _tanh_f32(z)
    return lambda z: _tanh_exact(z)


@overload(_sigmoid)
def _sigmoid_overload(z):
    if z == types.float32:
        half = np.float32(0.5)
        return lambda z: half + half * _tanh_f32(half * z)
    return lambda z: _sigmoid_exact(z)


@numba.njit(**_HELPER)
def _log_sigmoid(z):
    if z >= 0:
        return -np.log1p(np.exp(-z))
    return z - np.log1p(np.exp(z))


@numba.njit(inline="always")
def _policy(w, x_t, u_t, y_t, v, inp_t):
    """Fill the network input [w, u] of a trial; return (p_right, its log-likelihood * v)."""
    K = w.shape[0]
    z = _cast(w[0], 0.0)
    for k in range(K):
        z += w[k] * x_t[k]
        inp_t[k] = w[k]
    for j in range(u_t.shape[0]):
        inp_t[K + j] = u_t[j]
    ll = 0.0
    if v > 0:
        ll = np.float64(_log_sigmoid(z) if y_t > 0.5 else _log_sigmoid(-z))
    # the likelihood in the input's precision, as the torch loop computes it; the policy's
    # p only enters the backward pass
    p = _sigmoid_exact(z)
    return p, ll


@numba.njit(inline="always")
def _affine(WT, b, v, a):
    """Set ``a = b + WT.T @ v`` for ``WT`` of shape (D, H).

    The loop over the H outputs is innermost so that it vectorises; eight inputs per pass,
    summed as a tree, cut the loads and stores of ``a`` and the length of the dependency chain.
    """
    D, H = WT.shape
    for i in range(H):
        a[i] = b[i]
    j = 0
    while j + 8 <= D:
        c0, c1, c2, c3 = v[j], v[j + 1], v[j + 2], v[j + 3]
        c4, c5, c6, c7 = v[j + 4], v[j + 5], v[j + 6], v[j + 7]
        for i in range(H):
            a[i] += (((WT[j, i] * c0 + WT[j + 1, i] * c1)
                      + (WT[j + 2, i] * c2 + WT[j + 3, i] * c3))
                     + ((WT[j + 4, i] * c4 + WT[j + 5, i] * c5)
                        + (WT[j + 6, i] * c6 + WT[j + 7, i] * c7)))
        j += 8
    while j < D:
        c = v[j]
        for i in range(H):
            a[i] += WT[j, i] * c
        j += 1


@numba.njit(inline="always")
def _dots(M, b, v, out):
    """Set ``out = b + M @ v`` for few rows (the K outputs): one reduction per row."""
    for k in range(M.shape[0]):
        s = b[k]
        for i in range(M.shape[1]):
            s += M[k, i] * v[i]
        out[k] = s


@numba.njit(inline="always")
def _tanh_layer(a, act):
    for i in range(a.shape[0]):
        act[i] = _tanh(a[i])


@numba.njit(inline="always")
def _back_tanh(g_pre, act):
    """Turn a gradient at a tanh layer's output into one at its input, in place."""
    one = _cast(act[0], 1.0)
    for i in range(g_pre.shape[0]):
        g_pre[i] *= one - act[i] * act[i]


@numba.njit(**_HELPER)
def _add_products(S, A, B):
    """``S += A.T @ B`` in float64 for ``A`` (T, M) and ``B`` (T, N) float64.

    Eight trials per pass over ``S``, summed as a tree, so that each row of ``S`` is loaded
    and stored once per eight trials; the rows are the long side (see :func:`_sum_outer`).
    """
    T, M = A.shape
    N = B.shape[1]
    t = 0
    while t + 8 <= T:
        for i in range(M):
            c0, c1, c2, c3 = A[t, i], A[t + 1, i], A[t + 2, i], A[t + 3, i]
            c4, c5, c6, c7 = A[t + 4, i], A[t + 5, i], A[t + 6, i], A[t + 7, i]
            for j in range(N):
                S[i, j] += (((B[t, j] * c0 + B[t + 1, j] * c1)
                             + (B[t + 2, j] * c2 + B[t + 3, j] * c3))
                            + ((B[t + 4, j] * c4 + B[t + 5, j] * c5)
                               + (B[t + 6, j] * c6 + B[t + 7, j] * c7)))
        t += 8
    while t < T:
        for i in range(M):
            c = A[t, i]
            for j in range(N):
                S[i, j] += B[t, j] * c
        t += 1


@numba.njit(**_HELPER)
def _sum_outer(S, sb, G, V):
    """``S += G.T @ V`` and ``sb += G.sum(0)`` in float64: a layer's gradients over trials.

    ``G`` (T, M) holds the per-trial gradients at the layer's outputs (zero rows for trials
    that did not count), ``V`` (T, N) its inputs.
    """
    G = G.astype(np.float64)
    V = V.astype(np.float64)
    for t in range(G.shape[0]):
        for i in range(G.shape[1]):
            sb[i] += G[t, i]
    M, N = S.shape
    if N >= M:
        _add_products(S, G, V)
    else:
        # the vectorised loop runs along the rows of the sum: make them the long side
        ST = np.zeros((N, M))
        _add_products(ST, V, G)
        S += ST.T


@numba.njit(inline="always")
def _back_output(gw, scale, out_t, go, gls_a):
    """Gradient at the network output from d loss / d w_{t+1}; accumulates the log-scale's."""
    for k in range(gw.shape[0]):
        go[k] = gw[k] * scale[k]
        gls_a[k] += np.float64(go[k] * out_t[k])


@numba.njit(inline="always")
def _back_policy(gw, WT_in, g_first, x_t, y_t, p_t, inv_norm):
    """Add to ``gw`` the paths to w_t: network input (rows 0..K-1 of ``WT_in``) and policy."""
    for k in range(gw.shape[0]):
        s = _cast(gw[k], 0.0)
        for i in range(WT_in.shape[1]):
            s += WT_in[k, i] * g_first[i]
        gw[k] += s - (y_t - p_t) * x_t[k] * inv_norm


@numba.njit(inline="always")
def _base_gain(alpha, beta, k, u_t, y_t, p_t):
    """``alpha_k (r - beta_k) (y - p)``: the classic part's factor of ``x_k`` (r from ``u``)."""
    K = alpha.shape[0]
    reward = (u_t[K + 1] + 1) * 0.5
    return alpha[k] * (reward - beta[k]) * (y_t - p_t)


@numba.njit(inline="always")
def _back_base(gw, alpha, beta, u_t, x_t, y_t, p_t, gla_a, gbeta_a):
    """Gradients of the classic part from ``gw`` = d loss / d w_{t+1}.

    Accumulates those of log-alpha and beta; returns ``c`` such that the path through
    ``p_t`` adds ``-c p (1 - p) x`` to d loss / d w_t.
    """
    K = gw.shape[0]
    reward = (u_t[K + 1] + 1) * 0.5
    c = 0.0
    for k in range(K):
        g = np.float64(gw[k] * x_t[k])
        gla_a[k] += g * alpha[k] * (reward - beta[k]) * (y_t - p_t)
        gbeta_a[k] -= g * alpha[k] * (y_t - p_t)
        c += g * alpha[k] * (reward - beta[k])
    return c


@numba.njit(inline="always")
def _back_base_policy(gw, c, x_t, p_t):
    """Add the classic part's path through ``p_t`` to ``gw`` (see :func:`_back_base`)."""
    s = c * p_t * (1.0 - p_t)
    for k in range(gw.shape[0]):
        gw[k] -= s * x_t[k]


#: The kernels' ``gate_on`` codes besides a weight's index: the gate reads the trial's p, or
#: ``sigmoid(|w_0| - |w_1|)`` capped at 1/2 (the rules' ``gate_on="against_bias"``).
GATE_ON_P = -1
GATE_AGAINST_BIAS = -2


@numba.njit(inline="always")
def _gated_scale(scale, p_t, order, only, sc):
    """Set ``sc`` to the output scale times the gate ``1 - (1 - 2p)^(2 order)`` (1 for 0).

    Every weight's scale is gated, or, for ``only`` >= 0, that weight's alone.
    """
    gate = _cast(p_t, 1.0)
    if order > 0:
        gate -= (1 - (p_t + p_t)) ** (2 * order)
    for k in range(scale.shape[0]):
        sc[k] = scale[k] * gate if only < 0 or k == only else scale[k]


@numba.njit(inline="always")
def _gate_slope(q, order):
    """``d gate / d q = 4 order (1 - 2q)^(2 order - 1)`` for an order > 0."""
    return 4 * order * (1 - (q + q)) ** (2 * order - 1)


@numba.njit(inline="always")
def _back_gate_weight(gw, gq, q, gate_on, w_t):
    """Add the gate's path to w_t when it reads weights: dq / dw_j = q (1 - q) (times a sign).

    (A gate on the trial's p, ``gate_on`` ``GATE_ON_P``, reaches w_t through the kernel's
    own path through p.)
    """
    if gate_on >= 0:
        gw[gate_on] += gq * q * (1 - q)
    elif gate_on == GATE_AGAINST_BIAS and q < 0.5:  # q = sigmoid(|w_0| - |w_1|)
        g = gq * q * (1 - q)
        gw[0] += g if w_t[0] >= 0 else -g
        gw[1] -= g if w_t[1] >= 0 else -g


@numba.njit(inline="always")
def _gate_input(p_t, w_t, gate_on):
    """Return the probability the gate reads.

    The trial's p(right) (``GATE_ON_P``), ``sigmoid(|w_0| - |w_1|)`` capped at 1/2
    (``GATE_AGAINST_BIAS``) or the sigmoid of the weight ``gate_on`` (``w_t``'s first
    entries are the weights before the trial).
    """
    if gate_on == GATE_ON_P:
        return p_t
    if gate_on == GATE_AGAINST_BIAS:  # p(correct), full contrast, against the bias
        return min(_sigmoid_exact(abs(w_t[0]) - abs(w_t[1])), _cast(p_t, 0.5))
    return _sigmoid_exact(w_t[gate_on])


@numba.njit(inline="always")
def _leak(w, v, leak, rest, w_t):
    """``w -= v leak (w_t - rest)``: the classic part's leak, from the weights before the trial."""
    for k in range(w.shape[0]):
        w[k] -= v * leak[k] * (w_t[k] - rest[k])


@numba.njit(inline="always")
def _back_leak(gw, leak, rest, w_t, gll_a, grest_a):
    """Back through :func:`_leak` from ``gw`` = d loss / d w_{t+1}.

    Accumulates the gradients of log-leak and rest and scales the identity path of ``gw``
    to w_t by ``1 - leak``; call it before the other paths to w_t are added.
    """
    for k in range(gw.shape[0]):
        g = np.float64(gw[k] * leak[k])
        gll_a[k] -= g * (w_t[k] - rest[k])
        grest_a[k] += g
        gw[k] -= gw[k] * leak[k]


@numba.njit(inline="always")
def _zero_rows(K):
    """Return one animal's sums for the gradients of the log-scale and the classic part.

    Trials add to them (``log_scale``, ``log_alpha``, ``beta``, ``log_leak``, ``rest``) in the
    animal's own memory, stored in the shared outputs once by :func:`_store_rows`: threads
    writing neighbouring rows of one array on every trial ran no faster than one thread.
    """
    return np.zeros(K), np.zeros(K), np.zeros(K), np.zeros(K), np.zeros(K)


@numba.njit(inline="always")
def _store_rows(a, outs, rows):
    """Store animal ``a``'s rows (:func:`_zero_rows`) in the outputs."""
    for i in range(len(outs)):
        outs[i][a] = rows[i]


@numba.njit(**_JIT)
def _dnn_chunk(first, stop, x, u, y, valid, w0, scale, W1, W1T, b1, W2, W2T, b2, W3, b3, alpha,
               beta, leak, rest, need_grad, inv_norm, loglik, w_end, gW1, gb1, gW2, gb2, gW3,
               gb3, gls, gla, gbeta, gll, grest):
    """Fill the output rows of animals ``first`` to ``stop - 1`` (:func:`dnn_chunk`)."""
    T, K = x.shape[1], x.shape[2]
    H, D = W1.shape
    dt = x.dtype
    no_bias = np.zeros(H, dt)
    for a in range(first, stop):
        inp = np.empty((T, D), dt)
        h1 = np.empty((T, H), dt)
        h2 = np.empty((T, H), dt)
        out = np.empty((T, K), dt)
        p = np.empty(T, dt)
        pre = np.empty(H, dt)
        w = w0[a].copy()
        loglik_a = 0.0  # summed here, stored once: see _zero_rows
        gls_a, gla_a, gbeta_a, gll_a, grest_a = _zero_rows(K)
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[t])
            loglik_a += ll
            _affine(W1T, b1, inp[t], pre)
            _tanh_layer(pre, h1[t])
            _affine(W2T, b2, h1[t], pre)
            _tanh_layer(pre, h2[t])
            _dots(W3, b3, h2[t], out[t])
            for k in range(K):
                base = _base_gain(alpha, beta, k, u[a, t], y[a, t], p[t]) * x[a, t, k]
                w[k] += v * (scale[k] * out[t, k] + base)
            _leak(w, v, leak, rest, inp[t])
        w_end[a] = w
        loglik[a] = loglik_a
        if not need_grad:
            continue
        # per-trial gradients at each layer's output; zero where a trial does not count
        go = np.zeros((T, K), dt)
        g2 = np.zeros((T, H), dt)
        g1 = np.zeros((T, H), dt)
        gw = np.zeros(K, dt)  # d loss / d w_{t+1}
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue  # the weights pass through unchanged
            _back_output(gw, scale, out[t], go[t], gls_a)
            c = _back_base(gw, alpha, beta, u[a, t], x[a, t], y[a, t], p[t], gla_a, gbeta_a)
            _affine(W3, no_bias, go[t], g2[t])
            _back_tanh(g2[t], h2[t])
            _affine(W2, no_bias, g2[t], g1[t])
            _back_tanh(g1[t], h1[t])
            _back_leak(gw, leak, rest, inp[t], gll_a, grest_a)
            _back_policy(gw, W1T, g1[t], x[a, t], y[a, t], p[t], inv_norm)
            _back_base_policy(gw, c, x[a, t], p[t])
        _store_rows(a, (gls, gla, gbeta, gll, grest), (gls_a, gla_a, gbeta_a, gll_a, grest_a))
        _sum_outer(gW3[a], gb3[a], go, h2)
        _sum_outer(gW2[a], gb2[a], g2, h1)
        _sum_outer(gW1[a], gb1[a], g1, inp)


def dnn_chunk(x, u, y, valid, w0, params, need_grad=True, loss_norm=1.0):
    """Run the ``dnn`` rule (2 hidden tanh layers) over a chunk; see the module docstring.

    Parameters
    ----------
    x, u, y, valid, w0 : ndarray
        Chunk inputs and the weights before its first trial, all of one float dtype.
    params : sequence of ndarray
        ``scale, W1, b1, W2, b2, W3, b3, alpha, beta, leak, rest`` (``scale`` = exp of the
        rule's log-scale; ``alpha``, ``beta``: the classic part ``alpha (r - beta) (y - p) x``
        of the update, zeros for none; ``leak``, ``rest``: its leak ``-leak (w - rest)``,
        zeros for none), C-contiguous and of the inputs' dtype.
    need_grad : bool
        Also back-propagate.
    loss_norm : float
        The loss is ``-loglik.sum() / loss_norm``; gradients are of that loss.

    Returns
    -------
    loglik : ndarray (B,), float64
    w_end : ndarray (B, K), the inputs' dtype
    grads : tuple of ndarray, float64
        Gradients for ``W1, b1, W2, b2, W3, b3, log_scale, log_alpha, beta, log_leak, rest``.
    """
    scale, W1, b1, W2, b2, W3, b3, alpha, beta, leak, rest = params
    loglik, w_end, grads = outputs(x, (W1, b1, W2, b2, W3, b3, scale, alpha, beta, leak, rest))
    over_animals(_dnn_chunk, *x.shape[:2], WORK_PER_THREAD, x, u, y, valid, w0, scale, W1,
                 transposed(W1), b1, W2, transposed(W2), b2, W3, b3, alpha, beta, leak, rest,
                 bool(need_grad), loss_weight(scale, loss_norm), loglik, w_end, *grads)
    return loglik, w_end, summed(grads)


@numba.njit(inline="always")
def _gru_step(gi, gh, h, r, z, n, h_new):
    """One GRUCell step (gates r, z, n) from ``gi = W_ih x + b_ih`` and ``gh = W_hh h + b_hh``."""
    H = h.shape[0]
    one = _cast(h[0], 1.0)
    for i in range(H):
        r[i] = _sigmoid(gi[i] + gh[i])
        z[i] = _sigmoid(gi[H + i] + gh[H + i])
        n[i] = _tanh(gi[2 * H + i] + r[i] * gh[2 * H + i])
        h_new[i] = (one - z[i]) * n[i] + z[i] * h[i]


@numba.njit(inline="always")
def _back_gru_step(g_new, h, r, z, n, hn, g_in):
    """Set ``g_in``, the gradients at the input-side gate sums (r, z, n), from d loss / d h_new.

    The recurrent side's are the same for r and z, and ``g_in[n] * r`` for n; ``hn`` is
    ``W_hn h + b_hn``.
    """
    H = h.shape[0]
    one = _cast(h[0], 1.0)
    for i in range(H):
        gn = g_new[i] * (one - z[i])
        gz = g_new[i] * (h[i] - n[i])
        gan = gn * (one - n[i] * n[i])
        g_in[i] = gan * hn[i] * r[i] * (one - r[i])
        g_in[H + i] = gz * z[i] * (one - z[i])
        g_in[2 * H + i] = gan


@numba.njit(**_JIT)
def _rnn_chunk(first, stop, x, u, y, valid, w0, h0, scale, Wih, WihT, Whh, WhhT, bih, bhh, R1,
               R1T, c1, R2, c2, alpha, beta, leak, rest, order, gate_on, only, need_grad,
               inv_norm, loglik, w_end, h_end, gWih, gWhh, gbih, gbhh, gR1, gc1, gR2, gc2, gls,
               gla, gbeta, gll, grest):
    """Fill the output rows of animals ``first`` to ``stop - 1`` (:func:`rnn_chunk`)."""
    T, K = x.shape[1], x.shape[2]
    H = Whh.shape[1]
    D = Wih.shape[1]
    dt = x.dtype
    no_bias = np.zeros(3 * H, dt)
    for a in range(first, stop):
        inp = np.empty((T, D), dt)
        sc = np.empty(K, dt)  # the output scale, times the gate
        hs = np.empty((T + 1, H), dt)  # state before each trial
        r = np.empty((T, H), dt)
        zg = np.empty((T, H), dt)
        n = np.empty((T, H), dt)
        hn = np.empty((T, H), dt)  # W_hn h + b_hn
        hnew = np.empty((T, H), dt)
        ro = np.empty((T, H), dt)  # read-out hidden layer
        out = np.empty((T, K), dt)
        p = np.empty(T, dt)
        gi = np.empty(3 * H, dt)
        gh_ = np.empty(3 * H, dt)
        pre = np.empty(H, dt)
        w = w0[a].copy()
        loglik_a = 0.0  # summed here, stored once: see _zero_rows
        gls_a, gla_a, gbeta_a, gll_a, grest_a = _zero_rows(K)
        hs[0] = h0[a]
        for t in range(T):
            v = valid[a, t]
            p[t], ll = _policy(w, x[a, t], u[a, t], y[a, t], v, inp[t])
            loglik_a += ll
            _affine(WihT, bih, inp[t], gi)
            _affine(WhhT, bhh, hs[t], gh_)
            hn[t] = gh_[2 * H:]
            _gru_step(gi, gh_, hs[t], r[t], zg[t], n[t], hnew[t])
            _affine(R1T, c1, hnew[t], pre)
            _tanh_layer(pre, ro[t])
            _dots(R2, c2, ro[t], out[t])
            _gated_scale(scale, _gate_input(p[t], inp[t], gate_on), order, only, sc)
            for k in range(K):
                base = _base_gain(alpha, beta, k, u[a, t], y[a, t], p[t]) * x[a, t, k]
                w[k] += v * (sc[k] * out[t, k] + base)
            _leak(w, v, leak, rest, inp[t])
            if v > 0:
                hs[t + 1] = hnew[t]
            else:
                hs[t + 1] = hs[t]
        w_end[a] = w
        loglik[a] = loglik_a
        h_end[a] = hs[T]
        if not need_grad:
            continue
        # per-trial gradients at each layer's output; zero where a trial does not count
        g_ih = np.zeros((T, 3 * H), dt)  # r, z, n gates: input side
        g_hh = np.zeros((T, 3 * H), dt)  # r, z, n gates: recurrent side
        gro = np.zeros((T, H), dt)
        go = np.zeros((T, K), dt)
        gw = np.zeros(K, dt)  # d loss / d w_{t+1}
        gh = np.zeros(H, dt)  # d loss / d h_{t+1}
        gnew = np.empty(H, dt)
        carry = np.empty(H, dt)
        for t in range(T - 1, -1, -1):
            if valid[a, t] == 0:
                continue  # weights and state pass through unchanged
            q = _gate_input(p[t], inp[t], gate_on)
            _gated_scale(scale, q, order, only, sc)
            gq = 0.0  # d loss / d q, q the gate's probability: from d loss / d w_{t+1}
            if order > 0:  # d gate / d q = 4 order (1 - 2q)^(2 order - 1)
                for k in range(K):
                    if only < 0 or k == only:
                        gq += gw[k] * scale[k] * out[t, k]
                gq *= _gate_slope(q, order)
            _back_output(gw, sc, out[t], go[t], gls_a)
            c = _back_base(gw, alpha, beta, u[a, t], x[a, t], y[a, t], p[t], gla_a, gbeta_a)
            _affine(R2, no_bias, go[t], gro[t])
            _back_tanh(gro[t], ro[t])
            _affine(R1, gh, gro[t], gnew)  # into the new state: from the read-out and h_{t+1}
            _back_gru_step(gnew, hs[t], r[t], zg[t], n[t], hn[t], g_ih[t])
            for i in range(H):
                g_hh[t, i] = g_ih[t, i]
                g_hh[t, H + i] = g_ih[t, H + i]
                g_hh[t, 2 * H + i] = g_ih[t, 2 * H + i] * r[t, i]
                carry[i] = gnew[i] * zg[t, i]
            _affine(Whh, carry, g_hh[t], gh)
            _back_leak(gw, leak, rest, inp[t], gll_a, grest_a)
            _back_policy(gw, WihT, g_ih[t], x[a, t], y[a, t], p[t], inv_norm)
            _back_base_policy(gw, c, x[a, t], p[t])
            if gate_on == GATE_ON_P:  # q = p: dp / dw = p (1 - p) x
                _back_base_policy(gw, -gq, x[a, t], p[t])
            _back_gate_weight(gw, gq, q, gate_on, inp[t])
        _store_rows(a, (gls, gla, gbeta, gll, grest), (gls_a, gla_a, gbeta_a, gll_a, grest_a))
        _sum_outer(gWih[a], gbih[a], g_ih, inp)
        _sum_outer(gWhh[a], gbhh[a], g_hh, hs[:T])
        _sum_outer(gR1[a], gc1[a], gro, hnew)
        _sum_outer(gR2[a], gc2[a], go, ro)


def rnn_chunk(x, u, y, valid, w0, h0, params, need_grad=True, loss_norm=1.0, gate=0,
              gate_on=None, gate_all=True):
    """Run the ``rnn`` rule (GRU, then a 1-hidden-layer tanh read-out) over a chunk.

    Parameters are as in :func:`dnn_chunk`, plus ``h0`` (B, H), the GRU state before the
    chunk; ``params`` is ``scale, W_ih, W_hh, b_ih, b_hh, R1, c1, R2, c2, alpha, beta, leak,
    rest`` in torch's GRUCell layout (gates r, z, n); ``gate``, ``gate_on``, ``gate_all``
    gate the read-out as ``RNNRule``'s. Returns ``loglik, w_end, h_end, grads`` with
    gradients for ``W_ih, W_hh, b_ih, b_hh, R1, c1, R2, c2, log_scale, log_alpha, beta,
    log_leak, rest`` (float64).
    """
    scale, Wih, Whh, bih, bhh, R1, c1, R2, c2, alpha, beta, leak, rest = params
    loglik, w_end, grads = outputs(x, (Wih, Whh, bih, bhh, R1, c1, R2, c2, scale, alpha, beta,
                                       leak, rest))
    h_end = np.empty_like(h0)
    over_animals(_rnn_chunk, *x.shape[:2], WORK_PER_THREAD, x, u, y, valid, w0, h0, scale, Wih,
                 transposed(Wih), Whh, transposed(Whh), bih, bhh, R1, transposed(R1), c1, R2, c2,
                 alpha, beta, leak, rest, *gate_codes(gate, gate_on, gate_all), bool(need_grad),
                 loss_weight(scale, loss_norm), loglik, w_end, h_end, *grads)
    return loglik, w_end, h_end, summed(grads)


#: Animal-trials below which a thread is not worth waking (see
#: :func:`~ibl_learnrules.kernels.threads.over_animals`): a network trial forward and back
#: costs 1-3 us, so a thread gets at least half a millisecond of work, against the pool's
#: tens of microseconds to hand it over. (At 2,000 the estimator's TBPTT-100 chunks of 21-27
#: mice ran on one thread and the demo took 30 % longer.)
WORK_PER_THREAD = 500


def outputs(x, grad_like):
    """Return a network kernel's per-animal outputs, to be filled.

    ``loglik`` (B,) and ``w_end`` (B, K) for the inputs ``x`` (B, T, K), and float64 gradient
    rows (B, ...) shaped as each of ``grad_like``.
    """
    n = x.shape[0]
    grads = [np.zeros((n,) + np.shape(p)) for p in grad_like]
    return np.zeros(n), np.empty((n, x.shape[2]), x.dtype), grads


def summed(grads):
    """Sum the gradient rows over animals, in animal order (so threads change no bit)."""
    return tuple(g.sum(0) for g in grads)


def transposed(W):
    """``W.T`` laid out in memory: the forward passes read layers as ``b + WT.T @ v``."""
    return np.ascontiguousarray(W.T)


def loss_weight(scale, loss_norm):
    """Each trial's weight in the loss, ``1 / loss_norm``, in the parameters' dtype.

    The kernels take it as their ``inv_norm`` argument.
    """
    return scale.dtype.type(1.0 / loss_norm)


def gate_codes(gate, gate_on, gate_all) -> tuple[int, int, int]:
    """Return the kernels' gate arguments.

    The order, the weight whose sigmoid the gate reads (``GATE_ON_P``: the trial's p;
    ``GATE_AGAINST_BIAS``: weights 0 and 1, for ``"against_bias"``) and the weight it gates
    (-1: all).
    """
    if gate_on is None:
        on = GATE_ON_P
    elif gate_on == "against_bias":
        on = GATE_AGAINST_BIAS
    else:
        on = int(gate_on)
    return int(gate), on, -1 if gate_all else on
