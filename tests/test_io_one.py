"""ONE adapter against real ONE local caches built from ALF files in a temporary folder."""

import numpy as np
import pandas as pd
import pytest
from one.alf.cache import make_parquet_db
from one.api import ONE

from ibl_learnrules import simulate_cohort
from ibl_learnrules.io.one import load_cohort, load_subject_trials

ALF = ["contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft"]


def write_session(root, subject, date, number, table):
    folder = root / "testlab" / "Subjects" / subject / str(date) / f"{number:03d}" / "alf"
    folder.mkdir(parents=True)
    if table is not None:
        table[ALF].to_parquet(folder / "_ibl_trials.table.pqt")
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory, ks014):
    root = tmp_path_factory.mktemp("one_cache")
    sessions = list(ks014.groupby("session_idx"))
    # written in reverse order, so the file system's order is not the date order
    for _, table in reversed(sessions):
        write_session(root, "KS014", table["date"].iloc[0].date(), 1, table)
    sim = simulate_cohort(1, n_sessions=3, random_state=0)
    # sessions 0 and 1 share a day with their numbers reversed: the number orders them
    placement = {0: ("2020-01-01", 2), 1: ("2020-01-01", 1), 2: ("2020-01-02", 1)}
    for idx, table in sim.groupby("session_idx"):
        write_session(root, "KS0140", *placement[idx], table)
    # a session with no trials object, and one whose file is unreadable
    write_session(root, "KS014", "2019-07-01", 1, None).joinpath("_ibl_wheel.position.npy") \
        .write_bytes(np.zeros(3).tobytes())
    bad = write_session(root, "KS014", "2019-07-02", 1, None)
    (bad / "_ibl_trials.table.pqt").write_bytes(b"not a parquet file")
    make_parquet_db(root, hash_ids=True, hash_files=True)
    return root, sim


def one_local(root):
    return ONE(cache_dir=root, mode="local")


def test_ks014_round_trips_in_date_order(cache, ks014):
    root, _ = cache
    with pytest.warns(UserWarning, match=r"skipped 2 session\(s\) of KS014"):
        trials = load_subject_trials(one_local(root), "KS014")
    assert len(trials) == len(ks014) == 10310
    assert trials["subject"].unique().tolist() == ["KS014"]
    for col in ALF:
        np.testing.assert_array_equal(trials[col].to_numpy(), ks014[col].to_numpy(), err_msg=col)
    assert trials["date"].is_monotonic_increasing
    sizes = trials.groupby("session", sort=False).size().tolist()
    assert sizes == ks014.groupby("session_idx").size().tolist()
    # ALF sign kept: -1 is a rightward choice
    right = trials["choice"] == -1
    assert ((trials["feedbackType"] == 1) == (right == trials["contrastRight"].notna())).all()


def test_partial_subject_names_are_not_mixed(cache):
    root, sim = cache
    with pytest.warns(UserWarning):
        ks014 = load_subject_trials(one_local(root), "KS014")
    assert "KS0140" not in set(ks014["subject"])
    other = load_subject_trials(one_local(root), "KS0140")
    assert len(other) == len(sim)


def test_sessions_of_one_day_follow_their_number(cache):
    root, sim = cache
    trials = load_subject_trials(one_local(root), "KS0140")
    # sim session 1 was written as number 1 and session 0 as number 2 on the same day
    first = sim[sim["session_idx"] == 1][ALF].reset_index(drop=True)
    got = trials[trials["session"] == trials["session"].iloc[0]][ALF].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, first, check_dtype=False)
    assert trials["session_number"].tolist()[:1] == [1]


def test_limits_and_cohort(cache):
    root, _ = cache
    one = one_local(root)
    with pytest.warns(UserWarning):
        two = load_subject_trials(one, "KS014", max_sessions=2)
    assert two["session"].nunique() == 2 and len(two) == 513 + 337
    with pytest.warns(UserWarning):
        cut = load_subject_trials(one, "KS014", max_trials=600)
    assert len(cut) == 600
    with pytest.warns(UserWarning):
        cohort = load_cohort(one, ["KS014", "KS0140"], max_sessions=1)
    assert cohort.groupby("subject")["session"].nunique().to_dict() == {"KS014": 1, "KS0140": 1}


def test_protocol_filter_keeps_unknown_protocols_with_a_warning(cache):
    root, _ = cache
    with pytest.warns(UserWarning, match="have no task_protocol in this ONE cache"):
        trials = load_subject_trials(one_local(root), "KS0140", protocols=["training"])
    assert trials["session"].nunique() == 3


def test_unknown_subject(cache):
    root, _ = cache
    with pytest.raises(ValueError, match="ONE found no session of subject 'nobody'"):
        load_subject_trials(one_local(root), "nobody")


def test_cli_fits_from_a_one_cache(cache, tmp_path, capsys):
    from ibl_learnrules.cli import main

    root, sim = cache
    out = tmp_path / "model.pt"
    args = ["fit", "--one-cache", str(root), "--subject", "KS0140", "--rule", "none",
            "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert out.is_file() and capsys.readouterr().out == ""


def test_until_cuts_at_the_training_stage(cache):
    root, _ = cache
    with pytest.warns(UserWarning, match="skipped 2"):
        trials = load_subject_trials(one_local(root), "KS014", until="trained_1a")
    assert trials["session"].nunique() == 14


def test_simulated_cohort_round_trips_through_a_written_cache(tmp_path):
    from ibl_learnrules.cli import main

    root = tmp_path / "sim_cache"
    assert main(["simulate", "--n-subjects", "2", "--n-sessions", "3", "--quiet",
                 "--one-cache", str(root)]) == 0
    sim = simulate_cohort(2, n_sessions=3, random_state=0)
    loaded = load_cohort(one_local(root), ["sim000", "sim001"])
    for col in ALF:
        np.testing.assert_array_equal(loaded[col].to_numpy(), sim[col].to_numpy(), err_msg=col)
    assert main(["simulate", "--quiet", "--one-cache", str(root)]) == 2  # not empty: refused
