"""Choosing the correction prior among candidates on held-out data of the training set."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import GroupKFold

from ibl_learnrules import LearningRuleGLM, load_model, save_model, simulate_cohort
from ibl_learnrules.evaluation import compare_rules, held_out_future, per_animal_scores
from ibl_learnrules.prior_selection import (
    MIN_ANIMALS_TO_HOLD_OUT,
    NothingToHoldOut,
    validation_split,
)

CANDIDATES = (0.0, 1e4)
SMALL = dict(rule="dnn", hidden_size=8, max_epochs=3, random_state=0)


def _same_fit(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.rule_.parameters(), b.rule_.parameters(),
                                                  strict=True))


@pytest.fixture(scope="module")
def mouse():
    # one simulated mouse over several sessions: the held-out data are its last sessions
    trials = simulate_cohort(1, n_trials=2500, random_state=1, alpha=0.05)
    assert trials["session"].nunique() >= 4
    return trials


def test_enough_animals_are_held_out_whole():
    cohort = simulate_cohort(MIN_ANIMALS_TO_HOLD_OUT + 5, n_trials=200, random_state=0)
    fit, score = validation_split(cohort, 0.2, np.random.RandomState(0))
    held, kept = set(cohort["subject"][score]), set(cohort["subject"][fit])
    assert len(held) == 2 and len(kept) == MIN_ANIMALS_TO_HOLD_OUT + 3
    assert held.isdisjoint(kept) and (fit ^ score).all()


def test_few_animals_keep_their_first_sessions_and_hold_out_their_last():
    table = pd.DataFrame({"subject": ["a"] * 6 + ["b"] * 3,
                          "session": ["a0", "a0", "a1", "a2", "a3", "a4", "b0", "b1", "b1"]})
    fit, score = validation_split(table, 0.4, np.random.RandomState(0))
    # a: 5 sessions, 2 held out (a3, a4); b: 2 sessions, 1 held out (b1)
    assert table["session"][score].tolist() == ["a3", "a4", "b1", "b1"]
    assert (fit == ~score).all()


def test_with_nothing_to_hold_out_the_strongest_candidate_is_fitted(mouse):
    one = mouse[mouse["session"] == mouse["session"].iloc[0]]
    with pytest.raises(NothingToHoldOut, match="at least 2 sessions"):
        validation_split(one, 0.2, np.random.RandomState(0))
    with pytest.warns(UserWarning, match="fitted with the strongest candidate, 10000"):
        est = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL).fit(one)
    strongest = LearningRuleGLM(**{**SMALL, "correction_prior": max(CANDIDATES)}).fit(one)
    assert est.correction_prior_ == max(CANDIDATES) and est.prior_scores_ is None
    assert _same_fit(est, strongest)


def test_one_mouse_scores_are_its_later_sessions_and_the_fit_is_the_winners(mouse):
    est = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL).fit(mouse)
    assert est.prior_scores_.index.tolist() == list(CANDIDATES)
    assert est.correction_prior_ == est.prior_scores_.idxmax()
    # each score is what held_out_future gives that candidate on the same sessions
    n_sessions = mouse["session"].nunique()
    n_train = n_sessions - max(1, round(0.2 * n_sessions))
    for value in CANDIDATES:
        single = LearningRuleGLM(**{**SMALL, "correction_prior": value})
        expected = held_out_future(mouse, {"single": single}, n_train)["loglik"].iloc[0]
        assert est.prior_scores_[value] == pytest.approx(expected, abs=1e-12)
    winner = LearningRuleGLM(**{**SMALL, "correction_prior": est.correction_prior_}).fit(mouse)
    assert _same_fit(est, winner)


def test_cohort_scores_are_held_out_animals():
    cohort = simulate_cohort(MIN_ANIMALS_TO_HOLD_OUT, n_trials=300, random_state=2, alpha=0.05)
    est = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL).fit(cohort)
    fit, score = validation_split(cohort.reset_index(drop=True), 0.2, np.random.RandomState(0))
    held = cohort.reset_index(drop=True)[score]
    for value in CANDIDATES:
        single = LearningRuleGLM(**{**SMALL, "correction_prior": value})
        single.fit(cohort.reset_index(drop=True)[fit])
        expected = per_animal_scores(single, held)["loglik"].mean()
        assert est.prior_scores_[value] == pytest.approx(expected, abs=1e-12)
    # the two candidates must give different fits, or the choice would mean nothing
    assert est.prior_scores_.nunique() == 2


def test_the_choice_is_saved_with_the_model(tmp_path, mouse):
    est = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL).fit(mouse)
    loaded = load_model(save_model(est, tmp_path / "model.pt"))
    assert loaded.get_params() == est.get_params() | {"device": "cpu"}
    assert loaded.correction_prior_ == est.correction_prior_
    pd.testing.assert_series_equal(loaded.prior_scores_, est.prior_scores_)
    np.testing.assert_array_equal(loaded.predict_proba(mouse), est.predict_proba(mouse))


def test_comparisons_record_the_prior_each_fit_chose(mouse):
    # each fold's fit chooses on its own training animals; the table says what it chose
    cohort = simulate_cohort(2 * MIN_ANIMALS_TO_HOLD_OUT, n_trials=300, random_state=2,
                             alpha=0.05)
    est = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL)
    table = compare_rules(cohort, {"dnn": est}, cv=GroupKFold(2))
    for fold, (train, _) in enumerate(GroupKFold(2).split(cohort, groups=cohort["subject"])):
        chosen = table.loc[table["fold"] == fold, "correction_prior"]
        fitted = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL).fit(cohort.iloc[train])
        assert chosen.nunique() == 1 and chosen.iloc[0] == fitted.correction_prior_
    future = held_out_future(mouse, {"dnn": est}, n_train_sessions=3)
    fitted = LearningRuleGLM(correction_prior=CANDIDATES, **SMALL).fit(
        mouse[mouse["session"].isin(pd.unique(mouse["session"])[:3])])
    assert (future["correction_prior"] == fitted.correction_prior_).all()
    # these fits all choose no prior; with nothing to hold out a fit takes the firmest, and
    # the table must say so too
    few = simulate_cohort(4, n_trials=200, random_state=0)
    assert (few.groupby("subject")["session"].nunique() == 1).all()
    with pytest.warns(UserWarning, match="fitted with the strongest candidate"):
        firmest = compare_rules(few, {"dnn": est}, cv=GroupKFold(2))
    assert (firmest["correction_prior"] == max(CANDIDATES)).all()
