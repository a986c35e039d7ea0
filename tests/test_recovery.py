"""Simulate, fit, check recovery: the framework finds known rules in simulated learners.

Sizes are the smallest at which the checks are reliable on a 2-core CPU; margins are
justified next to each assertion.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.evaluation import paired_test, per_animal_scores
from ibl_learnrules.interpret import expected_update
from ibl_learnrules.simulate import ground_truth_rule
from ibl_learnrules.trials import featurize

ALPHA = 0.05
#: The ground truth: the same rule class that the estimator fits, with known parameters.
TRUTH = ground_truth_rule("reinforce", 2, {"alpha": ALPHA})
SETTINGS = dict(max_epochs=15, lr=0.05, tbptt=250, random_state=0)


@pytest.fixture(scope="module")
def reinforce_cohorts():
    # mice start at w = 0, as the estimator assumes (init_weights="zero")
    train = simulate_cohort(8, TRUTH, n_trials=1500, random_state=0, w0=(0.0, 0.0))
    test = simulate_cohort(6, TRUTH, n_trials=1500, random_state=1, w0=(0.0, 0.0))
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
    true = expected_update(TRUTH, weights=grid, stimuli=train)
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


def true_rule_scores(cohort: pd.DataFrame) -> np.ndarray:
    """Per-mouse log-likelihood of the choices under the true weights of a simulated cohort.

    The truth's teacher-forced rollout is the simulation itself (it moved on the mouse's own
    choices), so the true weights before each trial give its one-step-ahead predictions.
    """
    arrays = featurize(cohort, ("stimulus", "bias"))
    true_w = np.zeros_like(arrays.x)
    for k, name in enumerate(("stimulus", "bias")):
        column = cohort[f"true_w_{name}"].to_numpy()
        true_w[..., k][arrays.observed] = column[arrays.row_position[arrays.observed]]
    p_right = expit((true_w * arrays.x).sum(-1))
    loglik = np.where(arrays.y == 1, np.log(p_right), np.log1p(-p_right))
    return np.array([loglik[a][arrays.valid[a]].mean() for a in range(arrays.n_animals)])


def test_dnn_is_nearly_as_good_as_the_true_rule_on_held_out_mice(reinforce_cohorts, dnn_fit):
    test = reinforce_cohorts[1]
    learned = per_animal_scores(dnn_fit, test).set_index("subject").loc[
        list(dict.fromkeys(test["subject"])), "loglik"].to_numpy()
    truth = true_rule_scores(test)
    # the network nests REINFORCE with baseline, which contains the true rule (beta = 0);
    # what it can lose is the estimation error of its parameters on 12,000 training trials.
    # Measured: 0.0011 nats/trial below the truth on average (0.0020 with the package
    # defaults, 100 epochs at tbptt 100). 0.01 is nine times that and a fifth of what
    # separates learning from no learning here (0.048, the floor tests), so a correction
    # that overfits the training mice or drowns the nested rule fails it.
    assert truth.mean() - learned.mean() < 0.01


# The reward-history learner: REINFORCE with baseline whose step grows with the run of
# rewards before the trial (x3 after 1 reward, x11 after 5 or more). The bias learns fast
# (0.2), so a run's gain shows in the next low-contrast choices; the stimulus slowly (0.01),
# so the mice stay in the learning regime (90% correct over 1,000 trials).
HISTORY_RULE = dict(alpha=(0.01, 0.2), beta=0.5, gamma=2.0, max_run=5)


@pytest.fixture(scope="module")
def reward_history_scores():
    """Held-out log-likelihood per mouse of rnn, dnn, reinforce and reinforce_baseline."""
    # 60 training mice: with 30 the RNN fits the training mice better than the true rule
    # does and gains little on new ones (measured: train -0.1916 vs -0.1927 for the truth)
    train = simulate_cohort(60, "reward_history", n_trials=1000, random_state=0,
                            w0=(0.0, 0.0), **HISTORY_RULE)
    test = simulate_cohort(12, "reward_history", n_trials=1000, random_state=100,
                           w0=(0.0, 0.0), **HISTORY_RULE)
    # both networks anneal the rate: with a constant one the RNN's parameters keep moving
    # between the naive and expert chunks of each epoch (measured: -0.2004 constant,
    # -0.1976 cosine, on a 60 x 1,500 cohort). The DNN gets the larger network.
    networks = dict(max_epochs=150, lr=0.01, lr_schedule="cosine", tbptt=100,
                    rule_params={"scale": 0.05}, random_state=0)
    classic = dict(max_epochs=30, lr=0.05, tbptt=100, random_state=0)
    estimators = {
        "rnn": LearningRuleGLM(rule="rnn", hidden_size=16, **networks),
        "dnn": LearningRuleGLM(rule="dnn", hidden_size=32, **networks),
        "reinforce": LearningRuleGLM(rule="reinforce", **classic),
        "reinforce_baseline": LearningRuleGLM(rule="reinforce_baseline", **classic),
    }
    return pd.concat([per_animal_scores(est.fit(train), test).assign(rule=name)
                      for name, est in estimators.items()], ignore_index=True)


@pytest.mark.parametrize("markovian", ["dnn", "reinforce", "reinforce_baseline"])
def test_rnn_beats_markovian_rules_on_a_reward_history_cohort(reward_history_scores, markovian):
    test = paired_test(reward_history_scores, "rnn", markovian)
    # Measured with this cohort and fit (seeds 0): rnn - dnn +0.0055 nats/trial, 11/12 mice,
    # Wilcoxon p 0.0005; rnn - reinforce +0.014 and rnn - reinforce_baseline +0.011, 12/12,
    # p 0.0002. Re-seeding the cohorts or the fits (three more runs): rnn - dnn +0.0056 to
    # +0.0064, p 0.0002 to 0.01. Where the RNN does not exploit the history it ties the DNN:
    # fitted on 12-30 mice of similar cohorts it scored -0.017 to +0.003 (mostly about 0),
    # and on cohorts with a weak history effect ±0.0006 (issue 3's earlier runs).
    assert test["mean_diff"] > 0.002, test
    assert test["wilcoxon_p"] < 0.05, test


#: A learner that forgets: its weights leak toward a resting point, faster for the bias.
LEAK_TRUTH = dict(alpha=[0.02, 0.02], beta=[0.3, 0.3], leak=[0.003, 0.01], rest=[0.5, -0.5])


@pytest.fixture(scope="module")
def leak_fits():
    truth = ground_truth_rule("reinforce_baseline_leak", 2, LEAK_TRUTH)
    train = simulate_cohort(8, truth, n_trials=2000, random_state=0, w0=(0.0, 0.0))
    test = simulate_cohort(6, truth, n_trials=2000, random_state=1, w0=(0.0, 0.0))
    settings = {**SETTINGS, "max_epochs": 30}
    fits = {rule: LearningRuleGLM(rule=rule, **settings).fit(train)
            for rule in ("reinforce_baseline_leak", "reinforce_baseline")}
    return fits, test


def test_leak_rule_recovers_the_forgetting(leak_fits):
    fits, _ = leak_fits
    rule = fits["reinforce_baseline_leak"].rule_
    leak = rule.leak.detach().numpy()
    # over simulation seeds 0, 2, 4, 6 the fitted leaks were within a factor of 1.33 of the
    # truth and the bias's resting point within 0.08 of it; the stimulus weight, which stays
    # above its resting point, pins that point down less (0.22-0.59 for 0.5): not asserted
    np.testing.assert_allclose(leak, LEAK_TRUTH["leak"], rtol=0.5)
    assert abs(rule.rest[1].item() - LEAK_TRUTH["rest"][1]) < 0.2


def test_leak_rule_beats_reinforce_baseline_on_a_forgetting_cohort(leak_fits):
    fits, test = leak_fits
    leak, plain = (per_animal_scores(fits[rule], test)["loglik"].to_numpy()
                   for rule in ("reinforce_baseline_leak", "reinforce_baseline"))
    # REINFORCE with baseline cannot forget; over the same four seeds the leak rule was
    # better on all 24 held-out mice, by at least 0.0034 nats/trial
    assert (leak > plain).all()


#: A learner whose bias follows the biased blocks: each trial steps it toward the correct
#: side (eta) and leaks it back (a leaky average of the sides over ~5 trials).
SIDE_TRUTH = dict(alpha=[0.02, 0.02], beta=[0.3, 0.3], leak=[0.003, 0.2], rest=[2.0, 0.0],
                  eta=[1e-6, 0.1])


def test_side_rule_recovers_the_step_toward_the_correct_side():
    truth = ground_truth_rule("reinforce_baseline_leak_side", 2, SIDE_TRUTH)
    # trained from the start, so that sessions 5-9 have biased blocks
    trials = simulate_cohort(8, truth, n_sessions=10, protocol="biased", random_state=0,
                             w0=(3.0, 0.0))
    assert (trials["probabilityLeft"] != 0.5).mean() > 0.3
    rule = LearningRuleGLM(rule="reinforce_baseline_leak_side",
                           **{**SETTINGS, "max_epochs": 60}).fit(trials).rule_
    eta, leak = rule.eta.detach().numpy(), rule.leak.detach().numpy()
    # over simulation seeds 0, 2, 4, 6, 8: the bias's eta 0.052-0.098 (truth 0.1), its leak
    # 0.166-0.216 (0.2), the stimulus weight's eta at most 0.0004 (none). The stimulus
    # weight's leak and resting point are not identified (it stays near 2-3): not asserted
    assert 0.04 < eta[1] < 0.15
    assert leak[1] == pytest.approx(SIDE_TRUTH["leak"][1], rel=0.35)
    assert eta[0] < 0.005
