import numpy as np
import pytest
import torch

from ibl_learnrules import available_rules
from ibl_learnrules.rules import RULES, LearningRule, TrialStep, get_rule_class
from ibl_learnrules.rules.neural import rule_inputs


def step(x, y, r, c, p=None, new=0.0):
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    x = t(x)
    p = torch.full((x.shape[0],), 0.5) if p is None else t(p)
    n = x.shape[0]
    return TrialStep(x, t(np.broadcast_to(y, n)), t(np.broadcast_to(r, n)),
                     t(np.broadcast_to(c, n)), t(np.broadcast_to(new, n)), p)


def test_registry_lists_every_rule():
    assert available_rules() == sorted(["none", "reinforce", "reinforce_baseline",
                                        "reinforce_baseline_leak",
                                        "reinforce_baseline_leak_side", "reward_max",
                                        "prediction_error", "q_learning", "reward_history",
                                        "dnn", "rnn"])
    with pytest.raises(ValueError, match="unknown rule 'hebb'.*choose from"):
        get_rule_class("hebb")


def test_a_new_rule_is_one_class():
    class Hebbian(LearningRule):
        name = "test_hebbian"

        def forward(self, w, trial, state=None):
            return 0.1 * (2 * trial.y - 1).unsqueeze(-1) * trial.x, state

    try:
        assert "test_hebbian" in available_rules()
        dw, _ = get_rule_class("test_hebbian")(2)(torch.zeros(1, 2), step([[1.0, 1.0]], 1, 1, 1))
        np.testing.assert_allclose(dw.numpy(), [[0.1, 0.1]])
    finally:
        RULES.pop("test_hebbian")


def test_an_unnamed_subclass_does_not_replace_its_parent():
    class Louder(get_rule_class("reinforce")):
        pass

    assert get_rule_class("reinforce") is not Louder
    assert get_rule_class("reinforce").__name__ == "Reinforce"


@pytest.mark.parametrize("rule", ["reinforce", "reinforce_baseline"])
def test_reinforce_rules_compute_their_formula(rule):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 2))
    x = np.c_[rng.uniform(-1, 1, 50), np.ones(50)]
    y = rng.integers(0, 2, 50).astype(float)
    r = rng.integers(0, 2, 50).astype(float)
    p = 1 / (1 + np.exp(-(w * x).sum(1)))
    alpha, beta = np.array([0.02, 0.05]), np.array([0.3, 0.6])
    params = {"alpha": alpha} | ({"beta": beta} if rule == "reinforce_baseline" else {})
    module = get_rule_class(rule)(2, **params)
    dw, _ = module(torch.as_tensor(w, dtype=torch.float32), step(x, y, r, 0.0, p))
    baseline = beta if rule == "reinforce_baseline" else 0.0
    expected = alpha * (r[:, None] - baseline) * (y - p)[:, None] * x
    np.testing.assert_allclose(dw.detach().numpy(), expected, rtol=1e-5, atol=1e-7)


