# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # An NWB pipeline: read trials, fit a rule, write the results back
#
# NWB files hold one session each; a learning rule is fitted across a mouse's sessions. This
# tutorial reads a mouse's session files, fits a rule, writes each session's slice of the
# learning trajectory and the fitted rule into NWB through the `ndx-learning-rules`
# extension, validates the result and rebuilds the model from the file.
#
# **What you will learn**
#
# - how `read_trials` reads either IBL column vocabulary found on DANDI;
# - how `write_results` appends to a session file, or writes a separate file linked to it;
# - how to check the files with `pynwb.validate` and NWB Inspector, and read them back.

# %% [markdown]
# ## Loading the data
#
# Real IBL sessions come from DANDI (dandiset 000409) and are not downloaded here. We write
# a simulated mouse's sessions as NWB files in the newer ("tidy") vocabulary, the way those
# files store trials: `gabor_stimulus_contrast`, `gabor_stimulus_side`, `mouse_wheel_choice`,
# `is_mouse_rewarded`, `probability_left`.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO, validate

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.datasets import tutorial_size
from ibl_learnrules.io.nwb import (
    read_model,
    read_trajectory,
    read_trials,
    trials_to_nwb,
    write_results,
)
from ibl_learnrules.plotting import plot_weight_trajectory

folder = Path(tempfile.mkdtemp())
mice = simulate_cohort(3, "reinforce_baseline", n_sessions=tutorial_size(8), random_state=2,
                       alpha=0.05)
paths = trials_to_nwb(mice, folder / "sessions")
print(f"{len(paths)} session files, e.g. {paths[0].name}")

with NWBHDF5IO(str(paths[0]), "r") as io:
    print(io.read().trials.to_dataframe().head(3))

# %% [markdown]
# `read_trials` turns the files into the package's trials table, with the ALF choice sign
# (`counter_clockwise` wheel turns are rightward choices, ALF -1), sessions ordered by start
# time, the subject from `nwbfile.subject` and the session from the file's identifier.

# %%
trials = read_trials(paths)
trials.head()

# %% [markdown]
# ### Example 1: fit on two mice, write the third mouse's results
#
# The rule is fitted on two mice. For the third, `write_results` rolls the rule through all
# its sessions and writes each file its own slice (the weights carry over between sessions).
# `output=` leaves the source files untouched and writes results files that link to them.

# %%
train = trials[trials["subject"] != "sim002"]
held_out = trials[trials["subject"] == "sim002"]
est = LearningRuleGLM(rule="dnn", max_epochs=tutorial_size(40), hidden_size=16, lr=0.01,
                      tbptt=250, random_state=0).fit(train)
print(f"held-out mouse: {est.score(held_out):.3f} nats/trial")

results = []
for path in [p for p in paths if p.stem.startswith("sim002")]:
    results.append(write_results(path, est, trials=held_out,
                                 output=folder / "results" / f"{path.stem}_results.nwb"))
print([r.name for r in results])

# %% [markdown]
# ### Example 2: validate the files
#
# `pynwb.validate` checks them against the core schema and the extension's cached spec; NWB
# Inspector checks best practices.

# %%
for path in results:
    errors = validate(path=str(path))
    serious = [m for m in inspect_nwbfile(nwbfile_path=str(path))
               if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    print(path.name, "schema errors:", len(errors), "serious inspector messages:", len(serious))

# %% [markdown]
# ### Example 3: read the results back
#
# The trajectory read back from the files is the estimator's; the model rebuilt from a file
# predicts exactly as the fitted one does. Simulated mice carry their true weights, so the
# plot shows the fitted rule's weights over the true ones.

# %%
from_files = [read_trajectory(path) for path in results]
restored = read_model(results[0])
same = (restored.predict_proba(held_out) == est.predict_proba(held_out)).all()
print("restored model predicts identically:", bool(same))

trajectory = est.predict_trajectory(held_out)
for written in from_files:
    session = written["session"].iloc[0]
    expected = trajectory.loc[trajectory["session"] == session, "w_stimulus"].to_numpy()
    difference = abs(written["w_stimulus"].to_numpy() - expected).max()
    print(f"{session}: largest difference between file and estimator {difference:.1e}")
truth = mice[mice["subject"] == "sim002"]
fig, ax = plt.subplots(figsize=(8, 3.5))
plot_weight_trajectory(trajectory, true=truth, ax=ax)
ax.set_title("sim002: weights under the fitted DNN rule (dashed: true weights)")
