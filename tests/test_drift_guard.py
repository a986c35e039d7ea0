"""The drift guard: a penalty on a network rule's expected drift outside the visited weights."""

import numpy as np
import pytest
import torch

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.drift_guard import DriftGuard
from ibl_learnrules.rules import DNNRule, RNNRule
from ibl_learnrules.rules.base import TrialStep


def _drifting_dnn() -> DNNRule:
    """A dnn rule (no base) whose correction is a constant drift of +0.002 on the bias."""
    torch.manual_seed(0)
    rule = DNNRule(2, base=None)
    with torch.no_grad():
        rule.mlp[-1].weight.zero_()
        rule.mlp[-1].bias.copy_(torch.tensor([0.0, 2.0]))
    return rule


def _guard(rule, strength=1.0, states=None):
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.25, 1.0], [-0.25, 1.0]])
    guard = DriftGuard(rule, rule.correction_parameters(), x, torch.tensor([1.0, 0.0, 1.0, 0.0]),
                       strength=strength, n_probes=256)
    guard.observe(np.array([[0.0, -1.0], [2.0, 1.0]]), states)
    guard.end_epoch()
    return guard


def _mean_drift(rule, w, state=None):
    """Expected update at weights ``w`` (one row), over the guard's four stimuli."""
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.25, 1.0], [-0.25, 1.0]])
    side = torch.tensor([1.0, 0.0, 1.0, 0.0])
    w = torch.as_tensor(w, dtype=torch.float32).expand(4, 2)
    p = torch.sigmoid((w * x).sum(-1))
    drift = 0.0
    for choice, prob in ((1.0, p), (0.0, 1 - p)):
        y = torch.full_like(p, choice)
        update, _ = rule(w, TrialStep(x, y, (y == side).float(), side, torch.zeros(4), p), state)
        drift = drift + prob.unsqueeze(-1) * update
    return drift.mean(0).detach()


def test_guard_is_idle_before_it_has_seen_an_epoch():
    rule = _drifting_dnn()
    guard = DriftGuard(rule, rule.correction_parameters(), torch.ones(1, 2), torch.ones(1), 1.0)
    assert float(guard.penalty().detach()) == 0.0
    guard.add_gradient()
    assert all(p.grad is None for p in rule.parameters())


def test_penalty_counts_only_outward_drift():
    rule = _drifting_dnn()
    guard = _guard(rule)
    # +0.002 per trial on the bias: outward above the box (bias > 1), inward below (< -1)
    assert float(guard.penalty().detach()) > 0.1
    with torch.no_grad():
        rule.mlp[-1].bias.copy_(torch.tensor([0.0, 0.0]))
    assert float(guard.penalty().detach()) == 0.0


def test_training_on_the_guard_removes_the_outward_drift_and_keeps_the_inside():
    rule = _drifting_dnn()
    guard = _guard(rule)
    inside_before = _mean_drift(rule, [1.0, 0.0])
    optimizer = torch.optim.Adam(rule.correction_parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        guard.add_gradient()
        optimizer.step()
    above = _mean_drift(rule, [1.0, 4.0])
    # the bias's drift above the box went from +0.002 per trial to (almost) none outward
    assert above[1] < 2e-4
    assert float(guard.penalty().detach()) < 0.01
    # nothing asked the network to change inside the box: it moved less there than outside
    inside_after = _mean_drift(rule, [1.0, 0.0])
    assert abs(float(inside_after[1] - inside_before[1])) < abs(float(above[1] - 0.002))


def test_guard_draws_states_for_a_rule_with_state():
    torch.manual_seed(0)
    rule = RNNRule(2, base=None)
    guard = _guard(rule, states=np.zeros((2, rule.hidden_size)))
    assert guard.states.shape == (2, rule.hidden_size)
    guard.add_gradient()
    assert rule.gru.weight_ih.grad is not None
    assert rule.log_scale.grad is None  # not among the correction's parameters


def test_guard_rejects_a_strength_that_is_not_positive():
    rule = _drifting_dnn()
    with pytest.raises(ValueError, match="strength must be positive"):
        DriftGuard(rule, rule.correction_parameters(), torch.ones(1, 2), torch.ones(1), 0.0)


def test_estimator_validates_drift_guard():
    mice = simulate_cohort(1, n_trials=50, random_state=0)
    with pytest.raises(ValueError, match="drift_guard"):
        LearningRuleGLM(drift_guard=-1.0).fit(mice)
    with pytest.raises(ValueError, match="drift_guard"):
        LearningRuleGLM(drift_guard="auto").fit(mice)


def test_guarded_fit_moves_the_network_and_not_a_classic_rule():
    mice = simulate_cohort(2, "reinforce_baseline", n_trials=300, random_state=0)
    settings = dict(max_epochs=3, random_state=0, correction_prior=0.0)

    def fitted(rule, guard):
        est = LearningRuleGLM(rule=rule, drift_guard=guard, **settings).fit(mice)
        return torch.cat([p.detach().flatten() for p in est.rule_.parameters()])

    assert not torch.equal(fitted("dnn", 0.0), fitted("dnn", 10.0))
    assert torch.equal(fitted("reinforce_baseline", 0.0), fitted("reinforce_baseline", 10.0))


@pytest.mark.parametrize("extra", [dict(free_running=1.0), dict(weight_noise="learn"),
                                   dict(weight_noise="learn", noise_reversion="learn")],
                         ids=["free_running", "weight_noise", "reverting_noise"])
def test_guard_trains_with_the_other_losses(extra):
    # the free-running loss carries two trajectories side by side, the filter a belief (over
    # the weights and their fluctuation when the noise reverts)
    mice = simulate_cohort(2, "reinforce_baseline", n_trials=200, random_state=0)
    settings = dict(rule="rnn", max_epochs=2, random_state=0, correction_prior=0.0, **extra)

    def fitted(guard):
        est = LearningRuleGLM(drift_guard=guard, **settings).fit(mice)
        return torch.cat([p.detach().flatten() for p in est.rule_.parameters()])

    assert not torch.equal(fitted(0.0), fitted(10.0))
