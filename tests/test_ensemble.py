"""Seed ensembles: members, the averaged likelihood, and use in held-out comparisons."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold

from ibl_learnrules import LearningRuleGLM, SeedEnsemble, simulate_cohort
from ibl_learnrules.evaluation import compare_rules
from ibl_learnrules.twins import check_twins


@pytest.fixture(scope="module")
def cohort():
    trials = simulate_cohort(4, n_trials=250, random_state=3)
    trials.loc[trials.index[::41], "choice"] = 0  # no-go trials stay NaN
    return trials


@pytest.fixture(scope="module")
def fitted(cohort):
    est = LearningRuleGLM(rule="dnn", max_epochs=3)
    return SeedEnsemble(est, n_members=3, random_state=5).fit(cohort)


def test_members_are_the_estimator_with_successive_seeds(cohort, fitted):
    assert [m.random_state for m in fitted.estimators_] == [5, 6, 7]
    alone = LearningRuleGLM(rule="dnn", max_epochs=3, random_state=6).fit(cohort)
    for p, q in zip(fitted.estimators_[1].rule_.parameters(), alone.rule_.parameters(),
                    strict=True):
        assert torch.equal(p, q)
    first = fitted.estimators_[0].rule_.parameters()
    assert not all(torch.equal(p, q) for p, q in zip(first, alone.rule_.parameters(),
                                                      strict=True))


def test_likelihood_is_that_of_the_mixture(cohort, fitted):
    members = np.stack([m.score_samples(cohort) for m in fitted.estimators_])
    got = fitted.score_samples(cohort)
    nogo = (cohort["choice"] == 0).to_numpy()
    assert np.isnan(got[nogo]).all() and not np.isnan(got[~nogo]).any()
    expected = np.log(np.exp(members[:, ~nogo]).mean(0))
    np.testing.assert_allclose(got[~nogo], expected, rtol=1e-12)
    # Jensen: never below the members' mean log-likelihood, never above the best member
    assert (got[~nogo] >= members[:, ~nogo].mean(0) - 1e-12).all()
    assert (got[~nogo] <= members[:, ~nogo].max(0) + 1e-12).all()
    assert fitted.score(cohort) == pytest.approx(np.nanmean(got))
    proba = fitted.predict_proba(cohort)
    np.testing.assert_allclose(proba, np.mean([m.predict_proba(cohort)
                                               for m in fitted.estimators_], 0))
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert set(fitted.predict(cohort)) <= {0, 1}


def test_one_member_is_the_estimator(cohort):
    est = LearningRuleGLM(rule="reinforce", max_epochs=2, random_state=0)
    one = SeedEnsemble(est, n_members=1, random_state=0).fit(cohort)
    np.testing.assert_array_equal(one.score_samples(cohort), est.fit(cohort).score_samples(cohort))


def test_compare_rules_takes_an_ensemble(cohort):
    ens = SeedEnsemble(LearningRuleGLM(rule="reinforce", max_epochs=2), n_members=2)
    table = compare_rules(cohort, {"reinforce x2": ens}, cv=GroupKFold(2), seeds=(0, 10))
    assert sorted(table["seed"].unique()) == [0, 10] and len(table) == 8
    assert np.isfinite(table["loglik"]).all()


@pytest.mark.parametrize("params, error, pattern", [
    (dict(n_members=0), ValueError, "n_members must be a positive integer"),
    (dict(n_members=1.5), ValueError, "n_members must be a positive integer"),
    (dict(estimator="dnn"), TypeError, "estimator must be a LearningRuleGLM"),
])
def test_bad_parameters(cohort, params, error, pattern):
    with pytest.raises(error, match=pattern):
        SeedEnsemble(**params).fit(cohort)


def test_not_fitted(cohort):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        SeedEnsemble().score(cohort)


@pytest.fixture(scope="module")
def learner_and_fixed(cohort):
    # two members that cannot be confused: one learns (REINFORCE, a large rate), one never does
    ens = SeedEnsemble(LearningRuleGLM(rule="none", max_epochs=1), n_members=2,
                       random_state=0).fit(cohort)
    learner = LearningRuleGLM(rule="reinforce", rule_params={"alpha": 0.5}, max_epochs=1,
                              lr=1e-6, random_state=0).fit(cohort)
    ens.estimators_ = [learner, ens.estimators_[0]]
    return ens


def _moves(run):
    """Whether each simulated animal's weights ever change."""
    return run.groupby("subject")["w_stimulus"].agg(lambda w: w.nunique() > 1)


def test_free_twins_are_shared_out_among_the_members(learner_and_fixed):
    free = learner_and_fixed.simulate({"n_subjects": 5, "n_sessions": 1}, random_state=1)
    moves = _moves(free)
    assert list(moves.index) == [f"sim{i:03d}" for i in range(5)]
    assert moves.tolist() == [True, False, True, False, True]  # twin i is member i % 2's


def test_replays_draw_a_member_per_animal_and_check_twins_takes_an_ensemble(
        cohort, learner_and_fixed):
    one = cohort[cohort["subject"] == cohort["subject"].iloc[0]]
    drawn = {bool(_moves(learner_and_fixed.simulate(one, random_state=s)).iloc[0])
             for s in range(12)}
    assert drawn == {True, False}
    again = learner_and_fixed.simulate(one, random_state=3)
    assert again.equals(learner_and_fixed.simulate(one, random_state=3))
    # twelve copies of one animal in one call: each copy is replayed by a member of its own
    copies = pd.concat([one.assign(subject=f"copy{i:02d}") for i in range(12)])
    replayed = learner_and_fixed.simulate(copies, random_state=0)
    assert set(_moves(replayed)) == {True, False}
    assert replayed["subject"].is_monotonic_increasing  # the contract's order
    assert len(replayed) == len(copies)
    check = check_twins(learner_and_fixed, one, n_twins=4, random_state=0, psychometrics=False)
    assert check.sessions.groupby("mode")["twin"].nunique().to_dict() == {
        "animal": 1, "free": 4, "replay": 4}