def test_side_rule_adds_a_step_toward_the_correct_side_to_the_leak_rule():
    rng = np.random.default_rng(0)
    w = torch.as_tensor(rng.normal(size=(40, 2)), dtype=torch.float32)
    x = np.c_[rng.uniform(-1, 1, 40), np.ones(40)]
    y, r, c = (rng.integers(0, 2, 40) for _ in range(3))
    trial = step(x, y, r, c, rng.uniform(0.05, 0.95, 40))
    params = dict(alpha=[0.02, 0.05], beta=[0.3, -0.6], leak=[0.01, 0.1], rest=[1.0, -0.5])
    leak_dw, _ = get_rule_class("reinforce_baseline_leak")(2, **params)(w, trial)
    side = get_rule_class("reinforce_baseline_leak_side")
    near_zero, _ = side(2, **params, eta=1e-12)(w, trial)
    torch.testing.assert_close(near_zero, leak_dw)
    with pytest.raises(ValueError, match="eta must be positive"):
        side(2, eta=[0.1, 0.0])
    eta = np.array([0.01, 0.2])
    dw, _ = side(2, **params, eta=eta)(w, trial)
    expected = leak_dw.detach().numpy() + eta * (2 * c - 1)[:, None] * x
    np.testing.assert_allclose(dw.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_reward_history_rule_counts_rewarded_runs_within_a_session():
    rule = get_rule_class("reward_history")(1, alpha=0.1, beta=0.0, gamma=1.0, max_run=2)
    run = rule.initial_state(1)
    gains = []
    for reward, new in [(1, 1), (1, 0), (1, 0), (1, 0), (0, 0), (1, 0), (1, 1)]:
        dw, run = rule(torch.zeros(1, 1), step([[1.0]], 1, reward, 1, [0.0], new), run)
        gains.append(round(dw.item() / 0.1, 6))
    # gain (1 + min(run, 2)) on rewarded trials, 0 on the error; a new session restarts the run
    assert gains == [1.0, 2.0, 3.0, 3.0, 0.0, 1.0, 1.0]


def test_per_weight_parameters_are_checked():
    with pytest.raises(ValueError, match="alpha has 3 values for 2 weights"):
        get_rule_class("reinforce")(2, alpha=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="alpha must be positive"):
        get_rule_class("reinforce")(2, alpha=0.0)


def test_reward_max_and_prediction_error_formulas():
    x = [[1.0, 1.0], [-1.0, 1.0]]
    p = np.array([0.8, 0.3])
    rm = get_rule_class("reward_max")(2, alpha=1.0)
    dw, _ = rm(torch.zeros(2, 2), step(x, [1, 0], [1, 1], [1, 0], p))
    # correct right: +p(1-p) x ; correct left: -p(1-p) x
    np.testing.assert_allclose(dw.detach().numpy(), [[0.16, 0.16], [0.21, -0.21]], rtol=1e-5)
    pe = get_rule_class("prediction_error")(2, alpha=1.0)
    dw, _ = pe(torch.zeros(2, 2), step(x, [1, 0], [0, 1], [0, 0], p))
    # right chosen with pi=0.8, no reward: -(0.8) * (+1) x
    # left chosen with pi=0.7, reward: +0.3 * (-1) x
    np.testing.assert_allclose(dw.detach().numpy(), [[-0.8, -0.8], [0.3, -0.3]], rtol=1e-5)


def test_q_learning_updates_the_chosen_side_only():
    q = get_rule_class("q_learning")(2, alpha=0.5, beta=2.0)
    state = q.initial_state(1)
    dw, state = q(torch.zeros(1, 2), step([[1.0, 1.0]], 1, 1, 1), state)
    np.testing.assert_allclose(state[0, 0].detach().numpy(), [0.5, 0.5])  # right values
    np.testing.assert_allclose(state[0, 1].detach().numpy(), [0.0, 0.0])  # left untouched
    np.testing.assert_allclose(dw.detach().numpy(), [[1.0, 1.0]])  # beta * (dq_R - dq_L)


def test_none_rule_never_moves_and_has_a_fitted_offset():
    rule = get_rule_class("none")(3)
    dw, _ = rule(torch.ones(4, 3), step(np.ones((4, 3)), 1, 1, 1))
    assert torch.count_nonzero(dw) == 0
    assert rule.policy_offset().shape == (3,)


@pytest.mark.parametrize("name", ["dnn", "rnn"])
def test_network_rules_start_small_and_have_shapes(name):
    torch.manual_seed(0)
    rule = get_rule_class(name)(3, hidden_size=8)
    state = rule.initial_state(5)
    dw, new_state = rule(torch.zeros(5, 3), step(np.ones((5, 3)), 1, 1, 1), state)
    assert dw.shape == (5, 3)
    assert dw.abs().max() < 1e-2  # the per-weight scale starts at 1e-3
    if name == "rnn":
        assert new_state.shape == (5, 8) and not torch.equal(new_state, state)
    else:
        assert new_state is None


def test_bad_rule_construction():
    with pytest.raises(ValueError, match="at least one weight"):
        get_rule_class("dnn")(0)


@pytest.mark.parametrize("name", ["dnn", "rnn"])
@pytest.mark.parametrize("base, params", [
    ("reinforce_baseline", {}),
    ("reinforce_baseline_leak", dict(leak=[0.02, 0.005], rest=[1.0, -0.5])),
])
def test_nested_rule_is_its_classic_rule_when_the_correction_is_zero(name, base, params):
    torch.manual_seed(0)
    alpha, beta = [0.03, 0.01], [0.4, 0.7]
    nested = get_rule_class(name)(2, hidden_size=8, base=base, alpha=alpha, beta=beta,
                                  **params)
    classic_rule = get_rule_class(base)(2, alpha=alpha, beta=beta, **params)
    rng = np.random.default_rng(1)
    w = torch.as_tensor(rng.normal(size=(20, 2)), dtype=torch.float32)
    trial = step(np.c_[rng.uniform(-1, 1, 20), np.ones(20)], rng.integers(0, 2, 20),
                 rng.integers(0, 2, 20), rng.integers(0, 2, 20), rng.uniform(0.1, 0.9, 20))
    expected, _ = classic_rule(w, trial)
    last = nested.mlp[-1] if name == "dnn" else nested.readout[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    state = nested.initial_state(20)
    got, _ = nested(w, trial, state)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # and with a non-zero correction it differs: the network adds to the classic update
    with torch.no_grad():
        last.bias.fill_(1.0)
    assert not torch.allclose(nested(w, trial, state)[0], expected)


@pytest.mark.parametrize("centre", ["policy", "even"])
def test_a_centred_correction_follows_the_choice_made(centre):
    # rewards that follow the choices (r = [y == c]): the centred correction is (y - p) times
    # the network's difference between the choices, plus, for "even", their average
    torch.manual_seed(0)
    dnn = get_rule_class("dnn")(2, hidden_size=8, scale=1.0, centre=centre)
    rng = np.random.default_rng(2)
    y, c = rng.integers(0, 2, 20), rng.integers(0, 2, 20)
    x, p = np.c_[rng.uniform(-1, 1, 20), np.ones(20)], rng.uniform(0.1, 0.9, 20)
    w = torch.as_tensor(rng.normal(size=(20, 2)), dtype=torch.float32)
    trial = step(x, y, (y == c).astype(float), c, p)
    out = {side: dnn.mlp(rule_inputs(w, step(x, side, (side == c).astype(float), c, p)))
           for side in (0, 1)}
    expected = dnn.base_update(w, trial) + (trial.y - trial.p).unsqueeze(-1) * (out[1] - out[0])
    if centre == "even":
        expected = expected + 0.5 * (out[1] + out[0])
    got, _ = dnn(w, trial)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="centre must be one of"):
        get_rule_class("dnn")(2, centre="mean")


def test_a_gated_correction_fades_as_the_policy_grows_sure():
    torch.manual_seed(0)
    gated = get_rule_class("dnn")(2, hidden_size=8, scale=1.0, gate=True)
    rng = np.random.default_rng(3)
    p = np.array([0.5, 0.9, 0.999, 0.02])
    trial = step(np.c_[rng.uniform(-1, 1, 4), np.ones(4)], [1, 0, 1, 0], [1, 0, 0, 1],
                 [1, 1, 0, 0], p)
    w = torch.as_tensor(rng.normal(size=(4, 2)), dtype=torch.float32)
    raw = gated.mlp(rule_inputs(w, trial))
    got = gated(w, trial)[0] - gated.base_update(w, trial)
    torch.testing.assert_close(got, torch.as_tensor(4 * p * (1 - p)).float()[:, None] * raw)
    order3 = get_rule_class("dnn")(2, hidden_size=8, scale=1.0, gate=3)
    order3.load_state_dict(gated.state_dict())
    got = order3(w, trial)[0] - order3.base_update(w, trial)
    torch.testing.assert_close(got, torch.as_tensor(1 - (1 - 2 * p) ** 6).float()[:, None] * raw)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="gate must be an order"):
            get_rule_class("dnn")(2, gate=bad)
    # gated on the sigmoid of the bias weight instead of the trial's p
    on_bias = get_rule_class("dnn")(2, hidden_size=8, scale=1.0, gate=1, gate_on=1)
    on_bias.load_state_dict(gated.state_dict())
    got = on_bias(w, trial)[0] - on_bias.base_update(w, trial)
    q = torch.sigmoid(w[:, 1])
    torch.testing.assert_close(got, (4 * q * (1 - q))[:, None] * raw)
    for bad in (dict(gate=1, gate_on=2), dict(gate_on=1)):
        with pytest.raises(ValueError, match="gate_on must index"):
            get_rule_class("dnn")(2, **bad)
    # the bias weight's own correction alone gated: the stimulus weight's passes as it is
    own = get_rule_class("dnn")(2, hidden_size=8, scale=1.0, gate=1, gate_on=1, gate_all=False)
    own.load_state_dict(gated.state_dict())
    got = own(w, trial)[0] - own.base_update(w, trial)
    torch.testing.assert_close(got, torch.stack([raw[:, 0], 4 * q * (1 - q) * raw[:, 1]], -1))
    with pytest.raises(ValueError, match="gate_all=False .* needs gate_on"):
        get_rule_class("dnn")(2, gate=1, gate_all=False)


