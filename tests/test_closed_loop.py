"""The free-running (mean-field) likelihood, and training on it (``free_running=``)."""

import numpy as np
import pandas as pd
import pytest
import torch

from ibl_learnrules import (
    LearningRuleGLM,
    featurize,
    filtering,
    load_model,
    save_model,
    simulate_cohort,
)
from ibl_learnrules.closed_loop import ClosedLoopRunner, expected_update, mean_field_rollout
from ibl_learnrules.engine import ChunkRunner, Replay, TensorBatch, rollout
from ibl_learnrules.rules import RewardMax, TrialStep, make_rule

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_trials():
    trials = simulate_cohort(3, n_trials=300, random_state=4)
    trials.loc[trials.index[::37], "choice"] = 0  # no-go trials: no likelihood, no update
    return trials


@pytest.fixture(scope="module")
def small_batch(small_trials):
    return TensorBatch.from_arrays(featurize(small_trials), CPU, dtype=torch.float64)


def _rule(name, **params):
    torch.manual_seed(0)
    return make_rule(name, 2, **params).double()


@pytest.mark.parametrize("beta", [-5.0, 0.0, 0.7, 3.0])
def test_reinforce_baseline_runs_free_as_reward_max(small_batch, beta):
    # under its own policy E[(r - beta)(y - p)] = p (1 - p) (r_right - r_left): the baseline
    # cancels, and what is left is reward_max's update, which never looks at the choice
    free = mean_field_rollout(_rule("reinforce_baseline", alpha=0.3, beta=beta), small_batch,
                              torch.zeros(3, 2, dtype=torch.float64), record=True)
    reward_max = rollout(RewardMax(2, alpha=0.3).double(), small_batch,
                         torch.zeros(3, 2, dtype=torch.float64), record=True)
    torch.testing.assert_close(free.weights, reward_max.weights)
    torch.testing.assert_close(free.loglik, reward_max.loglik)


def test_mean_field_is_the_average_of_free_running_twins():
    # 2,000 twins replay one animal's stimuli with choices drawn from their own policy; their
    # mean p(right) per trial must follow the mean-field trajectory. The per-trial standard
    # error of that mean is <= 0.5 / sqrt(2000) = 0.011, so 0.04 leaves 3.5 standard errors
    # plus room for the mean field's second-order error (alpha = 0.2, 150 trials); a mix
    # with p and 1 - p swapped misses by more than 0.1 here.
    one = simulate_cohort(1, n_trials=150, random_state=1)
    twins = pd.concat([one.assign(subject=f"t{i:04d}") for i in range(2000)],
                      ignore_index=True)
    batch = TensorBatch.from_arrays(featurize(twins), CPU, dtype=torch.float64)
    rule = _rule("reinforce", alpha=0.2)
    w0 = torch.zeros(batch.n_animals, 2, dtype=torch.float64)
    with torch.no_grad():
        sampled = rollout(rule, Replay(batch, torch.Generator().manual_seed(0)), w0,
                          record=True)
        free = mean_field_rollout(rule, batch.animal(0), w0[:1], record=True)
    gap = (sampled.p_right.mean(0) - free.p_right[0]).abs().max()
    assert gap < 0.04
    assert float((free.p_right[0, -20:] - free.p_right[0, :20]).abs().mean()) > 0.1  # it learns


