"""NWB reading (both IBL vocabularies) and writing results through ndx-learning-rules."""

import hashlib
import subprocess
import sys
from datetime import datetime, timezone

import h5py
import numpy as np
import pandas as pd
import pytest
from hdmf.backends.hdf5.h5tools import HDF5IO
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO, NWBFile, validate
from pynwb.file import Subject

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.evaluation import compare_rules
from ibl_learnrules.io.nwb import (
    read_comparison,
    read_model,
    read_trajectory,
    read_trials,
    trials_to_nwb,
    write_results,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*no-go trial:UserWarning")

CONTRACT = ["subject", "session", "trial", "contrastLeft", "contrastRight", "choice",
            "feedbackType", "probabilityLeft"]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cohort():
    """Two mice, three sessions each, with no-go trials sprinkled in."""
    table = simulate_cohort(2, n_trials=900, n_sessions=3, random_state=0, alpha=0.05)
    table.loc[table.index[5::97], "choice"] = 0
    return table


@pytest.fixture(scope="module")
def files(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("nwb")
    return {vocabulary: trials_to_nwb(cohort, root / vocabulary, vocabulary=vocabulary)
            for vocabulary in ("tidy", "legacy")}


@pytest.fixture(scope="module")
def fitted(cohort):
    return LearningRuleGLM(rule="dnn", max_epochs=2, hidden_size=8, random_state=0).fit(cohort)


def session_file(files, session, vocabulary="tidy"):
    return next(p for p in files[vocabulary] if p.stem == session)


def test_both_vocabularies_read_into_identical_tables(files, cohort):
    tidy, legacy = read_trials(files["tidy"]), read_trials(files["legacy"])
    pd.testing.assert_frame_equal(tidy, legacy)
    original = cohort[CONTRACT].reset_index(drop=True)
    pd.testing.assert_frame_equal(tidy[CONTRACT], original, check_dtype=False)
    assert (tidy["choice"] == 0).sum() == (cohort["choice"] == 0).sum() > 0


def test_sessions_are_ordered_by_start_time_not_by_argument_order(files, cohort):
    table = read_trials(list(reversed(files["tidy"])))
    expected = cohort.drop_duplicates("session")["session"].tolist()
    assert table.drop_duplicates("session")["session"].tolist() == expected


def test_real_mouse_round_trips_through_nwb(ks014, tmp_path):
    three = ks014[ks014["session_idx"] < 3]
    paths = trials_to_nwb(three, tmp_path, vocabulary="legacy")
    table = read_trials(paths)
    pd.testing.assert_frame_equal(table[CONTRACT], three[CONTRACT].reset_index(drop=True),
                                  check_dtype=False)
    assert len(paths) == 3


def hand_made_tidy_file(path, wheel, subject_id="M1"):
    """A tidy-vocabulary file written with pynwb directly, not by our writer."""
    nwbfile = NWBFile(session_description="hand made", identifier="hand-0",
                      session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
                      subject=None if subject_id is None else Subject(
                          subject_id=subject_id, species="Mus musculus", sex="F", age="P90D"))
    for name in ("gabor_stimulus_contrast", "gabor_stimulus_side", "mouse_wheel_choice",
                 "is_mouse_rewarded", "probability_left", "choice_registration_time"):
        nwbfile.add_trial_column(name, name)
    rows = [(100.0, "left", True, 0.5), (25.0, "right", True, 0.5),
            (0.0, "left", False, 0.2), (6.25, "right", False, 0.8)]
    for i, ((contrast, side, rewarded, prior), choice) in enumerate(zip(rows, wheel, strict=True)):
        nwbfile.add_trial(start_time=float(i), stop_time=i + 0.9,
                          gabor_stimulus_contrast=contrast, gabor_stimulus_side=side,
                          mouse_wheel_choice=choice, is_mouse_rewarded=rewarded,
                          probability_left=prior, choice_registration_time=i + 0.5)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def test_tidy_vocabulary_decodes_to_the_alf_convention(tmp_path):
    # clockwise turns move the stimulus right-to-centre: a leftward choice, ALF +1
    path = hand_made_tidy_file(tmp_path / "s.nwb",
                               ["clockwise", "counter_clockwise", "none", "clockwise"])
    table = read_trials(path)
    np.testing.assert_array_equal(table["choice"], [1, -1, 0, 1])
    np.testing.assert_array_equal(table["feedbackType"], [1, 1, -1, -1])
    np.testing.assert_array_equal(table["contrastLeft"], [1.0, np.nan, 0.0, np.nan])
    np.testing.assert_array_equal(table["contrastRight"], [np.nan, 0.25, np.nan, 0.0625])
    np.testing.assert_array_equal(table["probabilityLeft"], [0.5, 0.5, 0.2, 0.8])
    np.testing.assert_array_equal(table["response_times"], [0.5, 1.5, 2.5, 3.5])
    assert table["subject"].unique().tolist() == ["M1"] and table["session"][0] == "hand-0"


def test_ambiguous_wheel_values_are_refused(tmp_path):
    path = hand_made_tidy_file(tmp_path / "s.nwb", ["left", "right", "none", "left"])
    with pytest.raises(ValueError, match="ambiguous"):
        read_trials(path)


def test_subject_comes_from_the_file_or_the_argument(tmp_path):
    path = hand_made_tidy_file(tmp_path / "s.nwb", ["clockwise"] * 4, subject_id=None)
    with pytest.raises(ValueError, match="names no subject"):
        read_trials(path)
    assert read_trials(path, subject="M9")["subject"].unique().tolist() == ["M9"]
    named = hand_made_tidy_file(tmp_path / "t.nwb", ["clockwise"] * 4)
    with pytest.raises(ValueError, match="session of 'M1', not 'M9'"):
        read_trials(named, subject="M9")


def test_missing_trials_or_unknown_columns_say_what_was_found(tmp_path):
    empty = NWBFile(session_description="no trials", identifier="x",
                    session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="no trials table"):
        read_trials(empty)
    odd = NWBFile(session_description="odd", identifier="y",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    odd.add_trial_column("stimulus_side", "?")
    odd.add_trial(start_time=0.0, stop_time=1.0, stimulus_side="left")
    with pytest.raises(ValueError, match=r"Found columns \['start_time', 'stimulus_side', "
                                         r"'stop_time'\]"):
        read_trials(odd)
    with pytest.raises(FileNotFoundError):
        read_trials(tmp_path / "nothing.nwb")


def serious(path):
    return [m for m in inspect_nwbfile(nwbfile_path=str(path))
            if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]


def test_append_writes_valid_results_that_round_trip(files, cohort, fitted, tmp_path):
    source = session_file(files, "sim000-s01")
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    animal = read_trials([p for p in files["tidy"] if p.stem.startswith("sim000")])
    results = compare_rules(cohort, ["none", "reinforce"], estimator_params={"max_epochs": 1})
    write_results(path, fitted, trials=animal, comparison=results)

    assert validate(path=str(path)) == []
    assert serious(path) == []
    expected = fitted.predict_trajectory(animal)
    expected = expected[expected["session"] == "sim000-s01"].reset_index(drop=True)
    got = read_trajectory(path)
    pd.testing.assert_frame_equal(got[["subject", "session", "trial"]],
                                  expected[["subject", "session", "trial"]], check_dtype=False)
    for column in ("w_stimulus", "w_bias", "p_right"):  # stored as float32
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-6, atol=1e-7)
    table = read_comparison(path)
    for column in ("rule", "subject", "seed", "n_trials", "loglik", "bits", "accuracy"):
        np.testing.assert_array_equal(table[column], results[column])
    restored = read_model(path)
    np.testing.assert_array_equal(restored.predict_proba(cohort), fitted.predict_proba(cohort))
    assert restored.get_params() == dict(fitted.get_params(), device="cpu")
    assert restored.subjects_ == fitted.subjects_
    pd.testing.assert_frame_equal(restored.history_, fitted.history_, check_dtype=False)


def test_trajectory_is_the_session_slice_of_the_whole_history(files, fitted, tmp_path):
    source = session_file(files, "sim000-s02")
    whole, alone = tmp_path / "whole.nwb", tmp_path / "alone.nwb"
    whole.write_bytes(source.read_bytes())
    alone.write_bytes(source.read_bytes())
    animal = read_trials([p for p in files["tidy"] if p.stem.startswith("sim000")])
    write_results(whole, fitted, trials=animal)
    write_results(alone, fitted)  # only this file's trials, from the initial weights
    first_whole = read_trajectory(whole)["w_stimulus"].iloc[0]
    first_alone = read_trajectory(alone)["w_stimulus"].iloc[0]
    assert first_alone == 0.0  # init_weights="zero"
    assert abs(first_whole) > 1e-3  # weights carried over two earlier sessions


def test_separate_results_file_links_to_an_untouched_source(files, fitted, tmp_path):
    source = session_file(files, "sim001-s00", "legacy")
    before = digest(source)
    out = write_results(source, fitted, output=tmp_path / "results.nwb")
    assert digest(source) == before
    assert validate(path=str(out)) == []
    assert serious(out) == []
    with h5py.File(out, "r") as f:
        link = f["processing/behavior/learning_trajectory_dnn"].get("trials", getlink=True)
    assert isinstance(link, h5py.ExternalLink) and link.path == "/intervals/trials"
    restored = read_model(out)
    trials = read_trials(source)
    np.testing.assert_array_equal(restored.predict_proba(trials), fitted.predict_proba(trials))


def test_a_fresh_process_reads_results_through_the_cached_spec(files, fitted, tmp_path):
    source = session_file(files, "sim001-s01")
    out = write_results(source, fitted, output=tmp_path / "results.nwb")
    code = (
        "import sys\n"
        "from pynwb import NWBHDF5IO\n"
        f"with NWBHDF5IO({str(out)!r}, 'r', load_namespaces=True) as io:\n"
        "    f = io.read()\n"
        "    t = f.processing['behavior']['learning_trajectory_dnn']\n"
        "    m = f.processing['behavior']['learning_rule_dnn']\n"
        "    print(type(t).__name__, type(m).__name__, t.weights[:].shape[0], len(t.trials),\n"
        "          m.parameters['parameter'].data[0])\n"
        "    assert not any(k.startswith('ibl_learnrules') for k in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    n = len(read_trials(source))
    first_parameter = next(iter(fitted.rule_.state_dict()))
    assert run.stdout.split() == ["LearningTrajectory", "LearningRuleModel", str(n), str(n),
                                  first_parameter]


@pytest.mark.parametrize("separate", [False, True])
@pytest.mark.parametrize("when", ["mid-dataset", "after-write"])
def test_a_failed_write_leaves_the_source_byte_identical(files, fitted, tmp_path, monkeypatch,
                                                        separate, when):
    path = tmp_path / "session.nwb"
    path.write_bytes(session_file(files, "sim000-s00").read_bytes())
    before = digest(path)
    if when == "mid-dataset":
        real = HDF5IO.write_dataset

        def failing(self, parent, builder, *args, **kwargs):
            if builder.name == "p_right":  # after the weights, before the model
                raise OSError("disk full (injected)")
            return real(self, parent, builder, *args, **kwargs)

        monkeypatch.setattr(HDF5IO, "write_dataset", failing)
    else:
        real = NWBHDF5IO.write

        def failing(self, *args, **kwargs):
            real(self, *args, **kwargs)
            raise OSError("crash after writing (injected)")

        monkeypatch.setattr(NWBHDF5IO, "write", failing)
    output = tmp_path / "results.nwb" if separate else None
    with pytest.raises(OSError, match="injected"):
        write_results(path, fitted, output=output)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.nwb"]


def test_names_clash_and_choice_between_models(files, fitted, tmp_path):
    path = tmp_path / "s.nwb"
    path.write_bytes(session_file(files, "sim000-s00").read_bytes())
    write_results(path, fitted)
    before = digest(path)
    with pytest.raises(ValueError, match="already holds behavior/learning_trajectory_dnn"):
        write_results(path, fitted)
    assert digest(path) == before
    write_results(path, fitted, name="again")
    with pytest.raises(KeyError, match="pass name="):
        read_model(path)
    assert read_model(path, name="learning_rule_again").rule == "dnn"


def test_writer_refuses_unfitted_models_and_foreign_trials(files, fitted, cohort, tmp_path):
    path = session_file(files, "sim000-s00")
    with pytest.raises(Exception, match="not fitted"):
        write_results(path, LearningRuleGLM())
    other = cohort[cohort["subject"] == "sim001"]
    with pytest.raises(ValueError, match="no trials of session 'sim000-s00'"):
        write_results(path, fitted, trials=other, output=tmp_path / "r.nwb")
    with pytest.raises(ValueError, match="output must differ"):
        write_results(path, fitted, output=path)


def test_noisy_rule_writes_weight_sds_that_round_trip(files, cohort, tmp_path):
    source = session_file(files, "sim001-s01")
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    animal = read_trials([p for p in files["tidy"] if p.stem.startswith("sim001")])
    noisy = LearningRuleGLM(rule="reinforce", weight_noise=[0.03, 0.01], max_epochs=1,
                            random_state=0).fit(cohort)
    write_results(path, noisy, trials=animal)
    assert validate(path=str(path)) == []
    assert serious(path) == []
    expected = noisy.predict_trajectory(animal)
    expected = expected[expected["session"] == "sim001-s01"].reset_index(drop=True)
    got = read_trajectory(path)
    assert list(got.columns) == list(expected.columns)
    for column in ("w_stimulus", "w_bias", "w_stimulus_sd", "w_bias_sd", "p_right"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-6, atol=1e-7)
    restored = read_model(path)
    assert restored.get_params()["weight_noise"] == [0.03, 0.01]
    np.testing.assert_allclose(restored.score_samples(cohort), noisy.score_samples(cohort),
                               rtol=1e-6)