def test_a_gate_against_the_bias_closes_only_when_the_bias_overrides_the_stimulus():
    torch.manual_seed(0)
    # stimulus and bias weights: a naive policy, a trained one in a biased block (either
    # sign), one locked into a side, one locked harder
    w = torch.tensor([[0.2, 0.1], [3.0, -1.5], [-3.0, 1.5], [0.5, -3.7], [0.3, 6.0]])
    trial = step(np.c_[[1.0, -0.25, 0.0, 1.0, -1.0], np.ones(5)], [1, 0, 1, 0, 1],
                 [1, 0, 0, 1, 1], [1, 1, 0, 0, 0], [0.5, 0.2, 0.7, 0.1, 0.9])
    plain = get_rule_class("dnn")(2, hidden_size=8, scale=1.0)
    raw = plain(w, trial)[0] - plain.base_update(w, trial)
    gated = get_rule_class("dnn")(2, hidden_size=8, scale=1.0, gate=2, gate_on="against_bias")
    gated.load_state_dict(plain.state_dict())
    gate = (gated(w, trial)[0] - gated.base_update(w, trial)) / raw
    q = torch.sigmoid(w[:, 0].abs() - w[:, 1].abs()).clamp(max=0.5)
    torch.testing.assert_close(gate, (1 - (1 - 2 * q) ** 4)[:, None].expand(5, 2))
    assert gate[1:3].min() > 0.9 and gate[3:].max() < 0.35  # open when trained, shut when locked
    for bad in (dict(n_weights=1, gate=1), dict(n_weights=2, gate=0),
                dict(n_weights=2, gate=1, gate_all=False)):
        n = bad.pop("n_weights")
        with pytest.raises(ValueError, match="gate_on='against_bias' reads weights 0 and 1"):
            get_rule_class("rnn")(n, gate_on="against_bias", **bad)