@pytest.mark.parametrize("name", ["reinforce_baseline", "dnn", "rnn"])
@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_runner_gradient_is_that_of_the_weighted_sum(small_batch, name, engine):
    weight, norm = 0.4, 250.0
    w0 = torch.zeros(3, 2, dtype=torch.float64)
    rule = _rule(name)
    runner = ClosedLoopRunner(rule, small_batch, engine, weight)
    w, state = runner.start(w0)
    loglik, _, _ = runner(w, state, 0, 120, need_grad=True, loss_norm=norm)
    got = [p.grad.clone() for p in rule.parameters()]
    rule.zero_grad()
    taught = rollout(rule, small_batch, w0, start=0, stop=120).loglik.sum()
    free = mean_field_rollout(rule, small_batch, w0, start=0, stop=120).loglik.sum()
    (-(taught + weight * free) / norm).backward()
    assert loglik == pytest.approx(float(taught + weight * free), rel=1e-9)
    for g, p in zip(got, rule.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_noisy_rule_adds_the_free_running_rule_to_the_filter(small_batch):
    # with weight noise the teacher-forced part is the filter's likelihood; the free part
    # runs the rule's drift without noise, and both gradients reach the shared parameters
    weight, norm = 0.5, 100.0
    w0 = torch.zeros(3, 2, dtype=torch.float64)
    rule = filtering.with_noise(_rule("dnn"), {"sd": 0.05, "learn_sd": True}).double()
    runner = ClosedLoopRunner(rule, small_batch, "auto", weight)
    w, state = runner.start(w0)
    loglik, _, _ = runner(w, state, 0, 120, need_grad=True, loss_norm=norm)
    got = [None if p.grad is None else p.grad.clone() for p in rule.parameters()]
    rule.zero_grad()
    taught = filtering.filter_rollout(rule, small_batch, w0, start=0, stop=120).loglik.sum()
    free = mean_field_rollout(rule.base, small_batch, w0, start=0, stop=120).loglik.sum()
    (-(taught + weight * free) / norm).backward()
    assert loglik == pytest.approx(float(taught + weight * free), rel=1e-9)
    for g, p in zip(got, rule.parameters(), strict=True):
        if p.grad is None:
            assert g is None
        else:
            torch.testing.assert_close(g, p.grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rule.base.parameters())


_LEAK = dict(leak=0.05, rest=0.3)
#: Rules with a compiled free-running kernel, as "<rule>:<label>": construction arguments.
MEAN_FIELD_KERNELS = {
    **{f"{net}:{label}": dict(scale=0.3, alpha=0.2, beta=-1.0, **base)
       for net in ("dnn", "rnn")
       for label, base in (("nested", {}), ("nested_leak", dict(base="reinforce_baseline_leak",
                                                                **_LEAK)))},
    "dnn:centred": dict(scale=0.3, alpha=0.2, beta=-1.0, centre="policy"),
    "dnn:even": dict(scale=0.3, alpha=0.2, beta=-1.0, centre="even"),
    "dnn:gate": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=2),
    "dnn:gate_on": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=1, gate_on=0),
    "rnn:gate": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=2),
    "rnn:gate_on": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=1, gate_on=1),
    "dnn:gate_own": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=1, gate_on=1, gate_all=False),
    "rnn:gate_own": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=1, gate_on=1, gate_all=False),
    "dnn:gate_against": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=2,
                             gate_on="against_bias"),
    "rnn:gate_against": dict(scale=0.3, alpha=0.2, beta=-1.0, gate=1,
                             gate_on="against_bias"),
    "reinforce_baseline:": dict(alpha=[0.2, 0.3], beta=[-1.0, 0.4]),
    "reinforce_baseline_leak:": dict(alpha=[0.2, 0.3], beta=[-1.0, 0.4], **_LEAK),
    "reinforce_baseline_leak_side:": dict(alpha=[0.2, 0.3], beta=[-1.0, 0.4], eta=[0.05, 0.1],
                                          **_LEAK),
}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("case, free", [(case, None) for case in MEAN_FIELD_KERNELS]
                         + [(case, (0.0, 1.0)) for case in MEAN_FIELD_KERNELS]
                         + [(case, (1.0, 0.0))
                            for case in ("dnn:nested", "rnn:nested", "reinforce_baseline:")])
