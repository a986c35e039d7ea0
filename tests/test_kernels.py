"""Every registered rule's compiled kernel computes what the torch loop computes.

The tests are generated from the rule registry: a rule that gains a kernel is held to
:func:`ibl_learnrules.engine.rollout` (loss, carried weights and state, every gradient)
without a line here, and a rule of the package without a kernel fails
``test_every_rule_of_the_package_has_a_kernel``.
"""

import multiprocessing
import subprocess
import sys

import numpy as np
import pytest
import torch

from ibl_learnrules.engine import ChunkRunner, TensorBatch, rollout, train_rule
from ibl_learnrules.kernels import threads
from ibl_learnrules.rules import RULES, get_rule_class

#: Rules defined by the package (not by tests, which may register their own).
PACKAGE_RULES = sorted(name for name, cls in RULES.items()
                       if cls.__module__.startswith("ibl_learnrules."))
#: Constructor arguments: a large output scale makes the networks' updates, and so any
#: disagreement, visible.
CONSTRUCT = {"dnn": dict(hidden_size=16, scale=0.05), "rnn": dict(hidden_size=16, scale=0.05),
             "reinforce_baseline_leak": dict(leak=0.05, rest=0.3)}
#: Constructions tested besides each rule's defaults, as "<rule>:<variant>": the network rules
#: with and without a classic rule (with or without its leak) nested in them.
VARIANTS = {f"{net}:{label}": dict(base=base) for net in ("dnn", "rnn")
            for label, base in (("plain", None), ("nested", "reinforce_baseline"))}
# a leak large enough that its share of the gradients shows
VARIANTS.update({f"{net}:nested_leak": dict(base="reinforce_baseline_leak", leak=0.05, rest=0.3)
                 for net in ("dnn", "rnn")})
# the dnn's correction centred on the policy's own choice (a third network branch), with and
# without the leak, and centred evenly
VARIANTS.update({"dnn:centred": dict(base="reinforce_baseline", centre="policy"),
                 "dnn:centred_leak": dict(base="reinforce_baseline_leak", leak=0.05, rest=0.3,
                                          centre="policy"),
                 "dnn:even": dict(base="reinforce_baseline", centre="even"),
                 "dnn:gate": dict(base="reinforce_baseline", gate=True),
                 "dnn:gate_on": dict(base="reinforce_baseline", gate=2, gate_on=0),
                 "dnn:even_gate": dict(base="reinforce_baseline_leak", leak=0.05, rest=0.3,
                                       centre="even", gate=3),
                 # the rnn's read-out gated on the trial's p and on a weight's sigmoid
                 "rnn:gate": dict(base="reinforce_baseline_leak", leak=0.05, rest=0.3, gate=2),
                 "rnn:gate_on": dict(base="reinforce_baseline", gate=1, gate_on=0),
                 # the gate on weight 0's own correction alone
                 "dnn:gate_own": dict(base="reinforce_baseline", gate=2, gate_on=0,
                                      gate_all=False),
                 "rnn:gate_own": dict(base="reinforce_baseline", gate=2, gate_on=0,
                                      gate_all=False),
                 # a larger correction, so that the gate's path back to the weights counts
                 "dnn:gate_against": dict(base="reinforce_baseline", gate=1, scale=0.05,
                                          gate_on="against_bias"),
                 "rnn:gate_against": dict(base="reinforce_baseline", gate=2,
                                          gate_on="against_bias")})
# (B, T, K) and TBPTT chunks; animal 1 ends inside the second chunk, so the last is padding
SHAPES = {
    "K1": (3, 160, 1, [(0, 37), (37, 100), (100, 160)]),
    "K2": (4, 200, 2, [(0, 64), (64, 130), (130, 200)]),
    "K3": (2, 150, 3, [(0, 50), (50, 90), (90, 150)]),
}


