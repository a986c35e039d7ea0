import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ibl_learnrules import LearningRuleGLM, load_ks014, simulate_cohort  # noqa: E402
from ibl_learnrules.interpret import (  # noqa: E402
    delta_w_grid,
    psychometric_curves,
    reward_history_updates,
    summarize_reward_history,
)
from ibl_learnrules.plotting import (  # noqa: E402
    plot_delta_w_grid,
    plot_learning_curve,
    plot_model_comparison,
    plot_psychometric,
    plot_reward_history,
    plot_training_loss,
    plot_weight_trajectory,
)
from ibl_learnrules.rules import Reinforce, RewardHistoryReinforce  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def lines(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


@pytest.fixture(scope="module")
def fitted():
    cohort = simulate_cohort(2, n_trials=1000, random_state=2, alpha=0.05)  # sim001: 3 sessions
    est = LearningRuleGLM(rule="reinforce", max_epochs=3, lr=0.05, tbptt=200,
                          early_stopping=True, patience=5, random_state=0).fit(cohort)
    return est, cohort, est.predict_trajectory(cohort)


def test_weight_trajectory_draws_the_weights_sessions_stages_and_truth(fitted):
    _, cohort, traj = fitted
    mouse = "sim001"
    mine = cohort[cohort["subject"] == mouse].reset_index(drop=True)
    starts = mine.index[mine["trial"] == 0].tolist()
    assert len(starts) == 3
    sessions = mine["session"].unique()
    stages = pd.DataFrame({"subject": [mouse] * 3, "session": sessions,
                           "status": ["in training", "trained 1a", "trained 1a"]})
    ax = plot_weight_trajectory(traj, true=cohort, stages=stages, subject=mouse)

    assert [line.get_xdata()[0] for line in lines(ax, "session_start")] == starts
    assert [line.get_xdata()[0] for line in lines(ax, "stage")] == [starts[1]]
    w = traj.loc[traj["subject"] == mouse, "w_stimulus"].to_numpy()
    (line,) = lines(ax, "w_stimulus")
    np.testing.assert_array_equal(line.get_xdata(), np.arange(len(w)))
    np.testing.assert_array_equal(line.get_ydata(), w)
    (true_line,) = lines(ax, "true_w_bias")
    np.testing.assert_array_equal(true_line.get_ydata(), mine["true_w_bias"].to_numpy())
    assert true_line.get_linestyle() == "--"
    assert true_line.get_color() == lines(ax, "w_bias")[0].get_color()


def test_weight_trajectory_needs_a_subject_when_there_are_several(fitted):
    _, cohort, traj = fitted
    with pytest.raises(ValueError, match="2 subjects.*subject="):
        plot_weight_trajectory(traj)
    with pytest.raises(ValueError, match="no true_w_"):
        plot_weight_trajectory(traj, true=cohort.drop(columns=["true_w_stimulus",
                                                               "true_w_bias"]),
                               subject="sim000")


def test_delta_w_grid_lines_are_the_grid():
    grid = delta_w_grid(Reinforce(2, alpha=0.1), weights=[0.5, -0.2])
    fig = plot_delta_w_grid(grid)
    assert len(fig.axes) == 2
    for ax, name in zip(fig.axes, ("stimulus", "bias"), strict=True):
        for choice in (0, 1):
            for reward in (0, 1):
                (line,) = lines(ax, f"choice={choice},reward={reward}")
                rows = grid[(grid["choice"] == choice) & (grid["reward"] == reward)]
                rows = rows.sort_values("stimulus")
                np.testing.assert_array_equal(line.get_xdata(), rows["stimulus"])
                np.testing.assert_array_equal(line.get_ydata(), rows[f"dw_{name}"])
    ax = plot_delta_w_grid(grid, covariate="bias")
    assert ax.get_ylabel() == "Δw bias"
    several = delta_w_grid(Reinforce(2), weights={"bias": [0.0, 1.0]})
    with pytest.raises(ValueError, match="varies \\['w_bias'\\]"):
        plot_delta_w_grid(several)


def test_reward_history_bars_are_the_summary():
    trials = simulate_cohort(2, "reward_history", n_trials=800, random_state=0)
    updates = reward_history_updates(RewardHistoryReinforce(2), trials, k=3)
    summary = summarize_reward_history(updates)
    ax = plot_reward_history(updates, covariate="stimulus")
    rows = summary[summary["covariate"] == "stimulus"]
    contexts = ["unrewarded", "mixed", "rewarded", "start"]
    for container, reward in zip(ax.containers, (0.0, 1.0), strict=True):
        expected = rows[rows["reward"] == reward].set_index("context")["rate"][contexts]
        np.testing.assert_allclose([bar.get_height() for bar in container], expected)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    n = rows.groupby("context")["n_trials"].sum()
    assert labels == [f"{c}\n(n={n[c]})" for c in contexts]
    ax = plot_reward_history(summary, covariate="bias", measure="mean_abs_dw")
    expected = summary[(summary["covariate"] == "bias") & (summary["reward"] == 1.0)]
    np.testing.assert_allclose([bar.get_height() for bar in ax.containers[1]],
                               expected.set_index("context")["mean_abs_dw"][contexts])


def test_model_comparison_means_are_per_animal_means():
    rng = np.random.default_rng(0)
    rows = [{"rule": rule, "seed": seed, "subject": f"m{a}",
             "loglik": -0.6 + shift + 0.05 * rng.standard_normal()}
            for rule, shift in (("none", 0.0), ("dnn", 0.04), ("reinforce", 0.02))
            for seed in (0, 1) for a in range(5)]
    results = pd.DataFrame(rows)
    results = results.drop(index=3)  # an animal with one seed only: still one point per animal
    ax = plot_model_comparison(results)

    per_animal = results.groupby(["rule", "subject"])["loglik"].mean()
    means = per_animal.groupby("rule").mean().sort_values()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(means.index)
    (mean_line,) = lines(ax, "mean")
    np.testing.assert_allclose(mean_line.get_ydata(), means.to_numpy())
    animal = lines(ax, "animal:m2")[0]
    np.testing.assert_allclose(animal.get_ydata(),
                               [per_animal[rule, "m2"] for rule in means.index])
    assert len([line for line in ax.lines if line.get_gid().startswith("animal:")]) == 5
    assert lines(ax, "chance")[0].get_ydata()[0] == pytest.approx(-math.log(2))


def test_learning_curve_points_are_the_fraction_correct_per_session():
    ks014 = load_ks014()
    p = np.full(len(ks014), 0.7)
    ax = plot_learning_curve(ks014, p_right=p)
    (data,) = lines(ax, "data:KS014")
    (model,) = lines(ax, "model:KS014")
    expected, model_expected = [], []
    for _, session in ks014.groupby("session_idx"):
        go = session[session["choice"] != 0]
        expected.append((go["feedbackType"] == 1).mean())
        model_expected.append(np.where(go["contrastRight"].notna(), 0.7, 0.3).mean())
    np.testing.assert_array_equal(data.get_xdata(), np.arange(15))
    np.testing.assert_allclose(data.get_ydata(), expected)
    np.testing.assert_allclose(model.get_ydata(), model_expected)


def test_training_loss_is_the_history(fitted):
    est, _, _ = fitted
    ax = plot_training_loss(est)
    np.testing.assert_allclose(lines(ax, "train")[0].get_ydata(), est.history_["train_loss"])
    np.testing.assert_allclose(lines(ax, "val")[0].get_ydata(), est.history_["val_loss"])
    np.testing.assert_array_equal(lines(ax, "train")[0].get_xdata(), est.history_["epoch"])


def test_psychometric_plot_shows_the_points_and_fits():
    trials = simulate_cohort(1, n_sessions=2, random_state=0, alpha=0.05)
    curves = psychometric_curves(trials, p_right=np.full(len(trials), 0.4))
    ax = plot_psychometric(curves, session=0)
    points = curves.points[curves.points["session_idx"] == 0]
    (data,) = lines(ax, "data")
    np.testing.assert_allclose(data.get_xdata(), 100 * points["contrast"])
    np.testing.assert_allclose(data.get_ydata(), points["p_right"])
    np.testing.assert_allclose(lines(ax, "model")[0].get_ydata(), 0.4)
    assert len(lines(ax, "fit:data")) == len(lines(ax, "fit:model")) == 1
    with pytest.raises(ValueError, match="no session 7"):
        plot_psychometric(curves, session=7)
