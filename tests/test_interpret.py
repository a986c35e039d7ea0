import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import erf, expit

from ibl_learnrules import LearningRuleGLM, load_ks014, simulate_cohort
from ibl_learnrules.interpret import (
    correction_summary,
    delta_w_grid,
    expected_update,
    learning_curve,
    psychometric_curves,
    reward_history_updates,
    reward_run_ratios,
    summarize_reward_history,
)
from ibl_learnrules.rules import DNNRule, Reinforce, RNNRule, classic
from ibl_learnrules.simulate import GROUND_TRUTH_DEFAULTS, ground_truth_rule


def truth(rule="reinforce", n_weights=2, **params):
    """A ground-truth rule with exact (float64) parameters."""
    return ground_truth_rule(rule, n_weights, params)


WEIGHTS = np.array([[0.0, 0.0], [1.5, -0.4], [-0.7, 0.9]])


def reinforce_formula(grid, alpha):
    """dw = alpha r (y - p) x, built from the grid's axes only (not its x_/p_ columns)."""
    s = grid["stimulus"].to_numpy()
    x = np.stack([np.sign(s) * np.tanh(5 * np.abs(s)) / np.tanh(5), np.ones_like(s)], -1)
    w = grid[["w_stimulus", "w_bias"]].to_numpy()
    p = expit((w * x).sum(-1))
    return np.asarray(alpha) * (grid["reward"] * (grid["choice"] - p)).to_numpy()[:, None] * x


def test_grid_of_the_true_reinforce_learner_is_the_formula():
    grid = delta_w_grid(truth(alpha=0.07), weights=WEIGHTS)
    assert len(grid) == 9 * 2 * 2 * 3
    np.testing.assert_allclose(grid[["dw_stimulus", "dw_bias"]], reinforce_formula(grid, 0.07),
                               rtol=1e-12, atol=1e-15)


def reinforce_expectation(w, stimuli, alpha):
    """E[dw | w] of REINFORCE summed by hand: only rewarded (correct) choices update."""
    total = np.zeros(2)
    for s, prob in stimuli.items():
        x = np.array([np.sign(s) * np.tanh(5 * abs(s)) / np.tanh(5), 1.0])
        p = expit(w @ x)
        sides = [1, 0] if s == 0 else [1 if s > 0 else 0]  # a zero contrast is on either side
        for correct in sides:
            p_correct = p if correct == 1 else 1 - p
            total += prob / len(sides) * p_correct * alpha * (correct - p) * x
    return total


def test_expected_update_is_the_reinforce_expectation():
    stimuli = {-1.0: 0.3, -0.25: 0.2, 0.0: 0.1, 0.5: 0.4}
    field = expected_update(truth(alpha=0.05), weights=WEIGHTS, stimuli=stimuli)
    expected = [reinforce_expectation(w, stimuli, 0.05) for w in WEIGHTS]
    np.testing.assert_allclose(field[["w_stimulus", "w_bias"]], WEIGHTS)
    np.testing.assert_allclose(field[["dw_stimulus", "dw_bias"]], expected, rtol=1e-10)


def test_expected_update_takes_the_stimuli_of_a_trials_table():
    trials = simulate_cohort(1, n_trials=400, random_state=0)
    signed = (trials["contrastRight"].fillna(0) - trials["contrastLeft"].fillna(0)).round(6)
    stimuli = signed.value_counts(normalize=True).to_dict()
    field = expected_update(truth(alpha=0.05), weights=WEIGHTS[1:2], stimuli=trials)
    np.testing.assert_allclose(field[["dw_stimulus", "dw_bias"]].to_numpy()[0],
                               reinforce_expectation(WEIGHTS[1], stimuli, 0.05), rtol=1e-10)
    with pytest.raises(ValueError, match="non-negative probabilities"):
        expected_update(Reinforce(2), stimuli={2.0: 1.0})


def test_grid_of_the_torch_reinforce_rule_is_the_formula():
    module = classic.Reinforce(2, alpha=0.03)
    grid = delta_w_grid(module, weights=WEIGHTS)
    np.testing.assert_allclose(grid[["dw_stimulus", "dw_bias"]], reinforce_formula(grid, 0.03),
                               rtol=1e-6, atol=1e-12)

    # a fitted estimator: its learned per-weight rates, read from the module
    trials = simulate_cohort(2, n_trials=300, random_state=0, alpha=0.05)
    est = LearningRuleGLM(rule="reinforce", max_epochs=2, lr=0.2, tbptt=100,
                          random_state=0).fit(trials)
    alpha = est.rule_.alpha.detach().numpy().astype(float)
    assert not np.allclose(alpha, 0.01)  # training moved it away from the initial value
    grid = delta_w_grid(est, weights={"stimulus": [0.0, 2.0], "bias": [-1.0, 0.5]})
    np.testing.assert_allclose(grid[["dw_stimulus", "dw_bias"]], reinforce_formula(grid, alpha),
                               rtol=1e-6, atol=1e-12)