def test_kernel_is_the_mean_field_loop(small_trials, small_batch, case, free, dtype, tol):
    # the compiled free-running chunk against the torch loop: likelihood, carried weights and
    # state, and every gradient of each chunk, over two chunks (the second starts from the
    # carried weights and, for rnn, from a nonzero mixed state), with no-go trials; with a
    # mask, only those weights run free and the others follow the animals' choices. (A gate
    # against the bias may shut in the first chunk alone, so both chunks' gradients count.)
    batch = small_batch if dtype == torch.float64 else TensorBatch.from_arrays(
        featurize(small_trials), CPU)
    torch.manual_seed(0)
    name = case.partition(":")[0]
    rule = make_rule(name, 2, **MEAN_FIELD_KERNELS[case]).to(dtype)
    mask = None if free is None else torch.tensor(free, dtype=dtype)
    results = {}
    for engine in ("torch", "fused"):
        runner = ChunkRunner(rule, batch, engine, free_running=True, free_weights=mask)
        assert runner.fused == (engine == "fused")
        # against the bias, start where the bias outweighs the stimulus: the gate is shut
        # there and its path to both weights is live
        start = (0.5, 2.0) if MEAN_FIELD_KERNELS[case].get("gate_on") == "against_bias" else (
            0.5, 0.5)
        w, state = runner.start(torch.tensor(start, dtype=dtype).expand(3, 2).clone())
        lls, grads = [], []
        for a, b in ((0, 130), (130, 300)):
            rule.zero_grad()
            ll, w, state = runner(w, state, a, b, need_grad=True, loss_norm=100.0)
            lls.append(ll)
            grads += [p.grad.clone() for p in rule.parameters()]
        results[engine] = (lls, torch.as_tensor(w), None if state is None
                           else torch.as_tensor(state), grads)
    (ll_t, w_t, s_t, g_t), (ll_f, w_f, s_f, g_f) = results["torch"], results["fused"]
    assert ll_f == pytest.approx(ll_t, rel=tol)
    torch.testing.assert_close(w_f, w_t.detach(), rtol=tol, atol=tol)
    if name == "rnn":
        assert bool((s_t.abs().amax(-1) > 0.1).all())  # every animal's state moved from 0
        torch.testing.assert_close(s_f, s_t.detach(), rtol=tol, atol=tol)
    else:
        assert s_t is None and s_f is None
    for a, b in zip(g_f, g_t, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max() + 1))


def test_fitting_free_running_raises_the_free_running_likelihood():
    # learners that track their own choices (a baseline far above the reward): teacher
    # forcing alone fits that tracking; with the free-running term the fitted rule must
    # predict the choices better when left to run on its own
    truth = make_rule("reinforce_baseline", 2, alpha=0.05, beta=-2.0)
    trials = simulate_cohort(4, truth, n_trials=400, random_state=0)
    batch = TensorBatch.from_arrays(featurize(trials), CPU)

    def free_loglik(est):
        with torch.no_grad():
            return float(mean_field_rollout(est.rule_, batch, torch.zeros(4, 2)).loglik.sum())

    params = dict(rule="dnn", max_epochs=15, random_state=0, lr_schedule="constant")
    plain = LearningRuleGLM(free_running=0.0, **params).fit(trials)
    closed = LearningRuleGLM(free_running=1.0, **params).fit(trials)
    assert free_loglik(closed) > free_loglik(plain)
    assert closed.history_["train_loss"].notna().all()
    assert closed.get_params()["free_running"] == 1.0


def _same_fit(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.rule_.parameters(), b.rule_.parameters(),
                                                  strict=True))


#: The documented defaults that "auto" stands for, and a setting that must change the fit.
AUTO_DEFAULTS = {
    "dnn": (dict(free_running=0.0, lr_schedule="constant", correction_prior=30.0),
            dict(correction_prior=0.0)),
    "rnn": (dict(free_running=0.0, lr_schedule="constant", correction_prior=10.0),
            dict(correction_prior=0.0)),
    "reinforce_baseline": (dict(free_running=0.0, lr_schedule="constant",
                                correction_prior=0.0), dict(free_running=1.0)),
}


@pytest.mark.parametrize("rule", sorted(AUTO_DEFAULTS))
def test_auto_takes_the_rules_training_defaults(rule):
    # "auto" must train exactly as the rule's documented defaults, which differ by rule
    trials = simulate_cohort(2, n_trials=200, random_state=0)
    defaults, change = AUTO_DEFAULTS[rule]
    auto = LearningRuleGLM(rule=rule, max_epochs=3, random_state=0).fit(trials)
    explicit = LearningRuleGLM(rule=rule, max_epochs=3, random_state=0, **defaults).fit(trials)
    other = LearningRuleGLM(rule=rule, max_epochs=3, random_state=0, **change).fit(trials)
    assert {k: auto.get_params()[k] for k in defaults} == dict.fromkeys(defaults, "auto")
    assert _same_fit(auto, explicit)
    assert not _same_fit(auto, other)


