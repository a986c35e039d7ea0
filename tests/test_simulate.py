import numpy as np
import pandas as pd
import pytest
import torch

from ibl_learnrules import simulate_cohort, validate_trials
from ibl_learnrules.rules import Reinforce
from ibl_learnrules.simulate import CONTRAST_STAGES, GROUND_TRUTH_DEFAULTS, ground_truth_rule


def contrast_of(trials):
    return np.fmax(trials["contrastLeft"].fillna(0), trials["contrastRight"].fillna(0))


@pytest.fixture(scope="module")
def cohort():
    # 4 mice x 15 sessions (~9,000 trials each) with the default learning rate
    return simulate_cohort(4, random_state=7)


def test_output_is_a_valid_trials_table(cohort):
    validated = validate_trials(cohort)
    assert len(validated) == len(cohort)
    assert (validated.index == cohort.index).all()  # already in contract order
    assert cohort.groupby("subject")["session"].nunique().eq(15).all()
    lengths = cohort.groupby("session").size()
    assert lengths.between(300, 900).all()


def test_contrasts_are_introduced_in_order(cohort):
    contrast = contrast_of(cohort)
    for _, mouse in cohort.groupby("subject"):
        c = contrast.loc[mouse.index]
        first_session = {level: mouse.loc[c.index[c == level], "session_idx"].min()
                         for level in (0.5, 0.25, 0.125, 0.0625, 0.0)}
        assert mouse.loc[c.index[c == 1.0], "session_idx"].min() == 0
        assert first_session[0.5] == 0
        assert first_session[0.5] < first_session[0.25] < first_session[0.125] \
            < first_session[0.0625]
        assert first_session[0.0625] == first_session[0.0]
        # 0.5 is dropped in the last stage and never comes back
        last_with_half = mouse.loc[c.index[c == 0.5], "session_idx"].max()
        assert (c[mouse["session_idx"] > last_with_half] != 0.5).all()
        assert last_with_half < mouse["session_idx"].max()


def test_zero_contrast_is_half_as_frequent(cohort):
    final = cohort[cohort["session_idx"] >= 12]
    fresh = final[final["probabilityLeft"] == 0.5]  # repeats copy the previous stimulus
    counts = contrast_of(fresh).value_counts()
    ratio = counts[0.0] / counts[[1.0, 0.25, 0.125, 0.0625]].mean()
    # >= 2,500 zero-contrast trials: the binomial s.e. of the ratio is < 0.03
    assert abs(ratio - 0.5) < 0.1


def test_errors_on_easy_contrasts_are_repeated(cohort):
    for _, session in cohort.groupby("session"):
        c = contrast_of(session).to_numpy()
        right = session["contrastRight"].notna().to_numpy()
        error = session["feedbackType"].to_numpy() == -1
        p_left = session["probabilityLeft"].to_numpy()
        easy_error = error[:-1] & (c[:-1] >= 0.5)
        nxt = np.flatnonzero(easy_error) + 1
        np.testing.assert_array_equal(c[nxt], c[nxt - 1])
        np.testing.assert_array_equal(right[nxt], right[nxt - 1])
        np.testing.assert_array_equal(p_left[nxt], np.where(right[nxt], 0.0, 1.0))
        # nothing else is a repeat trial
        assert np.isin(p_left[1:][~easy_error], [0.5]).all()