def test_grid_builds_covariates_like_featurize():
    covariates = ("contrast_left", "contrast_right", "stimulus", "bias")
    grid = delta_w_grid(truth(n_weights=4, alpha=0.1), stimulus=[-0.25, 0.0, 0.0625], choice=[1],
                        reward=[1], covariates=covariates)
    assert grid["correct_side"].tolist() == [0.0, 1.0, 1.0]  # zero contrast: on the right
    assert grid["consistent"].tolist() == [False, True, True]
    c = np.tanh(5 * np.array([0.25, 0.0625])) / np.tanh(5)
    np.testing.assert_allclose(grid["x_contrast_left"], [c[0], 0, 0])
    np.testing.assert_allclose(grid["x_contrast_right"], [0, 0, c[1]])
    np.testing.assert_allclose(grid["x_stimulus"], [-c[0], 0, c[1]])
    assert (grid["x_bias"] == 1).all()
    # the same trials through featurize give the same covariates
    from ibl_learnrules.trials import covariate_matrix

    x = covariate_matrix(covariates, np.array([0.25, np.nan, np.nan]),
                         np.array([np.nan, 0.0, 0.0625]))
    np.testing.assert_allclose(grid[[f"x_{c}" for c in covariates]], x)


def test_history_covariates_need_values():
    covariates = ("stimulus", "bias", "prev_choice")
    with pytest.raises(ValueError, match="prev_choice.*history="):
        delta_w_grid(Reinforce(3), covariates=covariates)
    grid = delta_w_grid(truth(n_weights=3, alpha=0.1), stimulus=[1.0], choice=[1], reward=[1],
                        covariates=covariates, history={"prev_choice": (-1, 1)})
    assert grid["prev_choice"].tolist() == [-1.0, 1.0]
    np.testing.assert_allclose(grid["dw_prev_choice"], 0.1 * 0.5 * np.array([-1.0, 1.0]))
    trace = ("stimulus", "bias", "reward_side_trace")
    with pytest.raises(ValueError, match="reward_side_trace.*history="):
        delta_w_grid(Reinforce(3), covariates=trace)
    grid = delta_w_grid(truth(n_weights=3, alpha=0.1), stimulus=[1.0], choice=[1], reward=[1],
                        covariates=trace, history={"reward_side_trace": (-0.5, 0.25)})
    np.testing.assert_allclose(grid["x_reward_side_trace"], [-0.5, 0.25])
    np.testing.assert_allclose(grid["dw_reward_side_trace"], 0.1 * 0.5 * np.array([-0.5, 0.25]))


@pytest.mark.parametrize("kwargs,message", [
    ({"stimulus": [2.0]}, "signed contrasts"),
    ({"choice": [-1]}, "choice values must be 0 or 1"),
    ({"weights": {"prev_choice": [1]}}, "not covariates"),
    ({"weights": [1.0, 2.0, 3.0]}, "2 values per row"),
])
def test_grid_rejects_bad_axes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        delta_w_grid(Reinforce(2), **kwargs)


@pytest.fixture(scope="module")
def rnn_and_trials():
    trials = simulate_cohort(2, "reward_history", n_trials=400, random_state=3)
    est = LearningRuleGLM(rule="rnn", hidden_size=8, max_epochs=1, tbptt=200,
                          random_state=0).fit(trials)
    return est, trials


def test_rnn_grid_is_the_first_update_from_a_fresh_memory(rnn_and_trials):
    est, trials = rnn_and_trials
    updates = reward_history_updates(est, trials)
    for _, first in updates.groupby("subject").head(1).iterrows():
        row = trials.loc[first.name]
        s = np.nan_to_num(row["contrastRight"]) - np.nan_to_num(row["contrastLeft"])
        grid = delta_w_grid(est, stimulus=[s], choice=[first["choice"]],
                            reward=[first["reward"]], new_session=True)
        np.testing.assert_allclose(first[["dw_stimulus", "dw_bias"]].to_numpy(float),
                                   grid[["dw_stimulus", "dw_bias"]].to_numpy()[0],
                                   rtol=1e-4, atol=1e-9)