def test_auto_reads_the_rules_class_attributes(monkeypatch):
    # a rule class that trains free with an annealed rate by default gets exactly that
    from ibl_learnrules.rules import DNNRule

    monkeypatch.setattr(DNNRule, "default_free_running", 1.0)
    monkeypatch.setattr(DNNRule, "default_lr_schedule", "cosine")
    trials = simulate_cohort(2, n_trials=200, random_state=0)
    auto = LearningRuleGLM(rule="dnn", max_epochs=3, random_state=0).fit(trials)
    explicit = LearningRuleGLM(rule="dnn", max_epochs=3, random_state=0, free_running=1.0,
                               lr_schedule="cosine", correction_prior=30.0).fit(trials)
    assert _same_fit(auto, explicit)


def test_auto_free_running_is_off_with_weight_noise():
    # an explicit weight with noise is an error; "auto" must quietly train through the filter
    trials = simulate_cohort(2, n_trials=200, random_state=0)
    est = LearningRuleGLM(rule="dnn", max_epochs=1, weight_noise=0.1, random_state=0).fit(trials)
    assert est.noisy_
    assert np.isfinite(est.score(trials))


def test_free_weights_mix_the_mean_field_and_teacher_forcing(small_batch):
    # all weights free is the mean field; none free is teacher forcing; the stimulus alone
    # free is neither
    rule = _rule("reinforce_baseline", alpha=[0.2, 0.3], beta=[-1.0, 0.4])
    w0 = torch.full((3, 2), 0.3, dtype=torch.float64)
    full = mean_field_rollout(rule, small_batch, w0)
    every = mean_field_rollout(rule, small_batch, w0, free=torch.ones(2))
    torch.testing.assert_close(every.loglik, full.loglik)
    taught = rollout(rule, small_batch, w0)
    none = mean_field_rollout(rule, small_batch, w0, free=torch.zeros(2))
    torch.testing.assert_close(none.loglik, taught.loglik)
    torch.testing.assert_close(none.w, taught.w)
    stimulus = mean_field_rollout(rule, small_batch, w0, free=torch.tensor([1.0, 0.0]))
    for other in (full, taught):
        assert not torch.allclose(stimulus.w, other.w)


