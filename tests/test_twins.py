"""Closed-loop checks: twins of a fitted rule beside the animals (ibl_learnrules.twins)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from ibl_learnrules import LearningRuleGLM, SeedEnsemble, save_model, simulate_cohort
from ibl_learnrules.cli import main
from ibl_learnrules.plotting import plot_twin_check
from ibl_learnrules.twins import (
    SESSION_METRICS,
    block_switch_curve,
    check_twins,
    percentile_among_twins,
    session_metrics,
    switch_half_trials,
)

# A ground truth that trains within a few sessions, so that a small cohort shows the whole
# curve (the package's default, alpha 0.003, needs most of 15 sessions).
TRUTH = {"alpha": 0.02, "beta": 0.5}
N_SESSIONS = 7


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the rollouts are tiny per-trial ops: on a busy 2-core machine torch's intra-op threads
    # make the cohort simulation 10-30x slower (check_twins does the same for the twins)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mice():
    # animals start at zero weights like free twins do, so that the twins of the truth and
    # the animals are draws of one process and the control below tests the check alone
    return simulate_cohort(4, "reinforce_baseline", n_sessions=N_SESSIONS, random_state=1,
                           w0=[0.0, 0.0], **TRUTH)


def twin_of(rule, mice, **rule_params):
    """An estimator that stays where it starts: one epoch at a learning rate of 1e-9."""
    return LearningRuleGLM(rule=rule, rule_params=rule_params or None, lr=1e-9, max_epochs=1,
                           random_state=0).fit(mice)


@pytest.fixture(scope="module")
def truth_twin(mice):
    return twin_of("reinforce_baseline", mice, **TRUTH)


@pytest.fixture(scope="module")
def control(truth_twin, mice):
    return check_twins(truth_twin, mice, n_twins=10, random_state=0, modes=("free",),
                       psychometrics=False)


def test_check_returns_every_metric(truth_twin, mice):
    animal = mice[mice["subject"] == "sim000"]
    animal = animal[animal["session_idx"] < 3]
    check = check_twins(truth_twin, animal, n_twins=2, random_state=0)
    sessions = check.sessions
    assert sessions.groupby("mode")["twin"].nunique().to_dict() == {
        "animal": 1, "free": 2, "replay": 2}
    assert (sessions.groupby(["mode", "subject", "twin"]).size() == 3).all()
    assert set(SESSION_METRICS) <= set(sessions.columns)
    assert sessions["easy_correct"].between(0, 1).all()
    assert sessions["repeat_fraction"].between(0, 1).all()
    assert sessions[["bias", "threshold"]].notna().all().all()  # psychofit ran per session
    assert sessions["threshold"].between(10, 50).all()  # brainbox's bounds
    # replay twins see the animal's stimuli: same sessions, same trial counts
    replay = sessions[sessions["mode"] == "replay"].groupby("session_idx")["n_trials"]
    assert (replay.nunique() == 1).all()
    assert replay.first().tolist() == animal.groupby("session_idx").size().tolist()
    assert set(check.bands["n_twins"]) == {2}
    summary = check.summary.set_index(["metric", "mode"])
    assert ("repeat_fraction", "free") in summary.index
    assert ("repeat_fraction", "replay") not in summary.index  # the animal's own stimuli
    assert {("easy_correct", "replay"), ("threshold", "free"),
            ("sessions_to_trained", "free")} <= set(summary.index)
    ordered = summary.dropna(subset=["twins_low", "twins_high"])
    assert (ordered["twins_low"] <= ordered["twins_median"]).all()
    assert (ordered["twins_median"] <= ordered["twins_high"]).all()
    assert check.summary["percentile"].between(0, 1).all()
    assert check.block_switch.empty  # unbiased training sessions only
    report = check.report()
    assert "sessions_to_trained" in report and "never trained" in report
    fig = plot_twin_check(check)
    gids = {artist.get_gid() for ax in fig.axes for artist in ax.lines + ax.collections}
    assert {"animal", "median:free", "band:free", "median:replay", "trained:free"} <= gids
    assert [ax.get_title() for ax in fig.axes][2:4] == ["psychometric bias (%)",
                                                        "psychometric threshold (%)"]


def test_twins_of_the_ground_truth_pass_the_check(control, mice):
    summary = control.summary.set_index("metric")
    easy = summary.loc["easy_correct"]
    # The animals' mean (4 animals) is less variable than one twin, so it should lie inside
    # the twins' 5-95 % band at nearly every session; 6 of 7 sessions leaves room for one
    # session where 10 twins draw a narrow band.
    assert easy["coverage"] >= 6 / 7
    # The twins' mean of 10 and the animals' mean of 4 differ by sampling noise alone: the
    # per-session sd of one animal's easy-correct is <= ~0.06 here, so the rms difference of
    # means stays well under 0.06 (0.02 at these seeds; a rule that does not learn: 0.44).
    assert easy["rms"] < 0.06
    trained = summary.loc["sessions_to_trained"]
    assert trained["not_reached"] <= 1  # the truth trains within 7 sessions
    assert abs(trained["twins_median"] - trained["animal"]) <= 1  # sessions are whole days
    # the free twins' debiasing follows their own errors: as often as the animals'
    assert abs(summary.loc["repeat_fraction", "twins_median"]
               - summary.loc["repeat_fraction", "animal"]) < 0.05
    # each animal is a draw of the twins' process, so its rank among them is uniform and
    # the mean of 4 has sd 0.14 (0.29 / sqrt 4): 0.2-0.8 is beyond two sd on each side
    assert 0.2 <= trained["percentile"] <= 0.8
    assert 0.2 <= easy["percentile"] <= 0.8
    band = control.bands.query("metric == 'easy_correct'")
    assert band["session_idx"].tolist() == list(range(N_SESSIONS))
    assert band["twins_mean"].iloc[-1] > band["twins_mean"].iloc[0] + 0.2  # they learn


def test_a_rule_that_cannot_learn_fails_the_check(mice):
    check = check_twins(twin_of("none", mice), mice, n_twins=10, random_state=0,
                        modes=("free",), psychometrics=False)
    summary = check.summary.set_index("metric")
    # the same thresholds as the control above, failed by wide margins
    assert summary.loc["easy_correct", "coverage"] < 0.5
    assert summary.loc["easy_correct", "rms"] > 0.2
    assert summary.loc["sessions_to_trained", "not_reached"] == 10
    assert np.isnan(summary.loc["sessions_to_trained", "twins_median"])
    # every animal trained and learned more than any twin: below all of them, above all
    assert summary.loc["sessions_to_trained", "percentile"] == 0.0
    assert summary.loc["easy_correct", "percentile"] == 1.0


def test_percentile_ranks_never_last_and_counts_ties_half():
    assert percentile_among_twins([5.0], [1.0, 2.0, 3.0, 4.0]) == 1.0
    assert percentile_among_twins([0.0], [1.0, 2.0]) == 0.0
    assert percentile_among_twins([2.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.375)
    # never trained: above every twin that did, a tie with those that did not
    assert percentile_among_twins([np.nan], [3.0, np.nan]) == pytest.approx(0.75)
    assert percentile_among_twins([9.0], [3.0, np.nan]) == pytest.approx(0.5)
    # the mean over animals
    assert percentile_among_twins([0.0, 5.0], [1.0, 2.0]) == pytest.approx(0.5)
    assert np.isnan(percentile_among_twins([], [1.0]))
    assert np.isnan(percentile_among_twins([1.0], []))


def test_session_metrics_count_easy_trials_and_repeats():
    trials = pd.DataFrame({
        "subject": "m", "session": "s0", "trial": range(6),
        "contrastLeft": [1.0, 0.5, np.nan, 0.25, np.nan, 1.0],
        "contrastRight": [np.nan, np.nan, 0.0625, np.nan, 1.0, np.nan],
        "choice": [1, -1, -1, 1, 0, 1], "feedbackType": [1, -1, 1, 1, -1, 1],
        "probabilityLeft": [0.5, 0.5, 1.0, 0.5, 0.0, 0.8]})
    row = session_metrics(trials, psychometrics=False).iloc[0]
    # easy (>= 0.5): trials 0, 1, 4 (no-go: an error, as brainbox counts), 5 -> 2 of 4
    assert row["easy_correct"] == 0.5
    assert row["repeat_fraction"] == pytest.approx(2 / 6)  # p(left) 1.0 and 0.0
    assert row["status"] == "in training"


def _biased_session(tau: float, seed: int) -> pd.DataFrame:
    """One session of blocks whose left choices adapt to each switch with time constant tau."""
    rng = np.random.default_rng(seed)
    lengths = [40, 50, 50, 50, 50, 50, 50, 50, 50]
    priors = [0.5] + [0.2, 0.8] * 4
    p_left, since, old = [], [], 0.5
    for n, prior in zip(lengths, priors, strict=True):
        k = np.arange(n)
        level = old + (prior - old) * (1 - np.exp(-k / tau)) if old != 0.5 else np.full(n, prior)
        p_left.append(level)
        since.append(k)
        old = prior
    p = np.concatenate(p_left)
    left = rng.random(len(p)) < p
    side_left = rng.random(len(p)) < np.repeat(priors, lengths)
    return pd.DataFrame({
        "subject": "m", "session": f"b{seed}", "trial": np.arange(len(p)),
        # zero contrast: the choices follow the prior alone (what the curve reads)
        "contrastLeft": np.where(side_left, 0.0, np.nan),
        "contrastRight": np.where(side_left, np.nan, 0.0),
        "choice": np.where(left, 1, -1),
        "feedbackType": np.where(left == side_left, 1, -1),
        "probabilityLeft": np.repeat(priors, lengths)})


def test_block_switch_curve_and_its_half_time():
    trials = pd.concat([_biased_session(4.0, seed) for seed in range(30)])
    curve = block_switch_curve(trials, before=10, after=30)
    assert curve["trials_since_switch"].min() == -10
    assert curve["trials_since_switch"].max() == 29
    assert set(curve["to_block"]) == {0.2, 0.8}
    # 7 switches per session (the first block after the unbiased start is not one), 30 sessions
    counts = curve.groupby("trials_since_switch")["n"].sum()
    assert counts.loc[0] == 7 * 30 and counts.loc[-1] == 7 * 30
    late = curve[curve["trials_since_switch"] >= 20]
    assert late.groupby("to_block")["p_left"].mean().round(1).to_dict() == {0.2: 0.2, 0.8: 0.8}
    # true half time: 4 ln 2 = 2.8 trials; 6,300 simulated choices pin it within ~0.5
    assert switch_half_trials(curve) == pytest.approx(4.0 * np.log(2.0), abs=0.6)
    slow = block_switch_curve(pd.concat([_biased_session(10.0, s) for s in range(30)]))
    assert switch_half_trials(slow) > switch_half_trials(curve) + 3
    # visible stimuli are left out by default, counted on request
    visible = trials.assign(contrastLeft=trials["contrastLeft"] * 0 + 1.0,
                            contrastRight=trials["contrastRight"] * 0 + 1.0)
    assert block_switch_curve(visible).empty
    assert block_switch_curve(visible, max_contrast=1.0).equals(block_switch_curve(trials))
    # short runs at 0.2 / 0.8 are the debiasing draws of older training sessions, not blocks
    short = trials.assign(probabilityLeft=np.resize([0.5] * 5 + [0.2] * 4 + [0.8] * 4,
                                                    len(trials)))
    assert block_switch_curve(short).empty
    assert np.isnan(switch_half_trials(curve.iloc[:0]))


def test_check_draws_block_switches_of_biased_animals(truth_twin):
    trials = pd.concat([_biased_session(4.0, seed) for seed in range(3)])
    check = check_twins(truth_twin, trials, n_twins=2, modes=("replay",), psychometrics=False)
    assert set(check.block_switch["mode"]) == {"animal", "replay"}
    assert check.summary["metric"].tolist()[-1] == "switch_half_trials"
    fig = plot_twin_check(check)
    gids = {line.get_gid() for ax in fig.axes for line in ax.lines}
    assert {"switch:animal:0.8", "switch:replay:0.2"} <= gids


def test_cli_check_takes_a_saved_ensemble(mice, tmp_path, capsys):
    ens = SeedEnsemble(LearningRuleGLM(rule="reinforce_baseline", lr=1e-9, max_epochs=1,
                                       rule_params=TRUTH), n_members=2, random_state=0)
    model = save_model(ens.fit(mice), tmp_path / "ensemble.pt")
    csv = tmp_path / "mice.csv"
    mice[mice["session_idx"] < 2].to_csv(csv, index=False)
    args = ["check", "--model", str(model), "--trials", str(csv), "--subject", "sim000",
            "--n-twins", "2", "--no-psychometrics", "--modes", "free", "--out",
            str(tmp_path / "check")]
    assert main(args) == 0
    assert "2 twins of" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "check" / "twin_check_summary.csv")
    assert set(summary["mode"]) == {"free"}


def test_free_twins_can_run_past_the_animals_last_session(truth_twin, mice):
    # the animals cut to their first 4 sessions: twins run 7, so that those that train in
    # sessions 5-7 are seen to (with 4 sessions, 2 of these 10 twins counted as never trained)
    first = mice[mice.groupby("subject")["session"].rank(method="dense") <= 4]
    check = check_twins(truth_twin, first, n_twins=10, random_state=0, modes=("free",),
                        psychometrics=False, free_sessions=7)
    free = check.sessions[check.sessions["mode"] == "free"]
    assert free.groupby("twin")["session_idx"].max().eq(6).all()
    trained = check.subjects.loc[check.subjects["mode"] == "free", "sessions_to_trained"]
    assert trained.gt(4).any() and trained.notna().all()
    # curves and each twin's mean are compared over the animals' 4 sessions only
    assert check.bands["session_idx"].max() == 3
    row = check.summary.set_index(["metric", "mode"]).loc[("easy_correct", "free")]
    means = free[free["session_idx"] < 4].groupby("twin")["easy_correct"].mean()
    assert row["twins_median"] == pytest.approx(means.median())
    with pytest.raises(ValueError, match="free_sessions must be an integer of at least"):
        check_twins(truth_twin, first, modes=("free",), free_sessions=3)


def test_check_rejects_bad_arguments(truth_twin, mice):
    with pytest.raises(ValueError, match="unknown mode"):
        check_twins(truth_twin, mice, modes=("closed",))
    with pytest.raises(ValueError, match="n_twins"):
        check_twins(truth_twin, mice, n_twins=0)


def test_cli_check_writes_the_figure_and_prints_the_summary(truth_twin, mice, tmp_path, capsys):
    model = tmp_path / "model.pt"
    save_model(truth_twin, model)
    csv = tmp_path / "mice.csv"
    mice[mice["session_idx"] < 3].to_csv(csv, index=False)
    out = tmp_path / "check"
    args = ["check", "--model", str(model), "--trials", str(csv), "--subject", "sim000",
            "--n-twins", "2", "--no-psychometrics", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 twins of" in printed and "easy_correct" in printed
    assert "sessions_to_trained" in printed
    assert (out / "twin_check.png").stat().st_size > 0
    summary = pd.read_csv(out / "twin_check_summary.csv")
    assert {"free", "replay"} == set(summary["mode"])
    assert main(["check", "--model", str(tmp_path / "missing.pt"), "--trials", str(csv)]) == 2
    assert main(["check", "--model", str(model), "--trials", str(tmp_path / "no.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such model file" in err[0] and "no such file" in err[1]
    longer = args + ["--modes", "free", "--free-sessions", "5"]
    assert main(longer) == 0
    free = pd.read_csv(out / "twin_check_sessions.csv").query("mode == 'free'")
    assert free["session_idx"].max() == 4
    assert main(longer[:-1] + ["2"]) == 2
    assert "free_sessions must be an integer of at least" in capsys.readouterr().err