def test_estimator_updates_follow_the_trajectory(rnn_and_trials):
    est, trials = rnn_and_trials
    updates = reward_history_updates(est, trials)
    traj = est.predict_trajectory(trials)
    # dw_t = w_{t+1} - w_t within each animal, across session boundaries too
    for _, rows in traj.groupby("subject"):
        w = rows[["w_stimulus", "w_bias"]].to_numpy()
        dw = updates.loc[rows.index[:-1], ["dw_stimulus", "dw_bias"]].to_numpy()
        # interpretation runs an exact float64 copy of the rule, the estimator its float32
        # one: updates of ~1e-4 agree to float32 rounding accumulated over the trajectory
        np.testing.assert_allclose(dw, np.diff(w, axis=0), rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(updates["p_right"], est.predict_proba(trials)[:, 1], rtol=1e-5)


def test_learner_rolled_along_its_own_cohort_reproduces_the_true_weights():
    learner = truth("reward_history", alpha=0.01, beta=0.3, gamma=0.4)
    trials = simulate_cohort(2, learner, n_sessions=2, random_state=1)
    updates = reward_history_updates(learner, trials)
    true = trials[["true_w_stimulus", "true_w_bias"]]
    for _, rows in trials.groupby("subject"):
        expected = np.diff(true.loc[rows.index].to_numpy(), axis=0)
        got = updates.loc[rows.index[:-1], ["dw_stimulus", "dw_bias"]].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


def test_estimator_reinforce_updates_equal_the_learner_at_the_fitted_rates():
    trials = simulate_cohort(2, n_trials=600, random_state=2, alpha=0.05, w0=(0.0, 0.0))
    est = LearningRuleGLM(rule="reinforce", max_epochs=1, lr=0.1, random_state=0).fit(trials)
    alpha = est.rule_.alpha.detach().numpy().astype(float)
    fitted = reward_history_updates(est, trials)
    true = reward_history_updates(truth(alpha=alpha), trials)  # starts at true_w = 0
    cols = ["dw_stimulus", "dw_bias"]
    scale = np.abs(true[cols].to_numpy()).max()
    assert np.abs(fitted[cols].to_numpy() - true[cols].to_numpy()).max() < 1e-3 * scale
    assert (fitted["context"] == true["context"]).all()


def test_contexts_are_the_rewards_of_the_k_previous_trials_of_the_session():
    feedback = [1, 1, 1, -1, -1, -1, 1, 1, 1, -1]
    trials = pd.DataFrame({
        "subject": "m", "session": ["a"] * 7 + ["b"] * 3, "trial": [*range(7), *range(3)],
        "contrastLeft": np.nan, "contrastRight": 1.0, "probabilityLeft": 0.5,
        "choice": [-1 if f == 1 else 1 for f in feedback], "feedbackType": feedback})
    trials.loc[5, "choice"] = 0  # a no-go: no row of its own, counts as unrewarded history
    updates = reward_history_updates(Reinforce(2), trials, k=2)
    assert updates.index.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert updates["context"].tolist() == ["start", "start", "rewarded", "rewarded", "mixed",
                                           "unrewarded", "start", "start", "rewarded"]


@pytest.fixture(scope="module")
def reward_history_cohort():
    return simulate_cohort(4, "reward_history", n_trials=2000, random_state=0)


def test_true_reward_history_learner_updates_more_after_rewarded_runs(reward_history_cohort):
    learner = truth("reward_history", **GROUND_TRUTH_DEFAULTS["reward_history"])
    summary = summarize_reward_history(
        reward_history_updates(learner, reward_history_cohort, k=3))
    rate = summary.set_index(["context", "reward", "covariate"])["rate"]
    alpha, beta = learner.alpha[0].item(), learner.beta[0].item()
    assert (alpha, beta) == (pytest.approx(0.002, rel=1e-14), 0.5)
    for reward in (0.0, 1.0):
        for name in ("stimulus", "bias"):
            after_rewarded = abs(rate["rewarded", reward, name])
            after_unrewarded = abs(rate["unrewarded", reward, name])
            # run >= 3 gives a step >= 1 + 3 gamma = 2.5 times that after a run of 0
            assert after_rewarded > 2.0 * after_unrewarded
            # after an unrewarded trial the run is 0: exactly REINFORCE with baseline
            assert rate["unrewarded", reward, name] == pytest.approx(alpha * (reward - beta),
                                                                     rel=1e-10)
    counts = summary[summary["covariate"] == "bias"]
    assert counts["n_trials"].sum() == (reward_history_cohort["choice"] != 0).sum()
    assert counts["fraction"].sum() == pytest.approx(1.0)


def test_reward_run_ratios_of_the_true_reward_history_learner(reward_history_cohort):
    params = GROUND_TRUTH_DEFAULTS["reward_history"]
    learner = truth("reward_history", **params)
    ratios = reward_run_ratios(learner, reward_history_cohort, ks=(1, 2, 3))
    assert set(ratios["subject"]) == set(reward_history_cohort["subject"])
    assert set(ratios["k"]) == {1, 2, 3} and set(ratios["covariate"]) == {"stimulus", "bias"}
    # after k unrewarded trials the run is 0: the step is REINFORCE with baseline's, and after
    # k rewarded ones the run is at least k, so every ratio is at least 1 + gamma * k
    expected = params["alpha"] * (1.0 - params["beta"])
    np.testing.assert_allclose(ratios["rate_unrewarded"], expected, rtol=1e-10)
    assert (ratios["ratio"] >= 1.0 + params["gamma"] * ratios["k"] - 1e-9).all()
    assert (ratios[["n_rewarded", "n_unrewarded"]] > 0).all().all()


def test_history_free_learner_has_the_same_rate_in_every_context():
    learner = truth("reinforce_baseline", alpha=0.004, beta=0.4)
    trials = simulate_cohort(3, learner, n_trials=1500, random_state=0)
    summary = summarize_reward_history(reward_history_updates(learner, trials, k=3))
    # its update is alpha (r - beta) times the policy gradient on every trial, whatever came
    # before, so the effective rate carries no trace of history
    np.testing.assert_allclose(summary["rate"], 0.004 * (summary["reward"] - 0.4), rtol=1e-10)
    # ... while the raw |dw| does differ between contexts (the policy is surer after rewarded
    # runs): the reason the rate, not |dw|, is the history measure
    abs_dw = summary.set_index(["context", "reward", "covariate"])["mean_abs_dw"]
    assert abs_dw["rewarded", 1.0, "bias"] < 0.8 * abs_dw["unrewarded", 1.0, "bias"]


def test_reward_history_rejects_bad_input():
    trials = simulate_cohort(1, n_trials=50, random_state=0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        reward_history_updates(Reinforce(2), trials, k=0)
    with pytest.raises(TypeError, match="expected a fitted LearningRuleGLM or a LearningRule"):
        reward_history_updates("reinforce", trials)
    with pytest.raises(ValueError, match="the rule has 2 weights but 3 covariates"):
        reward_history_updates(Reinforce(2), trials,
                               covariates=("stimulus", "bias", "prev_choice"))


def nested_dnn(output_weight: float, output_bias):
    """A dnn rule nesting REINFORCE with baseline (alpha 0.004, beta 0.4), read-out set."""
    rule = DNNRule(2, base="reinforce_baseline").double()
    torch.manual_seed(0)
    with torch.no_grad():
        # set in float64: float32 parameters would round alpha and beta at 1e-8
        rule.log_alpha.fill_(np.log(0.004))
        rule.beta.fill_(0.4)
        last = rule.mlp[-1]
        last.weight.copy_(output_weight * torch.randn_like(last.weight))
        last.bias.copy_(torch.as_tensor(output_bias, dtype=last.bias.dtype))
    return rule


@pytest.fixture(scope="module")
def classic_cohort():
    return simulate_cohort(3, "reinforce_baseline", n_trials=600, random_state=0)


def test_zero_correction_leaves_the_classic_rule(classic_cohort):
    summary = correction_summary(nested_dnn(0.0, [0.0, 0.0]), classic_cohort).set_index(
        "covariate")
    # w_{t+1} - w_t less the classic part: zero up to float64 round-off
    np.testing.assert_allclose(summary[["drift", "correction_sd"]], 0.0, atol=1e-15)
    # the classic part's spread is that of the classic rule's own updates on these trials
    classic_dw = reward_history_updates(truth("reinforce_baseline", alpha=0.004, beta=0.4),
                                        classic_cohort)
    for name in ("stimulus", "bias"):
        np.testing.assert_allclose(summary.loc[name, "classic_sd"],
                                   classic_dw[f"dw_{name}"].std(ddof=0), rtol=1e-9)


def test_constant_correction_is_all_drift(classic_cohort):
    rule = nested_dnn(0.0, [0.5, -1.0])
    summary = correction_summary(rule, classic_cohort).set_index("covariate")
    step = rule.scale.detach().numpy() * np.array([0.5, -1.0])
    np.testing.assert_allclose(summary["drift"], step, rtol=1e-9)
    np.testing.assert_allclose(summary["correction_sd"], 0.0, atol=1e-12)
    np.testing.assert_allclose(summary["drift_share"], 1.0)


def test_correction_is_the_update_less_the_classic_part_trial_by_trial(classic_cohort):
    rule = nested_dnn(3.0, [0.2, -0.1])
    updates = reward_history_updates(rule, classic_cohort)
    summary = correction_summary(rule, classic_cohort).set_index("covariate")
    for name in ("stimulus", "bias"):
        # the classic part written out from the trial's reward and policy gradient
        correction = (updates[f"dw_{name}"]
                      - 0.004 * (updates["reward"] - 0.4) * updates[f"grad_{name}"])
        assert correction.std(ddof=0) > 1e-4  # this network's correction varies
        np.testing.assert_allclose(summary.loc[name, ["drift", "correction_sd"]],
                                   [correction.mean(), correction.std(ddof=0)], rtol=1e-9)
        assert 0.0 < summary.loc[name, "drift_share"] < 1.0


def test_correction_summary_reads_estimators_and_refuses_classic_rules(classic_cohort):
    est = LearningRuleGLM(rule="rnn", max_epochs=2, random_state=0).fit(classic_cohort)
    summary = correction_summary(est, classic_cohort)
    assert list(summary["covariate"]) == ["stimulus", "bias"]
    assert (summary["n_trials"] == (classic_cohort["choice"] != 0).sum()).all()
    assert isinstance(est.rule_, RNNRule)
    with pytest.raises(ValueError, match="Reinforce has no network correction"):
        correction_summary(Reinforce(2), classic_cohort)


def psychometric_trials(pars, n_per_contrast=300, seed=0):
    """One session with choices drawn from an erf psychometric (contrast in %)."""
    rng = np.random.default_rng(seed)
    contrasts = np.repeat([-1, -0.25, -0.125, -0.0625, 0, 0.0625, 0.125, 0.25, 1],
                          n_per_contrast)
    bias, threshold, lapse_left, lapse_right = pars
    x = 100 * contrasts
    p = lapse_left + (1 - lapse_left - lapse_right) * (erf((x - bias) / threshold) + 1) / 2
    right_choice = rng.random(len(p)) < p
    right_side = contrasts > 0
    return pd.DataFrame({
        "subject": "m", "session": "s0", "trial": np.arange(len(p)),
        "contrastLeft": np.where(right_side, np.nan, -contrasts),
        "contrastRight": np.where(right_side, contrasts, np.nan), "probabilityLeft": 0.5,
        "choice": np.where(right_choice, -1, 1),
        "feedbackType": np.where(right_choice == right_side, 1, -1)}), p


def test_psychometric_points_and_fits_recover_a_known_curve():
    pars = (10.0, 20.0, 0.05, 0.1)
    trials, p = psychometric_trials(pars)
    curves = psychometric_curves(trials, p_right=p)
    expected = trials.assign(c=100 * (trials["contrastRight"].fillna(0)
                                      - trials["contrastLeft"].fillna(0)),
                             r=trials["choice"] == -1).groupby("c")["r"].mean()
    np.testing.assert_allclose(100 * curves.points["contrast"], expected.index)
    np.testing.assert_allclose(curves.points["p_right"], expected.to_numpy())
    assert (curves.points["n_trials"] == 300).all()
    fits = curves.fits.set_index("source")[["bias", "threshold", "lapse_left", "lapse_right"]]
    # fitting the true probabilities gives back the true curve; the sampled choices nearly
    error = np.abs(fits.loc[["model", "data"]].to_numpy() - np.array(pars))
    assert (error[0] < [0.5, 0.5, 0.01, 0.01]).all(), error[0]
    assert (error[1] < [4.0, 6.0, 0.04, 0.04]).all(), error[1]
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - psychofit uses the global RNG
    again = psychometric_curves(trials, p_right=p)
    pd.testing.assert_frame_equal(again.fits, curves.fits)  # seeded, reproducible
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_learning_curve_is_the_fraction_correct_per_session():
    ks014 = load_ks014()
    p = np.linspace(0.1, 0.9, len(ks014))
    curve = learning_curve(ks014, p_right=p)
    assert curve["session_idx"].tolist() == list(range(15))
    for _, row in curve.iterrows():
        rows = (ks014["session"] == row["session"]).to_numpy() & (ks014["choice"] != 0).to_numpy()
        assert row["n_trials"] == rows.sum()
        assert row["p_correct"] == pytest.approx((ks014["feedbackType"][rows] == 1).mean())
        right = ks014["contrastRight"].notna().to_numpy()[rows]
        assert row["p_correct_model"] == pytest.approx(
            np.where(right, p[rows], 1 - p[rows]).mean())
    with pytest.raises(ValueError, match="p_right has 3 values"):
        learning_curve(ks014, p_right=[0.5, 0.5, 0.5])
