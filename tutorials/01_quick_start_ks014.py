# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Quick start: how did KS014 learn?
#
# KS014 is a real IBL mouse whose first 15 training sessions (10,310 trials) ship with the
# package. This tutorial looks at its behaviour, fits learning rules to it, and checks them on
# sessions they never saw.
#
# **What you will learn**
#
# - how to load a trials table and look at learning curves and psychometric curves;
# - how to fit a learning rule with `LearningRuleGLM` and read the weight trajectory;
# - how to score rules on a mouse's later sessions (`held_out_future`).

# %% [markdown]
# ## Loading the data
#
# `load_ks014()` returns the trials table every part of the package consumes: one row per
# trial, ALF columns (`choice` -1 is a rightward choice), sessions in date order.

# %%
import matplotlib.pyplot as plt

from ibl_learnrules import LearningRuleGLM, load_ks014
from ibl_learnrules.datasets import KS014_ATTRIBUTION, tutorial_size
from ibl_learnrules.evaluation import held_out_future, summarize
from ibl_learnrules.interpret import psychometric_curves
from ibl_learnrules.plotting import (
    plot_learning_curve,
    plot_psychometric,
    plot_training_loss,
    plot_weight_trajectory,
)
from ibl_learnrules.stages import training_status

ks014 = load_ks014()
print(f"{len(ks014)} trials in {ks014['session'].nunique()} sessions. {KS014_ATTRIBUTION}")
ks014.head()

# %% [markdown]
# ### Example 1: the behaviour
#
# The fraction correct climbs from below chance (debiasing trials repeat the mouse's errors)
# to above 0.8; brainbox's criteria say when it counts as trained.

# %%
status = training_status(ks014)
print(status[["session", "status"]].to_string(index=False))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
plot_learning_curve(ks014, ax=axes[0])
last_session = ks014[ks014["session_idx"] == ks014["session_idx"].max()]
plot_psychometric(psychometric_curves(last_session), ax=axes[1])
fig.tight_layout()

# %% [markdown]
# ### Example 2: fit a learning rule
#
# A rule is fitted by maximising the likelihood of the mouse's choices while its GLM weights
# are rolled forward trial by trial. `predict_trajectory` returns those weights.

# %%
rule = LearningRuleGLM(rule="dnn", max_epochs=tutorial_size(60), lr=0.01, tbptt=250,
                       random_state=0).fit(ks014)
print(f"{rule.score(ks014):.3f} nats/trial (chance is -0.693)")
trajectory = rule.predict_trajectory(ks014)

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), width_ratios=[3, 1])
plot_weight_trajectory(trajectory, stages=status, ax=axes[0])
plot_training_loss(rule, ax=axes[1])
fig.tight_layout()

# %% [markdown]
# The stimulus weight grows as the mouse learns; the bias weight wanders with the mouse's
# side preference. Lines mark session starts and the first "trained" session.
#
# ### Example 3: predict the sessions it has not seen
#
# Fit on the first sessions, roll the rule forward through the later ones, score them.

# %%
params = {"max_epochs": tutorial_size(30), "lr": 0.05, "tbptt": 250, "random_state": 0}
table = held_out_future(ks014, ["none", "reinforce_baseline"],
                        n_train_sessions=10, estimator_params=params)
print(summarize(table).round(4).to_string())
