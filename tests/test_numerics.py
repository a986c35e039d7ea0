"""Numerical trouble in training: detected, named (epoch, animal), cured or stopped cleanly.

Each input here is built to blow up. Without the checks of ``train_rule`` the huge learning
rates and covariates end in NaN parameters (or a bare RuntimeError from Adam), and the
diverging rules return models whose weights reach 1e4-1e20 and whose scores are thousands of
nats per trial, silently.
"""

import contextlib
import warnings

import numpy as np
import pytest
import torch

import ibl_learnrules.engine as engine
from ibl_learnrules import LearningRuleGLM, featurize, simulate_cohort
from ibl_learnrules.engine import TensorBatch, train_rule
from ibl_learnrules.numerics import NumericalTroubleError, NumericalWarning
from ibl_learnrules.rules import Reinforce


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(3, n_trials=300, random_state=0, alpha=0.05)


def all_finite(est):
    return all(bool(torch.isfinite(p).all()) for p in est.rule_.parameters())


@contextlib.contextmanager
def numerical_warnings():
    """Collect the messages of the NumericalWarnings raised in the block (even if it raises)."""
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            messages.extend(str(w.message) for w in caught if w.category is NumericalWarning)


@pytest.mark.parametrize("rule", ["reinforce", "dnn"])
def test_a_huge_learning_rate_is_lowered_until_training_is_finite(cohort, rule):
    est = LearningRuleGLM(rule=rule, hidden_size=8, max_epochs=3, lr=1e3, tbptt=100,
                          random_state=0)
    with numerical_warnings() as messages:
        est.fit(cohort)
    assert 1 <= len(messages) <= 3
    assert messages[0].startswith("numerical trouble at epoch 0, trials 100-200: ")
    assert "animals 'sim000', 'sim001', 'sim002'" in messages[0]
    assert messages[0].endswith("the epoch is run again with learning rate 100")
    assert all_finite(est) and np.isfinite(est.score(cohort))
    assert est.n_iter_ == 3 and est.history_["train_loss"].notna().all()


def test_the_last_good_epoch_is_restored(cohort, monkeypatch):
    rules = []

    # spoil the parameters after epoch 1 (as a bad step would): epoch 2 explodes
    def progress(epoch, train_loss, val_loss):
        if epoch == 1:
            with torch.no_grad():
                rules[0].log_alpha.fill_(10.0)

    def train_rule_spoiled(rule, *args, **kwargs):
        rules.append(rule)
        return train_rule(rule, *args, **dict(kwargs, progress=progress))

    monkeypatch.setattr(engine, "train_rule", train_rule_spoiled)
    est = LearningRuleGLM(rule="reinforce", max_epochs=4, lr=0.01, tbptt=100, random_state=0)
    with numerical_warnings() as messages:
        est.fit(cohort)
    assert len(messages) == 1 and "epoch 2, trials 0-100: weights exploded" in messages[0]
    assert all_finite(est) and est.n_iter_ == 4
    assert est.rule_.log_alpha.max() < 0  # back near log(0.01), not 10
    assert est.history_["train_loss"].max() < 1.0
    np.testing.assert_allclose(est.history_["epoch"], range(4))


def test_huge_covariates_name_the_animal(cohort):
    arrays = featurize(cohort)
    batch = TensorBatch.from_arrays(arrays, torch.device("cpu"))
    batch.x[1] *= 1e30  # one animal's stimulus values overflow its logits
    rule = Reinforce(2)
    with numerical_warnings() as messages, pytest.raises(NumericalTroubleError) as err:
        train_rule(rule, batch, torch.zeros(3, 2), max_epochs=2, lr=0.01, tbptt=100,
                   names=arrays.subjects)
    assert len(messages) == 3  # bounded retries
    message = str(err.value)
    assert "epoch 0, trials 0-100: non-finite loss; animal 'sim001';" in message
    assert "'sim000'" not in message and "lowered 3 time(s)" in message
    assert "check those animals' covariates" in message
    assert all(torch.isfinite(p).all() for p in rule.parameters())  # the start, restored


