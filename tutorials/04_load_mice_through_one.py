# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Loading mice through ONE
#
# IBL sessions reach most users through ONE. This tutorial loads training sessions through the
# same ONE calls that talk to the public IBL database, here pointed at a local cache so that it
# runs offline, cuts each mouse's sequence where brainbox's criteria call it trained, and fits
# learning rules to the mice it loaded.
#
# **What you will learn**
#
# - how `load_subject_trials` and `load_cohort` turn ONE sessions into a trials table;
# - how `until="trained_1a"` ends a sequence at a training stage, and how to check the stage;
# - how to fit and compare rules on mice loaded this way.

# %% [markdown]
# ## Loading the data
#
# Against the public database, the call is (not run here: tutorials never touch the network):
#
# ```python
# from one.api import ONE
# one = ONE(base_url="https://openalyx.internationalbrainlab.org", password="international",
#           silent=True)
# trials = load_subject_trials(one, "KS014", protocols=["training"], until="trained_1a")
# ```
#
# Here we build a local ONE cache instead: the bundled mouse KS014 and three simulated mice,
# written as ALF sessions and indexed by ONE's own cache builder. From then on everything goes
# through `ONE(mode="local")`, the same code path as the remote database.

# %%
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from one.api import ONE

from ibl_learnrules import LearningRuleGLM, load_ks014, simulate_cohort
from ibl_learnrules.datasets import tutorial_size
from ibl_learnrules.evaluation import compare_rules, comparison_report
from ibl_learnrules.io.one import load_cohort, load_subject_trials, write_one_cache
from ibl_learnrules.plotting import plot_learning_curve
from ibl_learnrules.stages import training_status

# a cache built from plain ALF files has no revision tags; ONE says so once per dataset
warnings.filterwarnings("ignore", message="No default revision")

cache_dir = Path(tempfile.mkdtemp()) / "one_cache"
simulated = simulate_cohort(3, "reinforce_baseline", n_sessions=tutorial_size(6),
                            random_state=1, alpha=0.05)
simulated["subject"] = simulated["subject"].str.replace("sim", "SIM")
write_one_cache(pd.concat([load_ks014(), simulated], ignore_index=True), cache_dir)

one = ONE(cache_dir=cache_dir, mode="local")
print(one.search(subject="KS014")[:3], "...")

# %% [markdown]
# ### Example 1: one mouse up to trained_1a
#
# `load_subject_trials` matches the subject exactly, orders sessions by date and number and
# keeps the ALF choice sign (-1 is a rightward choice). `until="trained_1a"` asks brainbox
# which session first met the criterion and drops the sessions after it.

# %%
ks014 = load_subject_trials(one, "KS014", until="trained_1a")
status = training_status(ks014)
print(f"KS014: {ks014['session'].nunique()} sessions, {len(ks014)} trials")
print(status[["session", "status"]].tail(3).to_string(index=False))

fig, ax = plt.subplots(figsize=(6, 3.5))
plot_learning_curve(ks014, ax=ax)
ax.set_title("KS014 up to trained_1a")

# %% [markdown]
# The last session is the first one brainbox judges "trained 1a"; a fitted rule sees the
# mouse only while it was learning.
#
# ### Example 2: a cohort, fitted and compared on held-out mice
#
# `load_cohort` loads several mice at once. Rules are compared on held-out animals
# (GroupKFold by subject).

# %%
cohort = load_cohort(one, ["SIM000", "SIM001", "SIM002"])
params = {"max_epochs": tutorial_size(10), "lr": 0.05, "tbptt": 250, "random_state": 0}
table = compare_rules(cohort, ["none", "reinforce", "reinforce_baseline"],
                      estimator_params=params)
print(comparison_report(table))

# %% [markdown]
# ### Example 3: a rule fitted on ONE data, applied to KS014
#
# The fitted estimator is an ordinary scikit-learn estimator: fit on the cohort, score a mouse
# it never saw.

# %%
est = LearningRuleGLM(rule="reinforce_baseline", **params).fit(cohort)
print(f"KS014 under the cohort's rule: {est.score(ks014):.3f} nats/trial "
      f"(chance is {-0.693:.3f})")
