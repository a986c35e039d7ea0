"""The compiled kernels and the torch loop compute the same thing."""

import numpy as np
import pytest
import torch

from ibl_learnrules import featurize, simulate_cohort
from ibl_learnrules.engine import ChunkRunner, TensorBatch, rollout, train_rule
from ibl_learnrules.rules import get_rule_class


@pytest.fixture(scope="module")
def batch():
    # 3 mice of unequal length, with no-go trials to exercise the masks
    trials = simulate_cohort(3, n_sessions=1, random_state=4, alpha=0.05)
    rng = np.random.default_rng(0)
    trials.loc[rng.choice(len(trials), 25, replace=False), "choice"] = 0
    arrays = featurize(trials, warn_nogo=False)
    return TensorBatch.from_arrays(arrays, torch.device("cpu"), dtype=torch.float64)


def make_rule(name, seed=0):
    torch.manual_seed(seed)
    # a large output scale makes the updates, and so any disagreement, visible
    return get_rule_class(name)(2, hidden_size=16, scale=0.05).double()


def run(rule, batch, engine, w0, chunks):
    runner = ChunkRunner(rule, batch, engine)
    rule.zero_grad(set_to_none=True)
    w, state = runner.start(w0)
    total, states = 0.0, []
    for a, b in chunks:
        loglik, w, state = runner(w, state, a, b, need_grad=True, loss_norm=100.0)
        total += loglik
        states.append(np.asarray(torch.as_tensor(w)).copy())
    grads = {k: p.grad.clone() for k, p in rule.named_parameters()}
    return total, states, grads


@pytest.mark.parametrize("name", ["dnn", "rnn"])
def test_fused_kernel_matches_the_torch_loop(batch, name):
    rule = make_rule(name)
    generator = torch.Generator().manual_seed(1)
    w0 = torch.randn(batch.n_animals, 2, dtype=torch.float64, generator=generator)
    chunks = [(0, 150), (150, 400), (400, batch.n_trials)]
    ref = run(rule, batch, "torch", w0, chunks)
    fast = run(rule, batch, "fused", w0, chunks)
    assert fast[0] == pytest.approx(ref[0], rel=1e-10)
    for w_ref, w_fast in zip(ref[1], fast[1], strict=True):
        np.testing.assert_allclose(w_fast, w_ref, rtol=1e-10, atol=1e-12)
    for key, g in ref[2].items():
        assert g.abs().max() > 0, key
        np.testing.assert_allclose(fast[2][key].numpy(), g.numpy(), rtol=1e-8, atol=1e-12,
                                   err_msg=key)


@pytest.mark.parametrize("name", ["dnn", "rnn"])
def test_training_is_the_same_with_either_engine(batch, name):
    w0 = torch.zeros(batch.n_animals, 2, dtype=torch.float64)
    histories, params = [], []
    for engine in ("torch", "fused"):
        rule = make_rule(name)
        hist = train_rule(rule, batch, w0, max_epochs=3, lr=0.01, tbptt=200, engine=engine)
        histories.append(hist.train_loss)
        params.append(torch.cat([p.detach().flatten() for p in rule.parameters()]))
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-8)
    np.testing.assert_allclose(params[1].numpy(), params[0].numpy(), rtol=1e-6, atol=1e-9)


def test_predictions_after_fused_training_use_the_torch_rollout(batch):
    rule = make_rule("dnn")
    w0 = torch.zeros(batch.n_animals, 2, dtype=torch.float64)
    runner = ChunkRunner(rule, batch, "fused")
    w, state = runner.start(w0)
    loglik, w_end, _ = runner(w, state, 0, batch.n_trials, need_grad=False)
    with torch.no_grad():
        res = rollout(rule, batch, w0)
    assert loglik == pytest.approx(float(res.loglik.sum()), rel=1e-10)
    np.testing.assert_allclose(w_end, res.w.numpy(), rtol=1e-10)


def test_fused_engine_refuses_rules_without_a_kernel(batch):
    with pytest.raises(ValueError, match="rule 'dnn' on cpu has none"):
        ChunkRunner(get_rule_class("dnn")(2, n_layers=3).double(), batch, "fused")
    with pytest.raises(ValueError, match="engine must be"):
        ChunkRunner(make_rule("dnn"), batch, "numba")


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_schedule(batch, schedule):
    torch.manual_seed(0)
    rule = get_rule_class("reinforce")(2).double()
    w0 = torch.zeros(batch.n_animals, 2, dtype=torch.float64)
    epochs, lr = 4, 0.02
    hist = train_rule(rule, batch, w0, max_epochs=epochs, lr=lr, tbptt=200, lr_schedule=schedule)
    expected = np.full(epochs, lr)
    if schedule == "cosine":  # from lr towards 0 along half a cosine, one step per epoch
        expected = lr * (1 + np.cos(np.pi * np.arange(epochs) / epochs)) / 2
    np.testing.assert_allclose(hist.lr, expected, rtol=1e-12)


def test_unknown_learning_rate_schedule_is_refused(batch):
    rule = get_rule_class("reinforce")(2).double()
    w0 = torch.zeros(batch.n_animals, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['constant', 'cosine'\]"):
        train_rule(rule, batch, w0, max_epochs=1, lr=0.01, tbptt=200, lr_schedule="step")