def test_reproducible_by_seed():
    a = simulate_cohort(2, n_trials=400, random_state=3)
    b = simulate_cohort(2, n_trials=400, random_state=3)
    c = simulate_cohort(2, n_trials=400, random_state=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["choice"].equals(c["choice"])


@pytest.mark.parametrize("rule", ["reinforce", "reinforce_baseline", "reward_history"])
def test_learners_go_from_chance_to_expert(rule):
    cohort = simulate_cohort(3, rule, n_sessions=15, random_state=11)
    easy = contrast_of(cohort) >= 0.5
    correct = cohort["feedbackType"].eq(1)
    by_session = correct[easy].groupby(cohort.loc[easy, "session_idx"]).mean()
    assert by_session.iloc[0] < 0.6
    assert by_session.iloc[-3:].min() > 0.8


def test_true_weights_follow_the_rule():
    cohort = simulate_cohort(1, "reinforce_baseline", n_trials=600, random_state=2,
                             alpha=0.05, beta=0.3)
    w = cohort[["true_w_stimulus", "true_w_bias"]].to_numpy()
    c_right, c_left = cohort["contrastRight"].fillna(0), cohort["contrastLeft"].fillna(0)
    s = (np.tanh(5 * c_right) - np.tanh(5 * c_left)) / np.tanh(5)
    x = np.c_[s, np.ones(len(s))]
    y = (cohort["choice"] == -1).to_numpy(float)
    r = (cohort["feedbackType"] == 1).to_numpy(float)
    p = 1 / (1 + np.exp(-(w * x).sum(1)))
    expected = 0.05 * ((r - 0.3) * (y - p))[:, None] * x
    np.testing.assert_allclose(np.diff(w, axis=0), expected[:-1], rtol=1e-10, atol=1e-12)


def test_named_rules_simulate_with_exact_known_parameters():
    rule = ground_truth_rule("reinforce_baseline", 2)
    assert rule.alpha.dtype == torch.float64 and not rule.log_alpha.requires_grad
    np.testing.assert_allclose(rule.alpha.numpy(), 0.003, rtol=1e-14)  # float32: ~1e-8
    assert GROUND_TRUTH_DEFAULTS["reinforce_baseline"] == {"alpha": 0.003, "beta": 0.5}
    given = ground_truth_rule("reinforce", 2, {"alpha": [0.01, 0.02]})
    np.testing.assert_allclose(given.alpha.numpy(), [0.01, 0.02], rtol=1e-14)


def test_a_rule_instance_is_the_ground_truth_as_given():
    rule = Reinforce(2, alpha=[0.05, 0.01])
    rule.log_alpha.data[1] = -50.0  # a frozen bias
    cohort = simulate_cohort(2, rule, n_trials=400, random_state=0)
    assert cohort.groupby("subject")["true_w_bias"].nunique().eq(1).all()
    assert cohort.groupby("subject")["true_w_stimulus"].nunique().gt(100).all()
    with pytest.raises(ValueError, match="given twice"):
        simulate_cohort(1, rule, n_trials=10, alpha=0.1)
    with pytest.raises(ValueError, match="the rule has 2 weights for 3 covariates"):
        simulate_cohort(1, rule, n_trials=10, covariates=("stimulus", "bias", "prev_choice"))


def test_an_animal_does_not_depend_on_its_cohort():
    small = simulate_cohort(2, n_trials=700, random_state=5)
    large = simulate_cohort(5, n_trials=700, random_state=5)
    pd.testing.assert_frame_equal(small, large[large["subject"].isin(["sim000", "sim001"])])


def test_biased_blocks_once_trained():
    cohort = simulate_cohort(1, protocol="biased", n_sessions=12, random_state=5, alpha=0.02)
    p_left = cohort["probabilityLeft"]
    biased = cohort[p_left.isin([0.2, 0.8])]
    assert len(biased) > 0
    first_biased_session = biased["session_idx"].min()
    later = cohort[cohort["session_idx"] >= first_biased_session]
    # biased sessions start with 90 unbiased trials and have no repeat trials
    assert set(later["probabilityLeft"].unique()) <= {0.2, 0.5, 0.8}
    assert (later.groupby("session").head(90)["probabilityLeft"] == 0.5).all()
    blocks = (p_left[later.index].diff() != 0).cumsum()
    lengths = later[later["probabilityLeft"] != 0.5].groupby(blocks).size()
    # inner blocks are 20-100 trials (the last one of a session may be cut)
    assert lengths.iloc[:-1].between(20, 100).mean() > 0.9
    # the stimulus side follows the block prior
    left = later["contrastLeft"].notna()
    assert left[later["probabilityLeft"] == 0.8].mean() > 0.7
    assert left[later["probabilityLeft"] == 0.2].mean() < 0.3
    assert CONTRAST_STAGES[-1] == tuple(sorted(set(contrast_of(later)), reverse=True))


def test_lengths_and_limits():
    by_trials = simulate_cohort(2, n_trials=1234, random_state=0)
    assert by_trials.groupby("subject").size().eq(1234).all()
    by_both = simulate_cohort(1, n_trials=100_000, n_sessions=2, random_state=0)
    assert by_both["session"].nunique() == 2


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(n_subjects=0), ValueError, "n_subjects must be a positive integer"),
        (dict(n_subjects=1, n_trials=-5), ValueError, "n_trials must be a positive integer"),
        (dict(n_subjects=1, rule="hebbian"), ValueError, "unknown simulated rule 'hebbian'"),
        (dict(n_subjects=1, protocol="ephys"), ValueError, "unknown protocol 'ephys'"),
        (dict(n_subjects=1, gamma=2.0), TypeError, "bad parameters for rule 'reinforce'"),
        (dict(n_subjects=1, w0=[0.0]), ValueError, "w0 has 1 values for 2 covariates"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        simulate_cohort(**kwargs)


def test_history_covariates_in_simulation():
    cohort = simulate_cohort(1, n_trials=300, random_state=0,
                             covariates=("stimulus", "bias", "prev_choice"), w0=[0.0, 0.0, 2.0])
    # a strong positive prev_choice weight makes the mouse repeat its last choice
    same = (cohort["choice"].diff() == 0).mean()
    assert same > 0.7


def test_replay_twins_see_their_own_previous_choice():
    from ibl_learnrules import featurize
    from ibl_learnrules.rules import make_rule
    from ibl_learnrules.simulate import replay

    # a policy that only repeats its previous choice (sigmoid(6) = 0.998), learning nothing
    trials = validate_trials(simulate_cohort(2, n_trials=400, random_state=0, alpha=0.02))
    arrays = featurize(trials, ("stimulus", "bias", "prev_choice"))
    w0 = torch.tensor([[0.0, 0.0, 6.0]] * 2, dtype=torch.float32)
    twin = replay(make_rule("none", 3), trials, arrays, w0, random_state=0)
    assert len(twin) == len(trials)
    same_session = ((twin["subject"] == twin["subject"].shift())
                    & (twin["session"] == twin["session"].shift())).to_numpy()
    repeats_itself = (twin["choice"].to_numpy()[1:] == twin["choice"].to_numpy()[:-1])
    follows_animal = (twin["choice"].to_numpy()[1:] == trials["choice"].to_numpy()[:-1])
    # the twin repeats its own choices; had it seen the animal's, it would repeat those
    assert repeats_itself[same_session[1:]].mean() > 0.95
    assert follows_animal[same_session[1:]].mean() < 0.8


def test_simulated_side_trace_is_the_one_featurize_computes():
    from ibl_learnrules import featurize

    # a policy that only follows the trace (weight 30), learning nothing: its choices show
    # the trace the simulator computed online, which must be featurize's from the table
    covariates = ("stimulus", "bias", "reward_side_trace")
    sim = simulate_cohort(2, "none", n_sessions=3, covariates=covariates, w0=[0.0, 0.0, 30.0],
                          random_state=0)
    arrays = featurize(sim, covariates)
    trace = arrays.x[..., 2][arrays.observed.astype(bool)]
    right = sim["choice"].to_numpy() == -1
    clear = np.abs(trace) > 0.2  # sigmoid(30 * 0.2) = 0.998: the sign decides
    assert clear.mean() > 0.5
    assert (right[clear] == (trace[clear] > 0)).mean() > 0.99
    # sessions start at 0, where the policy has no preference
    assert (trace[arrays.new_session[arrays.observed.astype(bool)].astype(bool)] == 0).all()