def test_a_noisy_rule_in_trouble_names_the_animal(cohort):
    # the filter carries a belief (mean, covariance), not weights: the same checks apply
    from ibl_learnrules.filtering import FilterRunner, NoisyRule, WeightNoise

    arrays = featurize(cohort)
    batch = TensorBatch.from_arrays(arrays, torch.device("cpu"))
    batch.x[1] *= 1e30
    rule = NoisyRule(Reinforce(2), WeightNoise(2))
    with numerical_warnings() as messages, pytest.raises(NumericalTroubleError) as err:
        train_rule(rule, batch, torch.zeros(3, 2), max_epochs=2, lr=0.01, tbptt=100,
                   names=arrays.subjects, runner_class=FilterRunner)
    assert len(messages) == 3
    assert "animal 'sim001'" in str(err.value) and "'sim000'" not in str(err.value)
    assert all(torch.isfinite(p).all() for p in rule.parameters())


@pytest.mark.parametrize("alpha,what", [
    (1e4, r"weights exploded \(\|w\| = 1e\+04 > 1e\+03\)"),
    (1e20, "non-finite gradient"),  # finite weights of 1e20, and a gradient that overflows
])
def test_a_rule_initialised_to_diverge_stops_with_a_clear_error(cohort, alpha, what):
    est = LearningRuleGLM(rule="reinforce", rule_params={"alpha": alpha}, max_epochs=2,
                          tbptt=100, random_state=0)
    with numerical_warnings() as messages:
        with pytest.raises(FloatingPointError, match=rf"epoch 0, trials 0-100: {what}; animals "
                                                     r"'sim000', 'sim001', 'sim002'"):
            est.fit(cohort)
    assert len(messages) == 3  # bounded retries
    assert not hasattr(est, "rule_")  # no half-fitted model is left behind


def test_an_overflowing_optimiser_step_is_trouble_not_a_crash(cohort):
    # Adam's step size lr / (1 - beta1) overflows float32: torch raises a bare RuntimeError
    est = LearningRuleGLM(rule="reinforce", max_epochs=2, lr=1e38, tbptt=1000, random_state=0)
    with numerical_warnings() as messages:
        with pytest.raises(NumericalTroubleError, match="lowered 3 time"):
            est.fit(cohort)
    assert "epoch 0, trials 0-300: the optimiser step overflowed" in messages[0]


def test_fitted_glm_weights_are_bounded_too(cohort):
    # one chunk per epoch: the fixed GLM's weights (parameters) jump by lr in the last step
    est = LearningRuleGLM(rule="none", max_epochs=2, lr=3e3, tbptt=1000, random_state=0)
    with numerical_warnings() as messages:
        est.fit(cohort)
    assert messages == ["numerical trouble at epoch 0, the last step: weights exploded "
                        "(|w| = 3e+03 > 1e+03); the epoch is run again with learning rate 300"]
    assert all_finite(est) and est.rule_.weights.abs().max() <= 1e3


def test_trouble_on_validation_animals_is_named(cohort):
    # the validation animal's covariates are only seen by the validation pass
    arrays = featurize(cohort)
    train = TensorBatch.from_arrays(arrays.take([0, 1]), torch.device("cpu"))
    val = TensorBatch.from_arrays(arrays.take([2]), torch.device("cpu"))
    val.x *= 1e30
    with numerical_warnings(), pytest.raises(NumericalTroubleError,
                                             match="validation: non-finite loss; "
                                                   "animal 'sim002'"):
        train_rule(Reinforce(2), train, torch.zeros(2, 2), max_epochs=2, lr=0.01, tbptt=100,
                   val_batch=val, val_w0=torch.zeros(1, 2), names=arrays.subjects[:2],
                   val_names=arrays.subjects[2:])


def test_the_cli_reports_numerical_failure_in_one_line(tmp_path, cohort, capsys):
    from ibl_learnrules.cli import main

    trials = tmp_path / "cohort.csv"
    cohort.to_csv(trials, index=False)
    with numerical_warnings():
        code = main(["fit", "--trials", str(trials), "--rule", "reinforce", "--epochs", "2",
                     "--lr", "1e38", "--tbptt", "1000", "--quiet", "--out",
                     str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "ibl-learnrules fit: error: training failed numerically at epoch" in err
    assert not (tmp_path / "m.pt").exists()
