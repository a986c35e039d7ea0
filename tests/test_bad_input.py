"""Bad input, wherever it enters, is answered by an error that names the problem.

One table: each case builds a malformed input in a temporary folder and calls the package
through its Python API or its command line. An API case must raise the given exception type
(or, for ``UserWarning``, warn and go on) with a message matching the pattern; a CLI case
must exit with code 2 and print exactly one line, matching the pattern, on stderr.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from one.alf.cache import make_parquet_db
from one.api import ONE
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject

from ibl_learnrules import LearningRuleGLM, load_model, save_model, simulate_cohort
from ibl_learnrules.cli import main
from ibl_learnrules.io.nwb import read_model, read_trials, trials_to_nwb, write_results
from ibl_learnrules.io.one import load_cohort, load_subject_trials

ALF = ["contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny cohort, its CSV, one NWB session file, a fitted model and its file."""
    root = tmp_path_factory.mktemp("assets")
    cohort = simulate_cohort(2, n_trials=120, n_sessions=2, random_state=0, alpha=0.05)
    cohort.to_csv(root / "cohort.csv", index=False)
    nwb = trials_to_nwb(cohort[cohort["subject"] == "sim000"], root / "nwb")[0]
    model = LearningRuleGLM(rule="reinforce", max_epochs=1, random_state=0).fit(cohort)
    save_model(model, root / "model.pt")
    return {"root": root, "cohort": cohort, "csv": root / "cohort.csv", "nwb": nwb,
            "model": model, "model_file": root / "model.pt"}