def make_rule(name, n_weights, seed=0, dtype=torch.float64):
    """The rule with every parameter moved off its default, so that every gradient counts."""
    torch.manual_seed(seed)
    rule_name = name.partition(":")[0]
    kwargs = {**CONSTRUCT.get(rule_name, {}), **VARIANTS.get(name, {})}
    rule = get_rule_class(rule_name)(n_weights, **kwargs).to(dtype)
    with torch.no_grad():
        for p in rule.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return rule


def _cancelled(name: str) -> set[str]:
    """Parameters whose gradient is zero but for rounding: a centred correction cancels the
    output layer's bias (it adds to both choices alike)."""
    return {"mlp.4.bias"} if VARIANTS.get(name, {}).get("centre") == "policy" else set()


KERNEL_RULES = [name for name in [*PACKAGE_RULES, *VARIANTS]
                if make_rule(name, 2).chunk_kernel() is not None]


def random_batch(n_animals, n_trials, n_weights, seed=0, dtype=torch.float64):
    """Random trials of unequal length (padded), with no-go trials and new sessions."""
    g = torch.Generator().manual_seed(seed)

    def bernoulli(prob):
        return (torch.rand(n_animals, n_trials, generator=g) < prob).to(dtype)

    x = torch.randn(n_animals, n_trials, n_weights, generator=g).to(dtype)
    y, correct = bernoulli(0.5), bernoulli(0.5)
    reward = (y == correct).to(dtype)
    new_session = bernoulli(0.02)
    new_session[:, 0] = 1.0
    valid = 1.0 - bernoulli(0.08)  # no-go trials
    lengths = n_trials - torch.randint(0, n_trials // 4, (n_animals,), generator=g)
    lengths[0], lengths[1] = n_trials, n_trials * 3 // 5
    padding = torch.arange(n_trials)[None, :] >= lengths[:, None]
    for a in (x, y, correct, reward, new_session, valid):
        a[padding] = 0.0
    return TensorBatch(x=x, y=y, reward=reward, correct_side=correct, new_session=new_session,
                       valid=valid)


def as_arrays(state):
    """A rule state (tensor or numpy array, tuple of them, or None) as a list of arrays."""
    if state is None:
        return []
    if isinstance(state, tuple | list):
        return [a for s in state for a in as_arrays(s)]
    return [np.asarray(torch.as_tensor(state).detach()).copy()]


def run_chunks(rule, batch, engine, w0, chunks, loss_norm=50.0):
    """Per chunk: log-likelihood, carried weights and state, and the parameters' gradients."""
    runner = ChunkRunner(rule, batch, engine)
    w, state = runner.start(w0)
    out = []
    for a, b in chunks:
        rule.zero_grad(set_to_none=False)
        loglik, w, state = runner(w, state, a, b, need_grad=True, loss_norm=loss_norm)
        grads = {k: p.grad.detach().clone().numpy() for k, p in rule.named_parameters()}
        out.append((loglik, as_arrays(w)[0], as_arrays(state), grads))
    return out


def start_weights(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(batch.n_animals, batch.x.shape[-1], generator=g).to(batch.x.dtype)


def test_the_generated_tests_cover_the_classic_and_network_rules():
    assert {"none", "reinforce", "q_learning", "reward_history", "dnn", "rnn"} <= set(
        KERNEL_RULES)


def test_every_rule_of_the_package_has_a_kernel():
    missing = [name for name in PACKAGE_RULES if make_rule(name, 2).chunk_kernel() is None]
    assert not missing, f"rules without a compiled chunk kernel: {missing}"


@pytest.mark.parametrize(("name", "shape"), [
    (name, shape) for name in KERNEL_RULES for shape in sorted(SHAPES)
    # the gate against the bias reads two weights
    if not (shape == "K1" and VARIANTS.get(name, {}).get("gate_on") == "against_bias")])
def test_kernel_matches_the_torch_loop(name, shape):
    n_animals, n_trials, k, chunks = SHAPES[shape]
    batch = random_batch(n_animals, n_trials, k, seed=k)
    w0 = start_weights(batch)
    ref = run_chunks(make_rule(name, k), batch, "torch", w0, chunks)
    fast = run_chunks(make_rule(name, k), batch, "fused", w0, chunks)
    assert sum(c[0] for c in fast) == pytest.approx(sum(c[0] for c in ref), rel=1e-10)
    for i, (r, f) in enumerate(zip(ref, fast, strict=True)):
        assert f[0] == pytest.approx(r[0], rel=1e-10), f"chunk {i}"
        np.testing.assert_allclose(f[1], r[1], rtol=1e-10, atol=1e-12,
                                   err_msg=f"weights after chunk {i}")
        assert len(f[2]) == len(r[2])
        for s_fast, s_ref in zip(f[2], r[2], strict=True):
            np.testing.assert_allclose(s_fast, s_ref, rtol=1e-10, atol=1e-12,
                                       err_msg=f"state after chunk {i}")
        assert f[3].keys() == r[3].keys()
        for key, g in r[3].items():
            np.testing.assert_allclose(f[3][key], g, rtol=1e-8, atol=1e-12,
                                       err_msg=f"{key}, chunk {i}")
    for c in ref:
        largest = max(np.abs(g).max() for g in c[3].values())
        for key, g in c[3].items():
            if key in _cancelled(name):  # zero up to rounding
                assert np.abs(g).max() < 1e-12 * largest, key
            else:
                assert np.abs(g).max() > 0, f"{key} has a zero gradient"


@pytest.mark.parametrize("name", KERNEL_RULES)
def test_float32_kernel_agrees_with_the_torch_loop(name):
    # Each side rounds to float32 (eps 6e-8) on every trial, in its own order (the network
    # kernels even work in float64); the differences compound over a chunk's few hundred
    # trials like a random walk, to ~1e-7..1e-6 relative (measured up to 3e-6 in the
    # weights, 1e-6 of the largest gradient entry). A gradient sums per-trial terms of both
    # signs, so its error is judged against its largest entry. The bounds leave ~10x margin.
    n_animals, n_trials, k, chunks = SHAPES["K2"]
    batch = random_batch(n_animals, n_trials, k, seed=5, dtype=torch.float32)
    w0 = start_weights(batch)
    ref = run_chunks(make_rule(name, k, dtype=torch.float32), batch, "torch", w0, chunks)
    fast = run_chunks(make_rule(name, k, dtype=torch.float32), batch, "fused", w0, chunks)
    for r, f in zip(ref, fast, strict=True):
        assert f[0] == pytest.approx(r[0], rel=1e-5)
        np.testing.assert_allclose(f[1], r[1], rtol=1e-5, atol=2e-5)
        for s_fast, s_ref in zip(f[2], r[2], strict=True):
            np.testing.assert_allclose(s_fast, s_ref, rtol=1e-5, atol=2e-5)
        largest = max(np.abs(g).max() for g in r[3].values())
        for key, g in r[3].items():
            assert f[3][key].dtype == np.float32
            size = largest if key in _cancelled(name) else np.abs(g).max()
            np.testing.assert_allclose(f[3][key], g, rtol=0, atol=2e-5 * size, err_msg=key)


@pytest.mark.parametrize("name", KERNEL_RULES)
def test_training_is_the_same_with_either_engine(name):
    batch = random_batch(3, 240, 2, seed=7)
    w0 = start_weights(batch)
    histories, params = [], []
    for engine in ("torch", "fused"):
        rule = make_rule(name, 2)
        hist = train_rule(rule, batch, w0, max_epochs=2, lr=0.01, tbptt=100, engine=engine)
        histories.append(hist.train_loss)
        params.append(torch.cat([p.detach().flatten() for p in rule.parameters()]))
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-8)
    np.testing.assert_allclose(params[1].numpy(), params[0].numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", KERNEL_RULES)
def test_predictions_after_fused_training_use_the_torch_rollout(name):
    batch = random_batch(3, 300, 2, seed=8)
    w0 = start_weights(batch)
    rule = make_rule(name, 2)
    train_rule(rule, batch, w0, max_epochs=1, lr=0.01, tbptt=120, engine="fused")
    runner = ChunkRunner(rule, batch, "fused")
    w, state = runner.start(w0)
    loglik, w_end, state_end = runner(w, state, 0, batch.n_trials, need_grad=False)
    with torch.no_grad():
        res = rollout(rule, batch, w0, rule.initial_state(batch.n_animals))
    assert loglik == pytest.approx(float(res.loglik.sum()), rel=1e-10)
    np.testing.assert_allclose(w_end, res.w.numpy(), rtol=1e-10, atol=1e-12)
    for s_fast, s_ref in zip(as_arrays(state_end), as_arrays(res.state), strict=True):
        np.testing.assert_allclose(s_fast, s_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["reinforce", "q_learning", "reward_history", "dnn:nested",
                                  "rnn:gate_against", "dnn:gate_against"])
def test_kernels_do_not_depend_on_the_threads(name, monkeypatch):
    # typical test chunks run on one thread; split the animals into three groups on threads
    # (whatever NUMBA_NUM_THREADS allows) and expect the same bits
    batch = random_batch(4, 200, 2, seed=9)
    w0 = start_weights(batch)
    chunks = SHAPES["K2"][3]
    serial = run_chunks(make_rule(name, 2), batch, "fused", w0, chunks)
    split = []

    def three(n_animals, *_):
        split.append(n_animals)
        return 3

    monkeypatch.setattr(threads, "threads_for", three)
    torch_threads = torch.get_num_threads()
    parallel = run_chunks(make_rule(name, 2), batch, "fused", w0, chunks)
    assert split and all(n == 4 for n in split)
    # the kernel leaves torch's threads alone
    assert torch.get_num_threads() == torch_threads
    for s, p in zip(serial, parallel, strict=True):
        assert s[0] == p[0]
        np.testing.assert_array_equal(s[1], p[1])
        for a, b in zip(s[2], p[2], strict=True):
            np.testing.assert_array_equal(a, b)
        for key in s[3]:
            np.testing.assert_array_equal(s[3][key], p[3][key])


def test_over_animals_runs_every_group_and_raises_their_errors(monkeypatch):
    monkeypatch.setattr(threads, "threads_for", lambda *_: 3)
    seen = np.zeros(7)

    def mark(first, stop, out):
        out[first:stop] += 1

    threads.over_animals(mark, 7, 100, 1, seen)
    np.testing.assert_array_equal(seen, 1)  # each animal once, whichever thread

    def fail(first, stop):
        if first == 0:
            raise ValueError("group 0 failed")

    with pytest.raises(ValueError, match="group 0"):
        threads.over_animals(fail, 7, 100, 1)


def _three_groups_in_a_child(queue):
    threads.threads_for = lambda *_: 3
    seen = np.zeros(5)
    threads.over_animals(lambda first, stop: seen.__setitem__(slice(first, stop), 1), 5, 1, 1)
    queue.put(seen.sum())


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_a_forked_child_runs_groups_on_threads_of_its_own(monkeypatch):
    # the parent's pool has started its threads; a forked child has none of them
    monkeypatch.setattr(threads, "threads_for", lambda *_: 3)
    threads.over_animals(lambda first, stop: None, 5, 1, 1)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_three_groups_in_a_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "the forked child waited on its parent's pool"
    assert queue.get(timeout=5) == 5


def test_a_subclass_does_not_inherit_its_parents_kernel():
    # it may change the update, which the compiled kernel would not see
    class Doubled(get_rule_class("reinforce")):
        def gain(self, trial):
            return 2.0 * super().gain(trial)

    assert Doubled(2).chunk_kernel() is None


def test_counting_threads_leaves_numbas_threading_layer_unstarted(tmp_path):
    # starting it sets the OpenMP thread count torch shares (see kernels/threads.py)
    code = ("from numba.np.ufunc import parallel\n"
            "from ibl_learnrules.kernels import threads\n"
            "assert threads.threads_for(4, 10_000, 1) >= 1\n"
            "print(parallel._is_initialized)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False"
