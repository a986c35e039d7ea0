"""Numerical trouble in training: detected, named (epoch, animal), cured or stopped cleanly.

Each input here is built to blow up. Without the checks of ``train_rule`` the first two fits
end with NaN parameters, the third with huge-covariate NaNs, and the diverging rule returns a
model whose weights reach 1e4 and whose score is thousands of nats per trial, silently.
"""

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


@pytest.mark.parametrize("rule", ["reinforce", "dnn"])
def test_a_huge_learning_rate_is_lowered_until_training_is_finite(cohort, rule):
    est = LearningRuleGLM(rule=rule, hidden_size=8, max_epochs=3, lr=1e3, tbptt=100,
                          random_state=0)
    with pytest.warns(NumericalWarning) as caught:
        est.fit(cohort)
    messages = [str(w.message) for w in caught if w.category is NumericalWarning]
    assert 1 <= len(messages) <= 3
    assert "epoch 0, trials 100-200" in messages[0] and "'sim000'" in messages[0]
    assert "learning rate 100" in messages[0]
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
    with pytest.warns(NumericalWarning, match=r"epoch 2, trials 0-100: weights exploded"):
        est.fit(cohort)
    assert all_finite(est) and est.n_iter_ == 4
    assert est.rule_.log_alpha.max() < 0  # back near log(0.01), not 10
    assert est.history_["train_loss"].max() < 1.0


def test_huge_covariates_name_the_animal(cohort):
    arrays = featurize(cohort)
    batch = TensorBatch.from_arrays(arrays, torch.device("cpu"))
    batch.x[1] *= 1e30  # one animal's stimulus values overflow its logits
    rule = Reinforce(2)
    with pytest.warns(NumericalWarning), pytest.raises(NumericalTroubleError) as err:
        train_rule(rule, batch, torch.zeros(3, 2), max_epochs=2, lr=0.01, tbptt=100,
                   names=arrays.subjects)
    message = str(err.value)
    assert "epoch 0, trials 0-100: non-finite loss; animal 'sim001';" in message
    assert "'sim000'" not in message and "lowered 3 time(s)" in message
    assert all(torch.isfinite(p).all() for p in rule.parameters())  # the start, restored


def test_a_rule_initialised_to_diverge_stops_with_a_clear_error(cohort):
    est = LearningRuleGLM(rule="reinforce", rule_params={"alpha": 1e4}, max_epochs=2,
                          tbptt=100, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(FloatingPointError, match=r"epoch 0, trials 0-100: weights exploded "
                                                     r"\(\|w\| = 1e\+04 > 1e\+03\); animals "
                                                     r"'sim000', 'sim001', 'sim002'"):
            est.fit(cohort)
    assert sum(w.category is NumericalWarning for w in caught) == 3  # bounded retries
    assert not hasattr(est, "rule_")  # no half-fitted model is left behind


def test_trouble_on_validation_animals_is_named(cohort):
    # the validation animal's covariates are only seen by the validation pass
    arrays = featurize(cohort)
    train = TensorBatch.from_arrays(arrays.take([0, 1]), torch.device("cpu"))
    val = TensorBatch.from_arrays(arrays.take([2]), torch.device("cpu"))
    val.x *= 1e30
    with pytest.warns(NumericalWarning), pytest.raises(NumericalTroubleError,
                                                       match="validation: non-finite loss; "
                                                             "animal 'sim002'"):
        train_rule(Reinforce(2), train, torch.zeros(2, 2), max_epochs=2, lr=0.01, tbptt=100,
                   val_batch=val, val_w0=torch.zeros(1, 2), names=arrays.subjects[:2],
                   val_names=arrays.subjects[2:])
