"""The training engine: engine choice and learning-rate schedules.

The kernels' equality with the torch loop is in ``test_kernels.py``.
"""

import dataclasses

import numpy as np
import pytest
import torch

from ibl_learnrules import featurize, simulate_cohort
from ibl_learnrules.engine import ChunkRunner, TensorBatch, train_rule
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


def _doubled(batch):
    """The same animals twice: twice the trials, the same per-trial mean loss in every chunk."""
    return TensorBatch(**{f.name: torch.cat([getattr(batch, f.name)] * 2)
                          for f in dataclasses.fields(batch)})


def _fit_correction(batch, prior):
    rule = make_rule("dnn")
    w0 = torch.zeros(batch.n_animals, 2, dtype=torch.float64)
    train_rule(rule, batch, w0, max_epochs=3, lr=0.01, tbptt=100, correction_prior=prior)
    return torch.cat([p.detach().flatten() for p in rule.correction_parameters()])


def test_correction_prior_weakens_as_the_trials_grow(batch):
    # the prior is added to the total negative log-likelihood: twice the same trials with
    # twice the precision is the very same objective per trial, so the very same fit
    np.testing.assert_allclose(_fit_correction(_doubled(batch), 2e4),
                               _fit_correction(batch, 1e4), rtol=1e-9, atol=1e-12)
    # while twice the trials under the same precision are shrunk less
    assert not torch.allclose(_fit_correction(_doubled(batch), 1e4),
                              _fit_correction(batch, 1e4), rtol=1e-3)


def test_a_strong_correction_prior_shrinks_the_correction_only(batch):
    start = torch.cat([p.detach().flatten() for p in make_rule("dnn").correction_parameters()])
    free, shrunk = _fit_correction(batch, 0.0), _fit_correction(batch, 1e6)
    # 3 epochs of Adam at rate 0.01 move a parameter by at most ~0.3 either way; the prior
    # pulls every one of them toward 0, so the shrunk network ends nearer 0 than it began
    assert shrunk.norm() < 0.5 * start.norm() < free.norm()
    # the nested rule's own parameters are not in the prior
    rule = make_rule("dnn")
    names = {n for n, p in rule.named_parameters()
             if any(p is q for q in rule.correction_parameters())}
    assert not names & {"log_scale", "log_alpha", "beta"}


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_training_holds_torch_to_one_cpu_thread_and_restores_it(batch, engine):
    # between chunks torch steps a few thousand parameters; more threads would spin on the
    # cores the kernels' threads need
    threads = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(2)
        train_rule(make_rule("dnn"), batch, torch.zeros(batch.n_animals, 2, dtype=torch.float64),
                   max_epochs=2, lr=0.01, tbptt=100, engine=engine,
                   progress=lambda *_: seen.append(torch.get_num_threads()))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 1]
    assert after == 2
