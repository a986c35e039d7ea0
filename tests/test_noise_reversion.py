"""Weight noise that reverts: an Ornstein-Uhlenbeck fluctuation about the learned weights."""

import copy

import numpy as np
import pytest
import torch

from ibl_learnrules import LearningRuleGLM, featurize, load_model, save_model, simulate_cohort
from ibl_learnrules.cli import main
from ibl_learnrules.engine import TensorBatch
from ibl_learnrules.filtering import FilterRunner, NoisyRule, WeightNoise, filter_rollout
from ibl_learnrules.rules import make_rule

SD, RHO = 0.1, 0.02


@pytest.fixture(scope="module")
def reverting_mice():
    # a bias that wanders and falls back: no learning, fluctuations only
    return simulate_cohort(4, rule="none", n_trials=1500, weight_noise=SD, noise_reversion=RHO,
                           w0=[1.0, 0.0], random_state=1)


@pytest.fixture(scope="module")
def fitted(reverting_mice):
    return LearningRuleGLM(rule="none", weight_noise=[SD, SD], noise_reversion="learn",
                           max_epochs=20, lr=0.05, tbptt=500, random_state=0).fit(reverting_mice)


@pytest.mark.parametrize("rule", ["reinforce_baseline", "rnn", "none"])
def test_zero_reversion_is_the_random_walk(rule):
    trials = simulate_cohort(3, n_trials=300, random_state=0, weight_noise=0.05)
    batch = TensorBatch.from_arrays(featurize(trials), torch.device("cpu"), dtype=torch.float64)
    torch.manual_seed(0)
    base = make_rule(rule, 2).double()
    walk = NoisyRule(base, WeightNoise(2, sd=0.05).double())
    still = NoisyRule(base, WeightNoise(2, sd=0.05, reversion=0.0).double())
    w0 = torch.zeros(3, 2, dtype=torch.float64)
    a, b = (filter_rollout(r, batch, w0, record=True) for r in (walk, still))
    for name in ("loglik", "post_mean", "post_cov", "p_right", "drift"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-10, atol=1e-12)
    # the reverting belief is over (u, f): twice the weights
    assert b.m.shape == (3, 4) and b.P.shape == (3, 4, 4)


def test_without_evidence_the_belief_spreads_as_the_process():
    # trials whose covariates are all 0 tell the filter nothing: the belief over u + f is
    # then the prior process itself, var(t) = init_sd^2 + sd^2 (1 - a^(2t)) / (1 - a^2),
    # a = 1 - rho (a random walk would grow as t sd^2)
    trials = simulate_cohort(2, n_trials=200, random_state=0)
    batch = TensorBatch.from_arrays(featurize(trials), torch.device("cpu"), dtype=torch.float64)
    batch.x = torch.zeros_like(batch.x)
    rho, init_sd = 0.05, 0.5
    rule = NoisyRule(make_rule("none", 2), WeightNoise(2, sd=SD, init_sd=init_sd,
                                                       reversion=rho)).double()
    res = filter_rollout(rule, batch, torch.zeros(2, 2, dtype=torch.float64), record=True)
    a = 1.0 - rho
    t = torch.arange(batch.n_trials, dtype=torch.float64)
    expected = init_sd ** 2 + SD ** 2 * (1 - a ** (2 * t)) / (1 - a ** 2)
    for k in range(2):
        torch.testing.assert_close(res.prior_cov[:, :, k, k], expected.expand(2, -1))
    torch.testing.assert_close(res.prior_cov[:, :, 0, 1], torch.zeros(2, batch.n_trials,
                                                                       dtype=torch.float64))


def test_training_chunks_carry_the_belief_over_u_and_f():
    # truncated back-propagation cuts the graph, not the values: the runner's chunks, each
    # starting from the belief the last one carried (offset moved off and on again), add up
    # to one pass of the filter
    trials = simulate_cohort(2, n_trials=300, random_state=0, weight_noise=SD,
                             noise_reversion=RHO)
    batch = TensorBatch.from_arrays(featurize(trials), torch.device("cpu"), dtype=torch.float64)
    rule = NoisyRule(make_rule("none", 2), WeightNoise(2, sd=SD, reversion=RHO)).double()
    with torch.no_grad():
        rule.base.weights.copy_(torch.tensor([1.5, -0.5]))  # a policy offset
    w0 = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)
    runner = FilterRunner(rule, batch)
    w, state = runner.start(w0)
    total = 0.0
    for a in range(0, batch.n_trials, 70):
        loglik, w, state = runner(w, state, a, min(a + 70, batch.n_trials), need_grad=False)
        total += loglik
    with torch.no_grad():
        whole = filter_rollout(rule, batch, w0)
    assert total == pytest.approx(float(whole.loglik.sum()), rel=1e-12)
    offset = rule.policy_offset().detach()
    torch.testing.assert_close(runner.policy_weights(w),
                               whole.m[:, :2] + whole.m[:, 2:] + offset)


