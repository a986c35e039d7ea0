# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Simulate a cohort and recover a known rule
#
# Before trusting a rule inferred from mice, check that the framework finds a rule that is
# known. The simulator runs the IBL training protocol with learners that follow REINFORCE,
# `dw = alpha * r * (y - p) * x`; we fit rules to their choices and compare with the truth.
#
# **What you will learn**
#
# - how to simulate a cohort (`simulate_cohort`) with known weights (`true_w_*` columns);
# - how far a classic rule's parameters and a DNN rule's updates are recovered;
# - how to read a rule as a grid of weight updates (`delta_w_grid`).

# %% [markdown]
# ## Loading the data
#
# Eight simulated mice start from zero weights and learn with alpha = 0.05.

# %%
import matplotlib.pyplot as plt
import numpy as np

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.datasets import tutorial_size
from ibl_learnrules.interpret import delta_w_grid, expected_update
from ibl_learnrules.plotting import plot_delta_w_grid, plot_weight_trajectory
from ibl_learnrules.rules import Reinforce

ALPHA = 0.05
cohort = simulate_cohort(tutorial_size(8), n_trials=1500, random_state=0, alpha=ALPHA,
                         w0=(0.0, 0.0))
print(f"{cohort['subject'].nunique()} mice, {len(cohort)} trials")

# %% [markdown]
# ### Example 1: a classic rule recovers its parameter
#
# The `reinforce` rule has one learning rate per weight. The stimulus rate comes back close
# to 0.05; the bias rate is weakly determined, because under balanced stimuli the bias barely
# moves whatever its rate.

# %%
reinforce = LearningRuleGLM(rule="reinforce", max_epochs=tutorial_size(15), lr=0.05,
                            tbptt=250, random_state=0).fit(cohort)
print("fitted alpha (stimulus, bias):", reinforce.rule_.alpha.detach().numpy().round(4))

# %% [markdown]
# ### Example 2: a DNN rule, read as a grid of updates
#
# The DNN rule knows nothing of REINFORCE. `delta_w_grid` evaluates a rule on every stimulus,
# choice and reward at given weights; the same call evaluates the true learner.

# %%
dnn = LearningRuleGLM(rule="dnn", max_epochs=tutorial_size(60), lr=0.01, tbptt=250,
                      random_state=0).fit(cohort)
print(f"log-likelihood, nats/trial: dnn {dnn.score(cohort):.4f}, "
      f"reinforce {reinforce.score(cohort):.4f}")
weights = {"stimulus": [1.0], "bias": [0.0]}
true_grid = delta_w_grid(Reinforce(2, alpha=ALPHA), weights=weights)
dnn_grid = delta_w_grid(dnn, weights=weights)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
plot_delta_w_grid(true_grid, covariate="stimulus", ax=axes[0])
axes[0].set_title("true REINFORCE")
plot_delta_w_grid(dnn_grid, covariate="stimulus", ax=axes[1])
axes[1].set_title("fitted DNN rule")
fig.tight_layout()

# %% [markdown]
# Both rules fit the choices about equally well, but the DNN's update on individual
# (stimulus, choice, reward) cells need not equal REINFORCE's: single updates are tiny, the
# choices see only their sum over many trials, and many splits across cells give the same sum.
# What the data determine is the *expected* update at each weight, averaged over the task's
# stimuli and the policy's choices: `expected_update` computes it, and there the DNN agrees
# with the truth.

# %%
grid = {name: np.linspace(cohort[f"true_w_{name}"].quantile(0.05),
                          cohort[f"true_w_{name}"].quantile(0.95), 6)
        for name in ("stimulus", "bias")}
true_field = expected_update(Reinforce(2, alpha=ALPHA), weights=grid, stimuli=cohort)
dnn_field = expected_update(dnn, weights=grid, stimuli=cohort)
columns = ["dw_stimulus", "dw_bias"]
error = (np.linalg.norm(dnn_field[columns] - true_field[columns])
         / np.linalg.norm(true_field[columns]))
print(f"expected update over the visited weights: relative error {error:.2f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
at_zero_bias = true_field["w_bias"].abs() == true_field["w_bias"].abs().min()  # nearest 0
ax.plot(true_field.loc[at_zero_bias, "w_stimulus"], true_field.loc[at_zero_bias, "dw_stimulus"],
        "k-", label="true REINFORCE")
ax.plot(dnn_field.loc[at_zero_bias, "w_stimulus"], dnn_field.loc[at_zero_bias, "dw_stimulus"],
        "o--", label="fitted DNN rule")
ax.set_xlabel("current stimulus weight")
ax.set_ylabel("expected update of the stimulus weight")
ax.legend()

# %% [markdown]
#
# ### Example 3: trajectories against the truth

# %%
trajectory = dnn.predict_trajectory(cohort)
mouse = cohort["subject"].iloc[0]
rows = trajectory[trajectory["subject"] == mouse]
corr = np.corrcoef(rows["w_stimulus"], cohort.loc[rows.index, "true_w_stimulus"])[0, 1]
print(f"{mouse}: correlation of fitted and true stimulus weight {corr:.3f}")
fig, ax = plt.subplots(figsize=(8, 3.5))
plot_weight_trajectory(trajectory, true=cohort, subject=mouse, ax=ax)
