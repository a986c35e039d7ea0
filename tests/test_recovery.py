"""Simulate, fit, check recovery: the framework finds known rules in simulated learners.

Sizes are the smallest at which the checks are reliable on a 2-core CPU; margins are
justified next to each assertion.
"""

import numpy as np
import pytest

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.evaluation import per_animal_scores
from ibl_learnrules.interpret import expected_update
from ibl_learnrules.simulate import Reinforce

ALPHA = 0.05
SETTINGS = dict(max_epochs=15, lr=0.05, tbptt=250, random_state=0)


@pytest.fixture(scope="module")
def reinforce_cohorts():
    # mice start at w = 0, as the estimator assumes (init_weights="zero")
    train = simulate_cohort(8, n_trials=1500, random_state=0, alpha=ALPHA, w0=(0.0, 0.0))
    test = simulate_cohort(6, n_trials=1500, random_state=1, alpha=ALPHA, w0=(0.0, 0.0))
    return train, test


@pytest.fixture(scope="module")
def floor_scores(reinforce_cohorts):
    """Held-out log-likelihood per mouse of the fixed GLM (no learning)."""
    train, test = reinforce_cohorts
    floor = LearningRuleGLM(rule="none", **SETTINGS).fit(train)
    return per_animal_scores(floor, test)["loglik"].to_numpy()


@pytest.fixture(scope="module")
def reinforce_fit(reinforce_cohorts):
    return LearningRuleGLM(rule="reinforce", **SETTINGS).fit(reinforce_cohorts[0])


def test_reinforce_recovers_the_stimulus_learning_rate(reinforce_fit):
    alpha = reinforce_fit.rule_.alpha.detach().numpy()
    # 12,000 trials pin the stimulus rate to a few per cent (measured: 0.051 for 0.05); 20% is
    # the tolerance. The bias rate is weakly identified (the bias hardly moves under
    # REINFORCE with balanced stimuli, so its rate barely changes the likelihood): not asserted.
    assert alpha[0] == pytest.approx(ALPHA, rel=0.2)


def test_fitted_reinforce_beats_no_learning_on_held_out_mice(reinforce_cohorts, reinforce_fit,
                                                            floor_scores):
    learned = per_animal_scores(reinforce_fit, reinforce_cohorts[1])["loglik"].to_numpy()
    fixed = floor_scores
    # learning mice go from chance to expert: a fixed GLM cannot follow, on every animal
    # (measured gap: 0.048 nats/trial on average, 0.037 at the smallest)
    assert (learned > fixed).all()
    assert learned.mean() - fixed.mean() > 0.02


def test_predicted_trajectory_tracks_the_true_weights(reinforce_cohorts, reinforce_fit):
    test = reinforce_cohorts[1]
    traj = reinforce_fit.predict_trajectory(test)
    for _, rows in traj.groupby("subject"):
        true = test.loc[rows.index, "true_w_stimulus"]
        # teacher-forced rollout of the recovered rule: the same updates up to the 20% rate
        # error, so the stimulus weight follows the truth almost exactly
        assert np.corrcoef(rows["w_stimulus"], true)[0, 1] > 0.95
        assert abs(rows["w_stimulus"].iloc[-1] - true.iloc[-1]) < 0.25 * abs(true.iloc[-1])


@pytest.fixture(scope="module")
def dnn_fit(reinforce_cohorts):
    return LearningRuleGLM(rule="dnn", max_epochs=60, lr=0.01, tbptt=250,
                           random_state=0).fit(reinforce_cohorts[0])


def test_dnn_rule_recovers_the_expected_update_on_a_grid_of_weights(reinforce_cohorts, dnn_fit):
    """The DNN rule, which knows nothing of REINFORCE, recovers the drift of the weights.

    What the choices determine is the update summed over many trials, i.e. the expected update
    at each weight (over the task's stimuli and the policy's choices and rewards), not each
    (stimulus, choice, reward) cell on its own: the fitted DNN puts part of the stimulus-weight
    growth on error trials, where REINFORCE has none, and matches the likelihood of the true
    rule all the same. So the grid compared here spans the current weights the animals visit
    (5th-95th percentiles of the true weights), with stimulus, choice and reward averaged out
    (``expected_update``).
    """
    train = reinforce_cohorts[0]
    grid = {name: np.linspace(train[f"true_w_{name}"].quantile(0.05),
                              train[f"true_w_{name}"].quantile(0.95), n)
            for name, n in (("stimulus", 6), ("bias", 5))}
    true = expected_update(Reinforce(alpha=ALPHA), weights=grid, stimuli=train)
    fitted = expected_update(dnn_fit, weights=grid, stimuli=train)
    np.testing.assert_allclose(fitted[["w_stimulus", "w_bias"]], true[["w_stimulus", "w_bias"]])
    diff = fitted[["dw_stimulus", "dw_bias"]].to_numpy() - true[["dw_stimulus", "dw_bias"]]
    relative = np.linalg.norm(diff) / np.linalg.norm(true[["dw_stimulus", "dw_bias"]])
    # measured over the whole grid: 0.18 with seed 0, and 0.14 / 0.10 with the cohorts and
    # fits re-seeded 1 and 2; 0.3 leaves room for platform differences and still fails a rule
    # that has not learned the drift's shape (the none rule's field, zero, scores 1.0; a
    # constant drift at the grid's mean update scores 0.6)
    assert relative < 0.3
    # the stimulus drift falls as the weight grows (p(correct) saturates): the DNN has the shape
    assert np.corrcoef(fitted["dw_stimulus"], true["dw_stimulus"])[0, 1] > 0.9


def test_fitted_dnn_beats_no_learning_on_held_out_mice(reinforce_cohorts, dnn_fit,
                                                      floor_scores):
    learned = per_animal_scores(dnn_fit, reinforce_cohorts[1])["loglik"].to_numpy()
    fixed = floor_scores
    # as for reinforce above: the fixed GLM cannot follow mice that go from chance to expert
    # (measured gap: 0.048 nats/trial on average, 0.034 at the smallest)
    assert (learned > fixed).all()
    assert learned.mean() - fixed.mean() > 0.02
