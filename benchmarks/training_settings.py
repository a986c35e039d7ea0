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
