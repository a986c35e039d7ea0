"""The paper's experiment (issue 13, item 5) on a local ONE cache built from the bundled mice."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from one.api import ONE
from sklearn.model_selection import GroupKFold

from ibl_learnrules.datasets import load_ibl_mice
from ibl_learnrules.evaluation import compare_rules
from ibl_learnrules.experiment import (
    PAPER_RULES,
    find_subjects,
    load_first_trials,
    run_paper_experiment,
)
from ibl_learnrules.io.one import write_one_cache

LAB_A = ["CSHL_002", "CSHL_005", "KS014", "KS016"]
LAB_B = ["ZM_1085", "ZM_1087"]
SHORT = "ZM_1092"  # in lab B, cut to its first 250 trials
FULL = LAB_A + LAB_B
FAST = {"max_epochs": 2}
OUTPUTS = {"results.csv", "tests.csv", "report.txt", "summary.json", "model_comparison.png",
           "paired_differences.png"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # per-trial rollouts of tiny tensors: on a busy 2-core machine a second intra-op thread
    # makes every op wait for a core (ms instead of us); the results do not depend on it.
    # numba's too: the kernels' threads would compete for the same two cores
    import numba
    import torch

    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(threads[0])
    numba.set_num_threads(threads[1])


@pytest.fixture(scope="module")
def mice():
    mice = load_ibl_mice("training")
    mice = mice[mice["subject"].isin(FULL + [SHORT])].copy()
    # the bundled table has no dates: one session a day, in the mouse's session order
    mice["date"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(mice["session_index"], unit="D")
    return mice


@pytest.fixture(scope="module")
def cache(tmp_path_factory, mice):
    short = mice[mice["subject"] == SHORT].head(250)
    root = tmp_path_factory.mktemp("one_cache_27")
    write_one_cache(mice[mice["subject"].isin(LAB_A)], root, lab="labA")
    write_one_cache(pd.concat([mice[mice["subject"].isin(LAB_B)], short]), root, lab="labB")
    return root


def one_local(root):
    return ONE(cache_dir=root, mode="local")


@pytest.fixture(scope="module")
def experiment(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_paper_experiment(one_local(cache), subjects=FULL, n_trials=600, n_folds=3,
                                      estimator_params=FAST, out=out, progress=False)
    return result, out, [str(w.message) for w in caught]


def test_the_first_trials_of_each_mouse_are_compared(experiment, mice):
    result, _, _ = experiment
    alf = ["contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft"]
    for subject in FULL:
        got = result.trials[result.trials["subject"] == subject]
        want = mice[mice["subject"] == subject].head(600)
        np.testing.assert_array_equal(got[alf].to_numpy(float), want[alf].to_numpy(float))


def test_every_mouse_is_held_out_once_per_rule(experiment):
    result, _, _ = experiment
    table = result.results
    assert set(table["rule"]) == set(PAPER_RULES)
    counts = table.groupby(["rule", "subject"]).size()
    assert len(counts) == len(PAPER_RULES) * len(FULL) and (counts == 1).all()
    assert sorted(table["fold"].unique()) == [0, 1, 2]
    # a mouse sits in the same fold for every rule
    assert (table.groupby("subject")["fold"].nunique() == 1).all()
    assert result.trials_per_subject.to_dict() == dict.fromkeys(sorted(FULL), 600)
    assert result.trials.groupby("subject").size().to_dict() == dict.fromkeys(FULL, 600)
    assert table["n_trials"].between(550, 600).all()  # no-go trials are not scored
    assert np.isfinite(table[["loglik", "bits", "accuracy"]].to_numpy()).all()
    assert result.short == [] and result.dropped == []


def test_fold_by_fold_run_equals_one_compare_rules_call(experiment):
    result, _, _ = experiment
    direct = compare_rules(result.trials, ["none", "reinforce"], cv=GroupKFold(3),
                           estimator_params=FAST | {"verbose": 0})
    ours = result.results[result.results["rule"].isin(["none", "reinforce"])]
    key = ["rule", "subject"]
    pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True),
                                  direct.sort_values(key).reset_index(drop=True))


def test_report_tests_every_flexible_rule_against_every_classic_rule(experiment):
    result, _, messages = experiment
    pairs = [(a, b) for a in ("dnn", "rnn") for b in ("none", "reinforce", "reinforce_baseline")]
    assert list(zip(result.tests["flexible"], result.tests["classic"], strict=True)) == pairs
    assert (result.tests["n_animals"] == len(FULL)).all()
    for a, b in pairs:
        assert f"{a} > {b}: " in result.report
    assert "verdict: dnn" in result.report and "verdict: rnn" in result.report
    assert result.reference in ("none", "reinforce", "reinforce_baseline")
    # the cache records no task protocol: one warning for all mice, not one per mouse
    assert sum("without a task_protocol" in m for m in messages) == 1


def test_outputs_are_written(experiment):
    result, out, _ = experiment
    assert {p.name for p in out.iterdir()} == OUTPUTS  # no temporary file left behind
    assert set(result.files) == {"results", "tests", "report", "summary", "model_comparison",
                                 "paired_differences"}
    written = pd.read_csv(out / "results.csv")
    assert len(written) == len(result.results)
    np.testing.assert_allclose(written["loglik"], result.results["loglik"])
    assert (out / "report.txt").read_text().strip() == result.report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects"] == dict.fromkeys(sorted(FULL), 600)
    assert set(summary["rules"]) == set(PAPER_RULES)
    assert len(summary["tests"]) == 6 and summary["settings"]["n_folds"] == 3
    assert summary["files"]["summary"].endswith("summary.json")
    for name in ("model_comparison.png", "paired_differences.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_mice_chosen_by_lab(cache):
    one = one_local(cache)
    assert find_subjects(one, labs="labB") == sorted(LAB_B + [SHORT])
    assert find_subjects(one, labs=["labA", "labB"]) == sorted(FULL + [SHORT])
    with pytest.warns(UserWarning, match=rf"fewer than 600 trials .*{SHORT} \(250\)"):
        result = run_paper_experiment(one, labs=["labB"], n_trials=600, n_folds=3,
                                      rules=["none", "dnn"], estimator_params=FAST,
                                      progress=False)
    assert sorted(result.results["subject"].unique()) == sorted(LAB_B + [SHORT])
    assert result.short == [SHORT] and result.files == {}
    assert result.trials_per_subject[SHORT] == 250
    assert f"fewer than 600 trials (kept): {SHORT}" in result.report


def test_mice_below_the_minimum_are_left_out(cache):
    with pytest.warns(UserWarning, match=rf"left out: {SHORT} \(250 trials < min_trials=300\)"):
        trials, short, dropped = load_first_trials(one_local(cache), LAB_B + [SHORT],
                                                   n_trials=600, min_trials=300)
    assert dropped == [SHORT] and short == []
    assert sorted(trials["subject"].unique()) == LAB_B


@pytest.mark.parametrize("kwargs, match", [
    ({}, "give subjects"),
    ({"subjects": ["KS014", "nobody"]}, "no session of subject.*nobody"),
    ({"labs": ["lab"]}, "no mouse in lab"),  # partial lab names are not matched
    ({"subjects": LAB_B}, "needs at least 3 mice, 2 usable"),
    ({"subjects": FULL, "rules": ["none", "perceptron"]}, "unknown rule"),
])
def test_bad_input_is_a_clear_value_error(cache, kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            run_paper_experiment(one_local(cache), n_trials=300, n_folds=3,
                                 estimator_params=FAST, progress=False, **kwargs)


def test_cli_writes_the_outputs(cache, tmp_path, capsys):
    from ibl_learnrules.cli import main

    out = tmp_path / "exp"
    args = ["experiment", "--cache-dir", str(cache), "--subjects", ",".join(LAB_A),
            "--n-trials", "300", "--folds", "2", "--rules", "none,reinforce,dnn",
            "--epochs", "1", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS
    printed = capsys.readouterr().out
    assert "dnn > none: " in printed and "dnn > reinforce: " in printed
    table = pd.read_csv(out / "results.csv")
    assert table.groupby("rule")["subject"].nunique().to_dict() == dict.fromkeys(
        ["dnn", "none", "reinforce"], 4)


@pytest.mark.parametrize("args, match", [
    (["--cache-dir", "/no/such/cache", "--subjects", "KS014"], "no such ONE cache folder"),
    (["--subjects", "KS014"], "--cache-dir DIR"),
    (["--cache-dir", "{cache}"], "--subjects"),
    (["--cache-dir", "{cache}", "--subjects", "KS014,nobody"], "nobody"),
])
def test_cli_bad_input_exits_2(cache, capsys, args, match):
    from ibl_learnrules.cli import main

    args = [a.format(cache=cache) for a in args]
    assert main(["experiment", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibl-learnrules experiment: error: ") and match in err
    assert len(err.strip().splitlines()) == 1


def test_paired_differences_show_thousandths():
    from ibl_learnrules.plotting import plot_paired_differences

    rng = np.random.default_rng(0)
    subjects = [f"m{i}" for i in range(8)]
    base = rng.normal(-0.45, 0.05, len(subjects))  # spread between mice: hundredths of a nat
    results = pd.DataFrame({
        "rule": np.repeat(["reinforce_baseline", "dnn", "none"], len(subjects)),
        "subject": subjects * 3,
        "loglik": np.concatenate([base, base + 0.003 + rng.normal(0, 0.001, 8), base - 0.02]),
    })
    ax = plot_paired_differences(results, "reinforce_baseline")
    means = [line for line in ax.lines if line.get_gid() == "mean"][0].get_ydata()
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["none", "dnn"]
    np.testing.assert_allclose(means[1], 0.003, atol=0.001)
    assert "8/8 better" in ax.get_xticklabels()[1].get_text()
    low, high = ax.get_ylim()
    assert high - low < 0.05  # the axis spans the differences, not the scores
    with pytest.raises(ValueError, match="reference 'rnn' is not in the results"):
        plot_paired_differences(results, "rnn")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_parallel_run_gives_the_same_table(cache, experiment):
    from joblib import parallel_config

    result, _, _ = experiment
    with warnings.catch_warnings(), parallel_config(backend="threading"):
        warnings.simplefilter("ignore")
        parallel = run_paper_experiment(one_local(cache), subjects=FULL, n_trials=600,
                                        n_folds=3, rules=["none", "reinforce"],
                                        estimator_params=FAST, n_jobs=2, progress=False)
    ours = result.results[result.results["rule"].isin(["none", "reinforce"])]
    key = ["rule", "subject"]
    pd.testing.assert_frame_equal(parallel.results.sort_values(key).reset_index(drop=True),
                                  ours.sort_values(key).reset_index(drop=True))