@pytest.mark.parametrize("name", ["q_learning", "rnn"])
def test_with_a_state_the_taught_weights_learn_from_the_mixed_state(small_batch, name):
    # a rule's state runs free whatever the mask: the bias weight, held to the animals,
    # takes the update of their own choice from the state mixed over both choices
    rule = _rule(name)
    w0 = torch.full((3, 2), 0.3, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    w, state = w0, rule.initial_state(3, w0.device)
    with torch.no_grad():
        for t in range(3):
            x, correct_side, new_session, valid = small_batch.trial(t)
            p = torch.sigmoid((w * x).sum(-1))
            expected, mixed = expected_update(rule, w, x, correct_side, new_session, p, state)
            own, _ = rule(w, TrialStep(x, small_batch.y[:, t], small_batch.reward[:, t],
                                       correct_side, new_session, p), state)
            w = w + valid.unsqueeze(-1) * (mask * expected + (1 - mask) * own)
            keep = valid.reshape((-1,) + (1,) * (mixed.dim() - 1)) > 0
            state = torch.where(keep, mixed, state)  # a no-go trial leaves it unchanged
        partial = mean_field_rollout(rule, small_batch, w0, stop=3, free=mask)
    torch.testing.assert_close(partial.w, w)
    # the animals' own update from their own (teacher-forced) state would differ
    assert not torch.allclose(partial.w, rollout(rule, small_batch, w0, stop=3).w)


def test_a_centred_correction_runs_free_as_its_base_rule(small_batch):
    # the centred dnn's correction has zero expectation under its own policy: run free it is
    # REINFORCE with baseline with the same alpha, beta; teacher forced it is not
    params = dict(alpha=[0.2, 0.3], beta=[-1.0, 0.4])
    torch.manual_seed(0)
    dnn = _rule("dnn", scale=0.3, centre="policy", **params)
    base = _rule("reinforce_baseline", **params)
    w0 = torch.full((3, 2), 0.3, dtype=torch.float64)
    free_dnn, free_base = (mean_field_rollout(r, small_batch, w0) for r in (dnn, base))
    torch.testing.assert_close(free_dnn.w, free_base.w)
    torch.testing.assert_close(free_dnn.loglik, free_base.loglik)
    taught_dnn, taught_base = (rollout(r, small_batch, w0) for r in (dnn, base))
    assert (taught_dnn.w - taught_base.w).abs().max() > 0.05


def test_estimator_lets_only_the_named_weights_run_free(tmp_path):
    trials = simulate_cohort(2, n_trials=200, random_state=0)
    settings = dict(rule="reinforce_baseline", max_epochs=2, random_state=0, free_running=1.0)
    partial = LearningRuleGLM(**settings, free_weights=("stimulus",)).fit(trials)
    full = LearningRuleGLM(**settings).fit(trials)
    named_all = LearningRuleGLM(**settings, free_weights=["bias", "stimulus"]).fit(trials)
    assert _same_fit(full, named_all)
    assert not _same_fit(full, partial)
    # "fused" takes the mask (compiled) and fits what the torch loop fits
    looped = LearningRuleGLM(**settings, free_weights=("stimulus",), engine="torch").fit(trials)
    fused = LearningRuleGLM(**settings, free_weights=("stimulus",), engine="fused").fit(trials)
    for p, q in zip(fused.rule_.parameters(), looped.rule_.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    save_model(partial, tmp_path / "partial.pt")
    assert load_model(tmp_path / "partial.pt").get_params()["free_weights"] == ("stimulus",)
    for bad in (("speed",), (), ("bias", "bias")):
        with pytest.raises(ValueError, match="free_weights must name distinct covariates"):
            LearningRuleGLM(**settings, free_weights=bad).fit(trials)
    with pytest.raises(ValueError, match="needs free_running > 0"):
        LearningRuleGLM(rule="reinforce_baseline", free_weights=("stimulus",)).fit(trials)


@pytest.mark.parametrize("name", ["dnn", "rnn"])
def test_base_only_free_running_leaves_the_network_taught(small_batch, name):
    # trains="base": the free part's gradient reaches the nested classic rule's alpha and
    # beta alone; the network and its scale keep the teacher-forced part's gradient
    weight, norm = 0.4, 250.0
    w0 = torch.zeros(3, 2, dtype=torch.float64)
    rule = _rule(name, scale=0.3, alpha=0.2, beta=-1.0)
    runner = ClosedLoopRunner(rule, small_batch, "fused", weight, trains="base")
    w, state = runner.start(w0)
    runner(w, state, 0, 120, need_grad=True, loss_norm=norm)
    got = [p.grad.clone() for p in rule.parameters()]
    params = list(rule.parameters())
    taught = rollout(rule, small_batch, w0, start=0, stop=120).loglik.sum()
    free = mean_field_rollout(rule, small_batch, w0, start=0, stop=120).loglik.sum()
    taught_grads = torch.autograd.grad(-taught / norm, params)
    free_grads = torch.autograd.grad(-weight * free / norm, params)
    classic = {id(p) for p in rule.classic_parameters()}
    assert len(classic) == 2  # log_alpha and beta
    for p, g, g_taught, g_free in zip(params, got, taught_grads, free_grads, strict=True):
        torch.testing.assert_close(g, g_taught + g_free if id(p) in classic else g_taught)
        # the free part pulls on every parameter, so keeping it off the network is visible
        assert float(g_free.abs().sum()) > 0


def test_estimator_free_running_trains(small_trials, tmp_path):
    settings = dict(max_epochs=2, random_state=0, free_running=1.0,
                    free_weights=("stimulus",))
    # a classic rule is all base: both settings fit the same
    full, base = (LearningRuleGLM(rule="reinforce_baseline", free_running_trains=trains,
                                  **settings).fit(small_trials) for trains in ("all", "base"))
    assert _same_fit(full, base)
    # a network: the correction no longer learns from the free-running part
    full, base = (LearningRuleGLM(rule="dnn", free_running_trains=trains,
                                  **settings).fit(small_trials) for trains in ("all", "base"))
    assert not _same_fit(full, base)
    save_model(base, tmp_path / "base.pt")
    assert load_model(tmp_path / "base.pt").get_params()["free_running_trains"] == "base"
    with pytest.raises(ValueError, match="free_running_trains must be one of"):
        LearningRuleGLM(rule="dnn", free_running_trains="network", **settings).fit(small_trials)
    with pytest.raises(ValueError, match="needs free_running > 0"):
        LearningRuleGLM(rule="dnn", free_running_trains="base").fit(small_trials)
    with pytest.raises(ValueError, match="nests none"):
        LearningRuleGLM(rule="dnn", rule_params={"base": None}, free_running_trains="base",
                        **settings).fit(small_trials)
