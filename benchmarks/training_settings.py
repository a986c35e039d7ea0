"""Training settings that the benchmarks' model variants are written on top of.

Imported by ``bench_twins.py`` and ``select_defaults.py`` (run as scripts from this folder),
so that a variant keeps one meaning in both.
"""

#: Training as every rule did before per-rule defaults (stop 20): teacher forcing alone, a
#: constant learning rate. Variants are written on top of it, so that each keeps the
#: meaning it had when it was measured.
TEACHER_FORCED = dict(free_running=0.0, lr_schedule="constant", correction_prior=0.0)
#: The package defaults.
AUTO = dict(free_running="auto", lr_schedule="auto", correction_prior="auto")
#: The package defaults of stop 20, before the correction prior.
STOP20 = {**AUTO, "correction_prior": 0.0}

#: Candidates of both scripts. The networks gated on p(correct) at full contrast against the
#: bias, sigmoid(|w_stim| - |w_bias|) capped at 1/2 (shut only where the bias overrides the
#: stimulus; the default since 0.2.0), and that default with the stimulus weight's
#: free-running term (the bias taught) at weight 0.3 or 0.1 ("01").
GATE_AGAINST = {f"{rule}_gate_against": dict(
    rule=rule, rule_params={"gate": 1, "gate_on": "against_bias"}, **AUTO)
    for rule in ("dnn", "rnn")}
FREE_STIMULUS = {f"{rule}_free_stimulus{tag}": dict(
    rule=rule, **{**AUTO, "free_running": weight}, free_weights=("stimulus",))
    for rule, weight, tag in (("dnn", 0.3, ""), ("dnn", 0.1, "01"), ("rnn", 0.1, "01"))}
#: The stimulus weight's free-running term (weight 0.3) training only the classic rule the
#: network nests (``free_running_trains="base"``): the correction is taught alone.
FREE_STIMULUS_BASE = {f"{rule}_free_stimulus_base": dict(
    rule=rule, **{**AUTO, "free_running": 0.3}, free_weights=("stimulus",),
    free_running_trains="base") for rule in ("dnn", "rnn")}
#: The previous trial's rewarded side as a GLM covariate (in biased blocks it is the block's
#: side four times in five), with each rule's defaults; "_history" adds the previous choice,
#: "_free3" trains with the free-running likelihood weighted 3 (replay twins that switch
#: blocks faster).
PREV_SIDE = {f"{rule}_prev_side{tag}": dict(
    rule=rule, covariates=("stimulus", "bias", *extra),
    **{**(AUTO if rule in ("dnn", "rnn") else {}), **more})
    for rule in ("reinforce_baseline", "reinforce_baseline_leak", "reinforce_baseline_leak_side",
                 "dnn", "rnn")
    for tag, extra, more in (("", ("prev_reward_side",), {}),
                             ("_history", ("prev_choice", "prev_reward_side"), {}),
                             ("_free3", ("prev_reward_side",), {"free_running": 3.0}))}
#: A leaky trace of the rewarded sides as a GLM covariate (rate SIDE_TRACE_RATE per trial),
#: with each rule's defaults.
SIDE_TRACE = {f"{rule}_side_trace": dict(
    rule=rule, covariates=("stimulus", "bias", "reward_side_trace"),
    **(AUTO if rule in ("dnn", "rnn") else {}))
    for rule in ("reinforce_baseline", "reinforce_baseline_leak", "dnn", "rnn")}
