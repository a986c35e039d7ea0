import numpy as np
import pandas as pd
import pytest

from ibl_learnrules import simulate_cohort, validate_trials
from ibl_learnrules.cli import main


def test_simulate_writes_a_trials_table(tmp_path, capsys):
    out = tmp_path / "cohort.parquet"
    assert main(["simulate", "--n-subjects", "2", "--n-sessions", "3", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table["subject"].nunique() == 2
    assert len(validate_trials(table)) == len(table)
    printed = capsys.readouterr().out
    assert "KS014" in printed and f"wrote {len(table)} simulated trials" in printed


def test_bad_output_suffix_is_a_one_line_error(tmp_path, capsys):
    assert main(["simulate", "--n-sessions", "1", "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "must end in .csv or .parquet" in err


def test_bad_usage_exits_with_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--n-subjects", "zero"])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trials_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cohort.csv"
    simulate_cohort(3, n_trials=300, random_state=0, alpha=0.05).to_csv(path, index=False)
    return path


def test_fit_saves_a_loadable_model(trials_file, tmp_path, capsys):
    from ibl_learnrules import load_model

    out = tmp_path / "model.pt"
    args = ["fit", "--trials", str(trials_file), "--rule", "reinforce", "--epochs", "2",
            "--lr-schedule", "cosine", "--out", str(out)]
    assert main(args) == 0
    assert "fitted rule 'reinforce' on 3 animal(s), 900 trials" in capsys.readouterr().out
    trials = pd.read_csv(trials_file)
    model = load_model(out)
    assert model.score(trials) < 0
    assert model.lr_schedule == "cosine"


def test_fit_with_weight_noise(trials_file, tmp_path, capsys):
    from ibl_learnrules import load_model

    out = tmp_path / "noisy.pt"
    args = ["fit", "--trials", str(trials_file), "--rule", "reinforce", "--epochs", "1",
            "--weight-noise", "learn", "--out", str(out)]
    assert main(args) == 0
    assert load_model(out).noisy_
    with pytest.raises(SystemExit):
        main(args[:-4] + ["--weight-noise", "-1", "--out", str(out)])
    assert "expected 'learn' or a standard deviation" in capsys.readouterr().err


@pytest.mark.parametrize("option,rule,value,bad,message", [
    ("--free-running", "reinforce_baseline", "0.5", "often",
     "expected 'auto' or a weight >= 0, got 'often'"),
    ("--correction-prior", "dnn", "3", "-1", "expected 'auto' or a precision >= 0, got '-1'")])
def test_fit_auto_options_take_auto_or_a_number(trials_file, tmp_path, capsys, option, rule,
                                                value, bad, message):
    from ibl_learnrules import load_model

    out = tmp_path / "model.pt"
    param = option[2:].replace("-", "_")
    base = ["fit", "--trials", str(trials_file), "--rule", rule, "--epochs", "1", "--out",
            str(out)]
    assert main(base + [option, value]) == 0
    assert getattr(load_model(out), param) == float(value)
    assert main(base) == 0
    assert getattr(load_model(out), param) == "auto"
    with pytest.raises(SystemExit):
        main(base + [option, bad])
    assert message in capsys.readouterr().err


def test_fit_free_weights_option(trials_file, tmp_path, capsys):
    from ibl_learnrules import load_model

    out = tmp_path / "model.pt"
    base = ["fit", "--trials", str(trials_file), "--rule", "reinforce_baseline", "--epochs", "1",
            "--out", str(out)]
    assert main(base + ["--free-running", "1", "--free-weights", "stimulus"]) == 0
    assert load_model(out).free_weights == ("stimulus",)
    assert main(base + ["--free-weights", "stimulus"]) == 2
    assert "needs free_running > 0" in capsys.readouterr().err
    assert main(base + ["--free-running", "1", "--free-running-trains", "base"]) == 0
    assert load_model(out).free_running_trains == "base"
    assert main(base + ["--free-running-trains", "base"]) == 2
    assert "needs free_running > 0" in capsys.readouterr().err


def test_fit_and_compare_take_covariates(trials_file, tmp_path, capsys):
    from ibl_learnrules import load_model

    out = tmp_path / "model.pt"
    base = ["fit", "--trials", str(trials_file), "--rule", "reinforce", "--epochs", "1",
            "--out", str(out)]
    assert main(base) == 0
    assert load_model(out).covariates_ == ("stimulus", "bias")  # the package default
    assert main(base + ["--covariates", "stimulus", "bias", "prev_reward_side"]) == 0
    model = load_model(out)
    assert model.covariates_ == ("stimulus", "bias", "prev_reward_side")
    assert model.predict_trajectory(pd.read_csv(trials_file))["w_prev_reward_side"].abs().max() > 0
    table = tmp_path / "table.csv"
    assert main(["compare", "--trials", str(trials_file), "--rules", "none", "--folds", "3",
                 "--epochs", "1", "--covariates", "stimulus", "prev_choice", "--out",
                 str(table)]) == 0
    assert len(pd.read_csv(table)) == 3
    capsys.readouterr()
    assert main(base + ["--covariates", "stimulus", "stimulus"]) == 2
    assert "covariates repeat a name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(base + ["--covariates", "stimulus", "previous_side"])
    assert exc.value.code == 2
    assert "invalid choice: 'previous_side'" in capsys.readouterr().err


def test_fit_drift_guard_option(trials_file, tmp_path, capsys):
    from ibl_learnrules import load_model

    out = tmp_path / "model.pt"
    base = ["fit", "--trials", str(trials_file), "--rule", "dnn", "--epochs", "2", "--out",
            str(out)]
    assert main(base + ["--drift-guard", "1.5"]) == 0
    assert load_model(out).drift_guard == 1.5
    assert main(base) == 0
    assert load_model(out).drift_guard == 0.0
    for bad in ("-1", "nan", "firm"):
        with pytest.raises(SystemExit):
            main(base + ["--drift-guard", bad])
        assert f"expected a number >= 0, got {bad!r}" in capsys.readouterr().err


def test_fit_chooses_among_candidate_priors(trials_file, tmp_path, capsys):
    from ibl_learnrules import load_model

    out = tmp_path / "model.pt"
    base = ["fit", "--trials", str(trials_file), "--rule", "dnn", "--epochs", "1", "--out",
            str(out), "--correction-prior"]
    # three animals of one session each: nothing to hold out, so the firmest prior
    with pytest.warns(UserWarning, match="fitted with the strongest candidate, 30"):
        assert main(base + ["0", "30"]) == 0
    assert load_model(out).correction_prior_ == 30.0
    sessions = tmp_path / "sessions.csv"
    simulate_cohort(1, n_trials=1200, random_state=0).to_csv(sessions, index=False)
    base[2] = str(sessions)
    assert main(base + ["0", "30"]) == 0
    est = load_model(out)
    assert est.correction_prior == (0.0, 30.0)
    assert est.prior_scores_.index.tolist() == [0.0, 30.0]
    assert f"correction prior {est.correction_prior_:g} chosen" in capsys.readouterr().out
    assert main(base + ["auto", "30"]) == 2
    assert "'auto' stands alone" in capsys.readouterr().err


def test_fit_reads_nwb_and_writes_linked_results(tmp_path, capsys):
    from ibl_learnrules import load_model
    from ibl_learnrules.io.nwb import read_trajectory, read_trials, trials_to_nwb

    sources = trials_to_nwb(simulate_cohort(1, n_trials=600, n_sessions=2, random_state=0),
                            tmp_path / "sessions")
    before = [p.read_bytes() for p in sources]
    args = ["fit", "--nwb", *map(str, sources), "--rule", "reinforce", "--epochs", "1",
            "--out", str(tmp_path / "m.pt"), "--nwb-results", str(tmp_path / "results")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fitted rule 'reinforce' on 1 animal(s), 600 trials" in printed
    assert [p.read_bytes() for p in sources] == before
    est = load_model(tmp_path / "m.pt")
    whole = est.predict_trajectory(read_trials(sources))
    for source in sources:
        written = read_trajectory(tmp_path / "results" / f"{source.stem}_learning_rules.nwb")
        expected = whole[whole["session"] == source.stem]
        assert f"linked to {source}" in printed
        np.testing.assert_allclose(written["w_stimulus"], expected["w_stimulus"], rtol=1e-6)


def test_compare_writes_the_table(trials_file, tmp_path, capsys):
    out = tmp_path / "table.csv"
    args = ["compare", "--trials", str(trials_file), "--rules", "none,reinforce", "--folds", "3",
            "--epochs", "2", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out)
    assert sorted(table["rule"].unique()) == ["none", "reinforce"] and len(table) == 6
    assert "Wilcoxon p" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["fit", "--out", "m.pt"], "give one of --trials FILE, --nwb FILE"),
    (["fit", "--trials", "a.csv", "--nwb", "b.nwb", "--out", "m.pt"], "give one of"),
    (["fit", "--nwb", "missing.nwb", "--out", "m.pt"], "no such NWB file: missing.nwb"),
    (["fit", "--trials", "missing.csv", "--out", "m.pt"], "no such file: missing.csv"),
    (["fit", "--one-cache", "/nonexistent", "--subject", "A", "--out", "m.pt"],
     "no such ONE cache folder"),
    (["fit", "--one-cache", "/tmp", "--out", "m.pt"], "--one-cache needs --subject"),
])
def test_bad_inputs_are_one_line_errors(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0


def test_unreadable_and_invalid_tables(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert main(["fit", "--trials", str(bad), "--out", str(tmp_path / "m.pt")]) == 2
    assert "cannot read" in capsys.readouterr().err
    invalid = tmp_path / "invalid.csv"
    pd.DataFrame({"subject": ["a"], "choice": [1]}).to_csv(invalid, index=False)
    assert main(["fit", "--trials", str(invalid), "--out", str(tmp_path / "m.pt")]) == 2
    assert "missing required column" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
    for command in ("simulate", "fit", "compare"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "usage: ibl-learnrules " + command in capsys.readouterr().out


def test_demo_quick_writes_every_output(tmp_path, capsys):
    import json

    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "held-out animals" in printed and "KS014, sessions 2-14 held out" in printed
    assert "Real IBL mice, held out by mouse" in printed
    # the verdict of each flexible rule against the classic reference, whatever it is
    assert sum(line.startswith("verdict: ") for line in printed.splitlines()) == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    real = summary["real_mice"]
    assert real["n_mice"] == 6 and set(real["verdicts"]) == {"dnn", "rnn"}
    assert {r["rule"] for r in real["rules"]} == {"reinforce_baseline", "reinforce_baseline_leak",
                                                  "dnn", "rnn"}
    # ... and against the classic rule with forgetting
    assert sum("reinforce_baseline_leak (with forgetting)" in line
               for line in printed.splitlines()) == 2
    assert all(0 <= v["against_leak"]["wilcoxon_p"] <= 1 for v in real["verdicts"].values())
    assert "CC BY 4.0" in real["attribution"]
    assert "real_mice_comparison.png" in summary["figures"]
    # the reward-run claim: both network rules, both weights, each run length QUICK asks for
    runs = pd.DataFrame(real["reward_runs"])
    assert set(runs["rule"]) == {"dnn", "rnn"} and set(runs["k"]) == {1, 2}
    assert set(runs["covariate"]) == {"stimulus", "bias"} and (runs["median_ratio"] > 0).all()
    assert "real_mice_reward_runs.png" in summary["figures"]
    # KS014's twins: QUICK fits none and dnn, and twins are run of the network rule
    assert "ks014_twins_dnn.png" in summary["figures"]
    twins = pd.DataFrame(summary["ks014"]["twins"]["dnn"]).set_index("metric")
    assert twins.loc["sessions_to_trained", "n_twins"] == 2
    assert "KS014's twins" in printed and "sessions to trained_1a" in printed
    # they run past KS014's 15 sessions, so that a twin training in the 16th counts
    assert "for 16 sessions" in printed and summary["ks014"]["twin_sessions"] == {"dnn": 16}
    assert {r["rule"] for r in summary["cohort"]["rules"]} == {
        "none", "reinforce", "reinforce_baseline", "reward_max", "prediction_error",
        "q_learning", "dnn", "rnn"}
    for name in summary["figures"]:
        assert (tmp_path / name).stat().st_size > 10_000  # a real PNG, not an empty canvas
    from ibl_learnrules import load_ks014, load_model

    for name in summary["models"]:
        assert load_model(tmp_path / name).score(load_ks014()) < 0
    from pynwb import validate

    from ibl_learnrules.io.nwb import read_comparison, read_trajectory

    assert len(summary["nwb"]) == 2  # QUICK writes KS014's first two sessions
    for name in summary["nwb"]:
        assert validate(path=str(tmp_path / name)) == []
        assert len(read_trajectory(tmp_path / name)) > 300
    assert set(read_comparison(tmp_path / summary["nwb"][-1])["rule"]) == {"none", "dnn"}