def test_the_rnn_gates_its_read_out_as_the_dnn_does():
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    p = np.array([0.5, 0.9, 0.999, 0.02])
    trial = step(np.c_[rng.uniform(-1, 1, 4), np.ones(4)], [1, 0, 1, 0], [1, 0, 0, 1],
                 [1, 1, 0, 0], p)
    w = torch.as_tensor(rng.normal(size=(4, 2)), dtype=torch.float32)
    plain = get_rule_class("rnn")(2, hidden_size=8, scale=1.0)
    h0 = 0.3 * torch.randn(4, 8)
    raw = plain(w, trial, h0)[0] - plain.base_update(w, trial)
    for gate, gate_on, q in ((2, None, torch.as_tensor(p).float()),
                             (1, 1, torch.sigmoid(w[:, 1]))):
        gated = get_rule_class("rnn")(2, hidden_size=8, scale=1.0, gate=gate, gate_on=gate_on)
        gated.load_state_dict(plain.state_dict())
        got, h = gated(w, trial, h0)
        torch.testing.assert_close(got - gated.base_update(w, trial),
                                   (1 - (1 - 2 * q) ** (2 * gate))[:, None] * raw)
        torch.testing.assert_close(h, plain(w, trial, h0)[1])  # the state is not gated
    with pytest.raises(ValueError, match="gate_on must index"):
        get_rule_class("rnn")(2, gate=1, gate_on=2)


def test_unknown_base_is_refused():
    with pytest.raises(ValueError, match="base must be one of"):
        get_rule_class("dnn")(2, base="hebbian")
