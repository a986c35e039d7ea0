"""Interrupted fits: checkpoints, Ctrl-C, SIGKILL, resuming to the very same parameters.

A resumed fit must both skip the epochs it had done (else resuming would only be refitting)
and end bit-identical to an uninterrupted fit with the same seed (else some part of the
training state, e.g. Adam's moments or the schedule, was not carried over).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import ibl_learnrules.engine as engine
from ibl_learnrules import LearningRuleGLM, load_model, simulate_cohort
from ibl_learnrules.checkpoint import read_checkpoint
from ibl_learnrules.cli import main


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(3, n_trials=300, random_state=0, alpha=0.05)


# early stopping (best parameters, patience), a cosine schedule and Adam's moments all have to
# be carried over for the resumed fit to match; at this rate the validation loss is lowest in
# epoch 2 (the dnn's in epoch 0), so a resumed fit that forgot its best epoch would differ
PARAMS = dict(rule="reinforce_baseline", max_epochs=6, lr=0.2, tbptt=100, lr_schedule="cosine",
              early_stopping=True, patience=10, random_state=0)


def assert_same_parameters(a, b):
    sa, sb = a.rule_.state_dict(), b.rule_.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture
def epochs_run(monkeypatch):
    """Count the epochs a fit runs (through the progress callback the estimator builds)."""
    done = []
    monkeypatch.setattr(engine, "progress_bar",
                        lambda total, desc, verbose: lambda epoch, *_: done.append(epoch))
    return done


def interrupt_at(monkeypatch, stop_epoch):
    def progress_bar(total, desc, verbose):
        def progress(epoch, train_loss, val_loss):
            if epoch == stop_epoch:
                raise KeyboardInterrupt
        return progress
    monkeypatch.setattr(engine, "progress_bar", progress_bar)


@pytest.mark.parametrize("params", [PARAMS, dict(PARAMS, rule="dnn", hidden_size=4,
                                                  engine="torch", max_epochs=4)],
                         ids=["kernel", "torch-network"])
def test_ctrl_c_saves_and_resuming_gives_the_same_parameters(cohort, tmp_path, monkeypatch,
                                                             params):
    whole = LearningRuleGLM(**params).fit(cohort)
    path = tmp_path / "fit.ckpt"
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):  # checkpoint_every=100: only Ctrl-C writes one
        LearningRuleGLM(**params).fit(cohort, checkpoint=path, checkpoint_every=100)
    assert read_checkpoint(path)["state"]["epoch"] == 3
    done = []
    monkeypatch.setattr(engine, "progress_bar",
                        lambda total, desc, verbose: lambda epoch, *_: done.append(epoch))
    resumed = LearningRuleGLM(**params).fit(cohort, checkpoint=path)
    assert done == list(range(3, params["max_epochs"]))
    assert_same_parameters(resumed, whole)
    assert resumed.history_.equals(whole.history_) and resumed.best_epoch_ == whole.best_epoch_


_CHILD = textwrap.dedent("""
    import json, sys, time
    import ibl_learnrules.engine as engine
    from ibl_learnrules import LearningRuleGLM, simulate_cohort

    # slow epochs, so that the parent can kill the fit between two of them
    engine.progress_bar = lambda total, desc, verbose: lambda *_: time.sleep(0.25)
    params = json.loads(sys.argv[2])
    cohort = simulate_cohort(3, n_trials=300, random_state=0, alpha=0.05)
    LearningRuleGLM(**params).fit(cohort, checkpoint=sys.argv[1], checkpoint_every=1)
""")


def test_sigkilled_fit_resumes_to_the_same_parameters(cohort, tmp_path, epochs_run):
    params = dict(PARAMS, max_epochs=10)
    path = tmp_path / "fit.ckpt"
    # the child inherits the environment (PYTHONPATH included): it runs this very package
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), json.dumps(params)],
                             env=os.environ.copy(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not (path.exists() and read_checkpoint(path)["state"]["epoch"] >= 2):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child fit never wrote epoch 2"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL  # killed mid-fit, not finished
    saved = read_checkpoint(path)["state"]["epoch"]
    assert 2 <= saved < params["max_epochs"]
    resumed = LearningRuleGLM(**params).fit(cohort, checkpoint=path)
    assert epochs_run == list(range(saved, params["max_epochs"]))
    assert_same_parameters(resumed, LearningRuleGLM(**params).fit(cohort))


def test_a_finished_checkpoint_returns_the_same_model(cohort, tmp_path, epochs_run):
    path = tmp_path / "fit.ckpt"
    first = LearningRuleGLM(**PARAMS).fit(cohort, checkpoint=path, checkpoint_every=4)
    assert read_checkpoint(path)["state"]["epoch"] == PARAMS["max_epochs"]  # the last epoch
    epochs_run.clear()
    again = LearningRuleGLM(**PARAMS).fit(cohort, checkpoint=path)
    assert epochs_run == []
    assert_same_parameters(again, first)
    # resume=False starts afresh (and overwrites the file)
    LearningRuleGLM(**PARAMS).fit(cohort, checkpoint=path, resume=False)
    assert epochs_run == list(range(PARAMS["max_epochs"]))


def test_other_data_or_settings_are_refused(cohort, tmp_path):
    path = tmp_path / "fit.ckpt"
    LearningRuleGLM(**dict(PARAMS, max_epochs=1)).fit(cohort, checkpoint=path)
    with pytest.raises(ValueError, match="other data or settings"):
        LearningRuleGLM(**dict(PARAMS, max_epochs=1, lr=0.1)).fit(cohort, checkpoint=path)
    with pytest.raises(ValueError, match="other data or settings"):
        LearningRuleGLM(**dict(PARAMS, max_epochs=1)).fit(cohort.iloc[:-5], checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        LearningRuleGLM(**PARAMS).fit(cohort, checkpoint=path)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        LearningRuleGLM(**PARAMS).fit(cohort, checkpoint=tmp_path / "x.ckpt", checkpoint_every=0)


def test_cli_checkpoint_and_resume(cohort, tmp_path, monkeypatch, capsys):
    trials = tmp_path / "cohort.csv"
    cohort.to_csv(trials, index=False)
    ckpt = tmp_path / "fit.ckpt"
    args = ["fit", "--trials", str(trials), "--rule", "reinforce", "--epochs", "4",
            "--quiet", "--out", str(tmp_path / "m.pt"), "--checkpoint", str(ckpt)]
    assert main(["fit", "--trials", str(trials), "--out", "m.pt", "--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    interrupt_at(monkeypatch, 1)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 130
    assert "run the same command with --resume" in capsys.readouterr().err
    assert main(args) == 2  # an existing checkpoint is not overwritten by mistake
    assert "add --resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    whole = LearningRuleGLM(rule="reinforce", max_epochs=4, tbptt=100, random_state=0)
    assert_same_parameters(load_model(tmp_path / "m.pt"), whole.fit(cohort))