# ----------------------------------------------------------------- builders of bad files
def truncated(source, target, fraction=0.5):
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def nwb_without_column(path, drop):
    """A tidy-vocabulary session file written with pynwb directly, lacking column ``drop``."""
    nwbfile = NWBFile(session_description="hand made", identifier="hand-0",
                      session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
                      subject=Subject(subject_id="M1", species="Mus musculus", sex="F",
                                      age="P90D"))
    values = {"gabor_stimulus_contrast": 100.0, "gabor_stimulus_side": "left",
              "mouse_wheel_choice": "clockwise", "is_mouse_rewarded": True,
              "probability_left": 0.5}
    values.pop(drop)
    for name in values:
        nwbfile.add_trial_column(name, name)
    nwbfile.add_trial(start_time=0.0, stop_time=1.0, **values)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def nwb_without_trials(path):
    nwbfile = NWBFile(session_description="no trials", identifier="x",
                      session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def plain_hdf5(path):
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
    return path


def edited_model(assets, path, edit):
    """The assets' model file with ``edit(config, state_dict)`` applied."""
    blob = torch.load(assets["model_file"], weights_only=True)
    config = json.loads(blob["config"])
    state = dict(blob["state_dict"])
    edit(config, state)
    torch.save({"config": json.dumps(config), "state_dict": state}, path)
    return path


def one_cache(root, sessions, others=None):
    """A local ONE cache of subject M1; ``sessions`` maps a date to a trials table, None (no
    trials object) or bytes (a corrupt trials file); ``others``, subject -> such a mapping."""
    for subject, dates in {"M1": sessions, **(others or {})}.items():
        write_sessions(root, subject, dates)
    make_parquet_db(root, hash_ids=True, hash_files=True)
    return root


def write_sessions(root, subject, sessions):
    for number, (date, content) in enumerate(sessions.items(), start=1):
        folder = root / "lab" / "Subjects" / subject / date / f"{number:03d}" / "alf"
        folder.mkdir(parents=True)
        if isinstance(content, bytes):
            (folder / "_ibl_trials.table.pqt").write_bytes(content)
        elif content is None:
            (folder / "_ibl_wheel.position.npy").write_bytes(np.zeros(3).tobytes())
        else:
            content[ALF].to_parquet(folder / "_ibl_trials.table.pqt")


def one_cache_with_deleted_session(root, table):
    """A cache whose index lists a session whose trials file was deleted afterwards."""
    one_cache(root, {"2024-01-01": table, "2024-01-02": table})
    next((root / "lab/Subjects/M1/2024-01-02").rglob("*.pqt")).unlink()
    return root


def single_trial_mouse(cohort):
    return cohort.groupby("subject").head(1).reset_index(drop=True)


def all_nogo(cohort):
    return cohort.assign(choice=0)


def one_mouse_all_nogo(cohort):
    return cohort.assign(choice=cohort["choice"].where(cohort["subject"] != "sim001", 0))


def refit(assets, **params):
    return LearningRuleGLM(**{"rule": "reinforce", "max_epochs": 1, "random_state": 0,
                              **params}).fit


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    #: (tmp_path, assets) -> a zero-argument callable (API) or a list of CLI arguments
    make: object
    error: type | None  # None: a CLI case (exit code 2)
    match: str


def cli(*args):
    return lambda tmp, a: [str(x(tmp, a)) if callable(x) else x for x in args]


CASES = [
    # --- NWB files
    Case("nwb-empty-file",
         lambda tmp, a: lambda: read_trials((tmp / "s.nwb").touch() or tmp / "s.nwb"),
         ValueError, r"s\.nwb is empty"),
    Case("nwb-truncated",
         lambda tmp, a: lambda: read_trials(truncated(a["nwb"], tmp / "s.nwb")),
         ValueError, r"s\.nwb is not a readable NWB \(HDF5\) file.*truncated"),
    Case("nwb-not-hdf5",
         lambda tmp, a: lambda: read_trials(a["csv"]),
         ValueError, r"cohort\.csv is not a readable NWB \(HDF5\) file"),
    Case("nwb-hdf5-but-not-nwb",
         lambda tmp, a: lambda: read_trials(plain_hdf5(tmp / "s.nwb")),
         ValueError, r"s\.nwb is not a readable NWB \(HDF5\) file"),
    Case("nwb-without-trials-table",
         lambda tmp, a: lambda: read_trials(nwb_without_trials(tmp / "s.nwb")),
         ValueError, r"s\.nwb has no trials table"),
    Case("nwb-trials-missing-a-column",
         lambda tmp, a: lambda: read_trials(nwb_without_column(tmp / "s.nwb",
                                                               "is_mouse_rewarded")),
         ValueError, r"s\.nwb.*'tidy'.*missing.*\['is_mouse_rewarded'\]"),
    Case("nwb-results-into-a-truncated-file",
         lambda tmp, a: lambda: write_results(truncated(a["nwb"], tmp / "s.nwb"), a["model"]),
         ValueError, r"s\.nwb is not a readable NWB \(HDF5\) file"),
    Case("nwb-read-model-from-a-file-without-results",
         lambda tmp, a: lambda: read_model(a["nwb"]),
         KeyError, r"sim000-s00\.nwb has no 'behavior' processing module with results"),
    Case("nwb-missing-file",
         lambda tmp, a: lambda: read_trials(tmp / "absent.nwb"),
         FileNotFoundError, r"no such NWB file: .*absent\.nwb"),
    Case("cli-nwb-truncated",
         cli("fit", "--nwb", lambda tmp, a: truncated(a["nwb"], tmp / "s.nwb"),
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"s\.nwb is not a readable NWB \(HDF5\) file"),
    Case("cli-nwb-missing-a-column",
         cli("fit", "--nwb", lambda tmp, a: nwb_without_column(tmp / "s.nwb", "probability_left"),
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"missing.*\['probability_left'\]"),
    # --- CSV / parquet tables
    Case("cli-csv-wrong-schema",
         cli("fit", "--trials",
             lambda tmp, a: pd.DataFrame({"subject": ["a"], "choice": [1]}).to_csv(
                 tmp / "t.csv", index=False) or tmp / "t.csv",
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"missing required column\(s\) \['session', 'trial'"),
    Case("cli-csv-wrong-encoding",
         cli("fit", "--trials",
             lambda tmp, a: (tmp / "t.csv").write_bytes(
                 a["csv"].read_text().replace("sim000", "sïm000").encode("utf-16"))
             and tmp / "t.csv",
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"cannot read .*t\.csv: .*not UTF-8"),
    Case("cli-csv-empty-file",
         cli("fit", "--trials", lambda tmp, a: (tmp / "t.csv").touch() or tmp / "t.csv",
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"cannot read .*t\.csv: .*empty"),
    Case("cli-csv-text-in-a-numeric-column",
         cli("fit", "--trials",
             lambda tmp, a: a["cohort"].assign(choice="left").to_csv(
                 tmp / "t.csv", index=False) or tmp / "t.csv",
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"column 'choice' must be numeric"),
    Case("cli-parquet-not-parquet",
         cli("fit", "--trials", lambda tmp, a: (tmp / "t.parquet").write_text("x") and
             tmp / "t.parquet", "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"cannot read .*t\.parquet"),
    Case("cli-parquet-wrong-schema",
         cli("fit", "--trials",
             lambda tmp, a: a["cohort"].rename(columns={"feedbackType": "feedback"}).to_parquet(
                 tmp / "t.parquet") or tmp / "t.parquet",
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"missing required column\(s\) \['feedbackType'\]"),
    Case("cli-table-unknown-suffix",
         cli("fit", "--trials", lambda tmp, a: (tmp / "t.xlsx").write_text("x") and
             tmp / "t.xlsx", "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"--trials must be a \.csv or \.parquet file, got 't\.xlsx'"),
    Case("trials-not-a-dataframe",
         lambda tmp, a: lambda: LearningRuleGLM().fit(a["cohort"].to_numpy()),
         TypeError, r"trials must be a pandas DataFrame"),
    Case("trials-empty",
         lambda tmp, a: lambda: a["model"].score(a["cohort"].iloc[:0]),
         ValueError, r"trials table is empty"),
    # --- ONE caches
    Case("one-corrupt-session-is-skipped",
         lambda tmp, a: lambda: load_subject_trials(
             ONE(cache_dir=one_cache(tmp, {"2024-01-01": a["cohort"].iloc[:50],
                                           "2024-01-02": b"not parquet"}), mode="local"), "M1"),
         UserWarning, r"skipped 1 session\(s\) of M1 .*: [0-9a-f-]{36} of 2024-01-02 #2 \("),
    Case("one-missing-session-is-skipped",
         lambda tmp, a: lambda: load_subject_trials(
             ONE(cache_dir=one_cache_with_deleted_session(tmp, a["cohort"].iloc[:50]),
                 mode="local"), "M1"),
         UserWarning, r"skipped 1 session\(s\) of M1 .*: [0-9a-f-]{36} of 2024-01-02 #2 \("),
    Case("one-nothing-left",
         lambda tmp, a: lambda: load_subject_trials(
             ONE(cache_dir=one_cache(tmp, {"2024-01-01": b"junk", "2024-01-02": None}),
                 mode="local"), "M1"),
         ValueError, r"no session of 'M1' has a readable trials object"),
    Case("one-cohort-mouse-with-nothing-left-is-skipped",
         lambda tmp, a: lambda: load_cohort(
             ONE(cache_dir=one_cache(tmp, {"2024-01-01": a["cohort"].iloc[:50]},
                                     others={"M2": {"2024-01-01": b"junk"}}), mode="local"),
             ["M1", "M2"]),
         UserWarning, r"left out 1 subject\(s\) without a readable session: M2"),
    Case("one-cohort-nothing-left",
         lambda tmp, a: lambda: load_cohort(
             ONE(cache_dir=one_cache(tmp, {"2024-01-01": b"junk"},
                                     others={"M2": {"2024-01-01": None}}), mode="local"),
             ["M1", "M2"]),
         ValueError, r"no session of 'M1', 'M2' has a readable trials object"),
    Case("cli-one-nothing-left",
         cli("fit", "--one-cache",
             lambda tmp, a: one_cache(tmp / "c", {"2024-01-01": b"junk"}),
             "--subject", "M1", "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"no session of 'M1' has a readable trials object"),
    Case("one-unknown-subject",
         lambda tmp, a: lambda: load_subject_trials(
             ONE(cache_dir=one_cache(tmp, {"2024-01-01": a["cohort"].iloc[:50]}),
                 mode="local"), "M2"),
         ValueError, r"ONE found no session of subject 'M2'"),
    # --- model files
    Case("model-truncated",
         lambda tmp, a: lambda: load_model(truncated(a["model_file"], tmp / "m.pt")),
         ValueError, r"m\.pt is not a model saved by save_model \(truncated, or another format\)"),
    Case("model-empty-file",
         lambda tmp, a: lambda: load_model((tmp / "m.pt").touch() or tmp / "m.pt"),
         ValueError, r"m\.pt is empty"),
    Case("model-text-file",
         lambda tmp, a: lambda: load_model(a["csv"]),
         ValueError, r"cohort\.csv is not a model saved by save_model"),
    Case("model-other-torch-file",
         lambda tmp, a: lambda: load_model(
             torch.save({"weights": torch.zeros(2)}, tmp / "m.pt") or tmp / "m.pt"),
         ValueError, r"m\.pt is not a model saved by save_model"),
    Case("model-pickled-object",
         lambda tmp, a: lambda: load_model(
             (tmp / "m.pt").write_bytes(pickle.dumps(a["cohort"].iloc[:3])) and tmp / "m.pt"),
         ValueError, r"m\.pt is not a model saved by save_model"),
    Case("model-other-format-version",
         lambda tmp, a: lambda: load_model(edited_model(
             a, tmp / "m.pt", lambda c, s: c.update(format="ibl_learnrules.LearningRuleGLM/0"))),
         ValueError, r"has format 'ibl_learnrules\.LearningRuleGLM/0', expected"),
    Case("model-other-package-version",
         lambda tmp, a: lambda: load_model(edited_model(
             a, tmp / "m.pt", lambda c, s: c.update(package_version="0.0.1"))),
         ValueError, r"saved by ibl_learnrules 0\.0\.1"),
    Case("model-config-missing-a-field",
         lambda tmp, a: lambda: load_model(edited_model(
             a, tmp / "m.pt", lambda c, s: c["fitted"].pop("covariates"))),
         ValueError, r"m\.pt is not a model saved by save_model: its configuration.*'covariates'"),
    Case("model-parameters-of-another-rule",
         lambda tmp, a: lambda: load_model(edited_model(
             a, tmp / "m.pt", lambda c, s: s.update(extra=torch.zeros(3)))),
         ValueError, r"m\.pt: its parameters do not fit rule 'reinforce'.*extra"),
    Case("model-missing-file",
         lambda tmp, a: lambda: load_model(tmp / "absent.pt"),
         FileNotFoundError, r"no such model file: .*absent\.pt"),
    Case("cli-check-truncated-model",
         cli("check", "--model", lambda tmp, a: truncated(a["model_file"], tmp / "m.pt"),
             "--trials", lambda tmp, a: a["csv"], "--out", lambda tmp, a: tmp / "o"),
         None, r"m\.pt is not a model saved by save_model"),
    # --- data a model cannot learn from or score
    Case("fit-mouse-with-one-trial",
         lambda tmp, a: lambda: refit(a)(single_trial_mouse(a["cohort"])),
         ValueError, r"sim000.* 1 trial.*at least 2"),
    Case("fit-every-trial-no-go",
         lambda tmp, a: lambda: refit(a)(all_nogo(a["cohort"])),
         ValueError, r"sim000.*no trial with a choice.*no-go"),
    Case("fit-one-mouse-all-no-go",
         lambda tmp, a: lambda: refit(a)(one_mouse_all_nogo(a["cohort"])),
         ValueError, r"sim001.*no trial with a choice"),
    Case("score-every-trial-no-go",
         lambda tmp, a: lambda: a["model"].score(all_nogo(a["cohort"])),
         ValueError, r"no trial with a choice.*no-go"),
    Case("cli-fit-every-trial-no-go",
         cli("fit", "--trials",
             lambda tmp, a: all_nogo(a["cohort"]).to_csv(tmp / "t.csv", index=False)
             or tmp / "t.csv", "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"no trial with a choice"),
    Case("covariates-the-model-did-not-see",
         lambda tmp, a: lambda: load_model(a["model_file"]).set_params(
             covariates=("stimulus", "bias", "prev_choice")).predict_proba(a["cohort"]),
         ValueError, r"fitted with rule='reinforce' and covariates=\['stimulus', 'bias'\]"),
    Case("unknown-covariate",
         lambda tmp, a: lambda: refit(a, covariates=("stimulus", "speed"))(a["cohort"]),
         ValueError, r"unknown covariate\(s\) \['speed'\]"),
    Case("score-y-of-another-length",
         lambda tmp, a: lambda: a["model"].score(a["cohort"], y=np.zeros(3)),
         ValueError, r"y has 3 values for 240 trials"),
    Case("cli-unknown-subject",
         cli("fit", "--trials", lambda tmp, a: a["csv"], "--subject", "sim000", "nobody",
             "--out", lambda tmp, a: tmp / "m.pt"),
         None, r"subject\(s\) nobody not in the input \(found: sim000, sim001\)"),
    Case("cli-check-unknown-subject",
         cli("check", "--model", lambda tmp, a: a["model_file"], "--trials",
             lambda tmp, a: a["csv"], "--subject", "nobody", "--out", lambda tmp, a: tmp / "o"),
         None, r"subject\(s\) nobody not in the input"),
    Case("cli-compare-one-animal",
         cli("compare", "--trials", lambda tmp, a: a["csv"], "--subject", "sim000"),
         None, r"compare needs at least 2 animals, the input has 1"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.filterwarnings("ignore:.*no-go trial:UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named(case, assets, tmp_path, capsys):
    call = case.make(tmp_path, assets)
    if case.error is None:
        assert main(call) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("ibl-learnrules ") and re.search(case.match, err), err
    elif issubclass(case.error, Warning):
        with pytest.warns(case.error, match=case.match):
            call()
    else:
        with pytest.raises(case.error, match=case.match):
            call()