def test_sampled_fluctuations_have_the_stationary_spread():
    # f <- (1 - rho) f + eps has variance sd^2 / (rho (2 - rho)) once it has forgotten its
    # start (1 / rho = 50 trials); 400 mice over their last 500 trials estimate it within a
    # few per cent (three seeds: 0.244-0.261 for 0.2525), so 15 % is a firm margin; a random
    # walk would reach 1000 * sd^2 = 10 by then
    cohort = simulate_cohort(400, rule="none", n_trials=1500, weight_noise=SD,
                             noise_reversion=RHO, w0=[0.0, 0.0], random_state=0)
    late = cohort[cohort.groupby("subject").cumcount() >= 1000]
    stationary = SD ** 2 / (RHO * (2 - RHO))
    np.testing.assert_allclose(late[["true_w_stimulus", "true_w_bias"]].var(), stationary,
                               rtol=0.15)


def test_the_rate_is_recovered_and_predicts_better_than_the_walk(fitted, reverting_mice):
    rate = float(fitted.rule_.noise.reversion.detach())
    assert RHO / 2 < rate < RHO * 2  # fitted: 0.025
    # the same model with its rate set to 0 (a random walk) scores the mice worse
    batch = TensorBatch.from_arrays(featurize(reverting_mice), torch.device("cpu"),
                                    dtype=torch.float64)
    rule = copy.deepcopy(fitted.rule_).double()
    walk = NoisyRule(rule.base, WeightNoise(2, sd=SD, init_sd=rule.noise.init_var.sqrt().tolist(),
                                            reversion=0.0).double())
    w0 = torch.zeros(4, 2, dtype=torch.float64)
    with torch.no_grad():
        reverting = filter_rollout(rule, batch, w0).loglik.sum()
        walking = filter_rollout(walk, batch, w0).loglik.sum()
    assert reverting > walking + 10  # nats over 6,000 trials


def test_twins_and_persistence_keep_the_rate(fitted, reverting_mice, tmp_path):
    loaded = load_model(save_model(fitted, tmp_path / "ou.pt"))
    assert loaded.noise_reversion == "learn"
    assert torch.equal(loaded.rule_.noise.reversion, fitted.rule_.noise.reversion)
    np.testing.assert_array_equal(loaded.score_samples(reverting_mice),
                                  fitted.score_samples(reverting_mice))
    twins = loaded.simulate({"n_subjects": 3, "n_sessions": 2}, random_state=0)
    assert twins.equals(fitted.simulate({"n_subjects": 3, "n_sessions": 2}, random_state=0))
    assert np.isfinite(twins[["w_stimulus", "w_bias"]]).all().all()


def test_what_needs_the_random_walk_refuses(fitted, reverting_mice):
    assert fitted.predict_trajectory(reverting_mice)["w_bias_sd"].gt(0).all()
    with pytest.raises(ValueError, match="smoothed beliefs assume random-walk noise"):
        fitted.predict_trajectory(reverting_mice, smoothed=True)
    with pytest.raises(ValueError, match="rule_share assumes random-walk noise"):
        fitted.rule_share(reverting_mice)


@pytest.mark.parametrize("params, pattern", [
    (dict(noise_reversion=0.01), "noise_reversion needs weight_noise"),
    (dict(weight_noise="learn", noise_reversion=1.0), r"a rate in \[0, 1\)"),
    (dict(weight_noise="learn", noise_reversion=-0.1), r"a rate in \[0, 1\)"),
    (dict(weight_noise="learn", noise_reversion="fit"), r"a rate in \[0, 1\)"),
])
def test_bad_settings(reverting_mice, params, pattern):
    with pytest.raises(ValueError, match=pattern):
        LearningRuleGLM(rule="none", **params).fit(reverting_mice)
    with pytest.raises(ValueError, match="noise_reversion needs weight_noise"):
        simulate_cohort(1, n_trials=10, noise_reversion=0.01)


def test_cli_fit_noise_reversion(reverting_mice, tmp_path, capsys):
    csv = tmp_path / "mice.csv"
    reverting_mice[reverting_mice["trial"] < 100].to_csv(csv, index=False)
    out = tmp_path / "m.pt"
    base = ["fit", "--trials", str(csv), "--rule", "none", "--epochs", "1", "--out", str(out),
            "--weight-noise", "0.1"]
    assert main(base + ["--noise-reversion", "0.05"]) == 0
    assert load_model(out).noise_reversion == 0.05
    assert main(base + ["--noise-reversion", "learn"]) == 0
    assert load_model(out).noise_reversion == "learn"
    with pytest.raises(SystemExit):
        main(base + ["--noise-reversion", "often"])
    assert "expected 'learn' or a rate" in capsys.readouterr().err


def test_nwb_results_keep_the_rate(fitted, reverting_mice, tmp_path):
    from pynwb import validate

    from ibl_learnrules.io.nwb import read_model, trials_to_nwb, write_results

    animal = reverting_mice[reverting_mice["subject"] == "sim000"]
    source = trials_to_nwb(animal, tmp_path / "sessions")[0]
    out = write_results(source, fitted, output=tmp_path / "results.nwb")
    assert validate(path=str(out)) == []
    restored = read_model(out)
    assert restored.noise_reversion == "learn"
    # parameters are stored as float32 in NWB
    np.testing.assert_allclose(float(restored.rule_.noise.reversion.detach()),
                               float(fitted.rule_.noise.reversion.detach()), rtol=1e-6)
    np.testing.assert_allclose(restored.score_samples(animal), fitted.score_samples(animal),
                               rtol=1e-4)
