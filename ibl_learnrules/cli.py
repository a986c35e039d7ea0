"""The ``ibl-learnrules`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """A user error: reported in one line, exit code 2."""


def _simulate(args: argparse.Namespace) -> None:
    import numpy as np

    from .datasets import load_ks014
    from .io.files import write_table
    from .simulate import simulate_cohort

    cohort = simulate_cohort(args.n_subjects, rule=args.rule, n_sessions=args.n_sessions,
                             random_state=args.seed)
    if args.one_cache is not None:
        from .io.one import write_one_cache

        if Path(args.one_cache).exists() and any(Path(args.one_cache).iterdir()):
            raise UsageError(f"--one-cache folder {args.one_cache} is not empty")
        write_one_cache(cohort, args.one_cache)
    if args.out is not None:
        out = Path(args.out)
        if out.suffix not in (".csv", ".parquet", ".pqt"):
            raise UsageError(f"--out must end in .csv or .parquet, got {out.name!r}")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_table(cohort, out)
    if args.quiet:
        return
    ks014 = load_ks014()

    def easy_correct(trials):
        contrast = np.fmax(trials["contrastLeft"].fillna(0), trials["contrastRight"].fillna(0))
        easy = trials[contrast >= 0.5]
        return easy["feedbackType"].eq(1).groupby(easy["session_idx"]).mean()

    sim = easy_correct(cohort)
    real = easy_correct(ks014)
    print(f"p(correct) on easy contrasts (>= 0.5) per session: real mouse KS014 vs "
          f"{args.n_subjects} simulated '{args.rule}' learners")
    print("session   KS014   simulated")
    for s in range(max(len(sim), len(real))):
        a = f"{real.iloc[s]:.2f}" if s < len(real) else "  -"
        b = f"{sim.iloc[s]:.2f}" if s < len(sim) else "  -"
        print(f"{s:7d}   {a:>5}   {b:>9}")
    if args.out is not None:
        print(f"wrote {len(cohort)} simulated trials to {args.out}")


def _read_trials(args: argparse.Namespace):
    """Read the trials named by --trials (CSV/parquet), --nwb, or --one-cache and --subject."""
    import pandas as pd

    given = [name for name in ("trials", "nwb", "one_cache") if getattr(args, name)]
    if len(given) != 1:
        raise UsageError("give one of --trials FILE, --nwb FILE [FILE ...], or --one-cache DIR "
                         "with --subject")
    if args.nwb:
        from .io.nwb import read_trials

        missing = [p for p in args.nwb if not Path(p).is_file()]
        if missing:
            raise UsageError(f"no such NWB file: {', '.join(missing)}")
        table = read_trials(args.nwb)
    elif args.trials is not None:
        path = Path(args.trials)
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        table = _read_table(path)
    else:
        if not args.subject:
            raise UsageError("--one-cache needs --subject")
        from one.api import ONE

        from .io.one import load_cohort

        if not Path(args.one_cache).is_dir():
            raise UsageError(f"no such ONE cache folder: {args.one_cache}")
        one = ONE(cache_dir=args.one_cache, mode="local")
        return load_cohort(one, args.subject)
    if args.subject:
        found = table["subject"].astype(str) if "subject" in table else pd.Series(dtype=str)
        unknown = [s for s in args.subject if s not in set(found)]
        if unknown:
            raise UsageError(f"subject(s) {', '.join(unknown)} not in the input (found: "
                             f"{', '.join(sorted(set(found))) or 'none'})")
        table = table[found.isin(args.subject)]
    return table


def _read_table(path: Path):
    """Read a CSV or parquet trials table; any unreadable file is a one-line UsageError."""
    import pandas as pd

    if path.suffix not in (".csv", ".parquet", ".pqt"):
        raise UsageError(f"--trials must be a .csv or .parquet file, got {path.name!r}")
    try:
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except UnicodeDecodeError as err:
        raise UsageError(f"cannot read {path}: not UTF-8 text ({err.reason} at byte "
                         f"{err.start}); save the table as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise UsageError(f"cannot read {path}: the file is empty") from None
    except Exception as err:  # noqa: BLE001 - any unreadable input is a user error
        raise UsageError(f"cannot read {path}: {type(err).__name__}: {err}") from None


def _estimator_params(args: argparse.Namespace) -> dict:
    params = {"max_epochs": args.epochs, "lr": args.lr, "lr_schedule": args.lr_schedule,
              "tbptt": args.tbptt, "random_state": args.seed, "verbose": 0 if args.quiet else 1}
    if args.covariates is not None:
        params["covariates"] = tuple(args.covariates)
    return params


def _fit(args: argparse.Namespace) -> None:
    from .estimator import LearningRuleGLM
    from .io.model_file import save_model

    trials = _read_trials(args)
    est = _fit_with_checkpoint(LearningRuleGLM(rule=args.rule, weight_noise=args.weight_noise,
                                               noise_reversion=args.noise_reversion,
                                               free_running=args.free_running,
                                               free_weights=args.free_weights,
                                               free_running_trains=args.free_running_trains,
                                               correction_prior=_prior(args.correction_prior),
                                               drift_guard=args.drift_guard,
                                               **_estimator_params(args)), trials, args)
    save_model(est, args.out)
    if not args.quiet:
        if est.prior_scores_ is not None:
            print(f"correction prior {est.correction_prior_:g} chosen on held-out data ("
                  + ", ".join(f"{k:g}: {v:.4f}" for k, v in est.prior_scores_.items())
                  + " nats/trial)")
        print(f"fitted rule {args.rule!r} on {len(est.subjects_)} animal(s), {len(trials)} "
              f"trials: {est.score(trials):.4f} nats/trial; saved to {args.out}")
    if args.nwb_results:
        if not args.nwb:
            raise UsageError("--nwb-results needs --nwb input files")
        from .io.nwb import write_results

        folder = Path(args.nwb_results)
        folder.mkdir(parents=True, exist_ok=True)
        for source in args.nwb:
            out = write_results(source, est, trials=trials,
                                output=folder / f"{Path(source).stem}_learning_rules.nwb")
            if not args.quiet:
                print(f"wrote {out} (linked to {source})")


def _fit_with_checkpoint(est, trials, args: argparse.Namespace):
    """Fit, with ``--checkpoint`` / ``--resume``; Ctrl-C and numerical failure in one line."""
    from .numerics import NumericalTroubleError

    if args.resume and args.checkpoint is None:
        raise UsageError("--resume needs --checkpoint FILE")
    if args.checkpoint is not None and Path(args.checkpoint).exists() and not args.resume:
        raise UsageError(f"checkpoint {args.checkpoint} exists: add --resume to carry on "
                         "from it, or delete it to start afresh")
    try:
        return est.fit(trials, checkpoint=args.checkpoint, resume=args.resume)
    except NumericalTroubleError as err:
        raise UsageError(str(err)) from None
    except KeyboardInterrupt:
        if args.checkpoint is None:
            raise
        print(f"ibl-learnrules fit: interrupted; the last completed epoch is saved in "
              f"{args.checkpoint}: run the same command with --resume to carry on",
              file=sys.stderr)
        raise SystemExit(130) from None


def _check(args: argparse.Namespace) -> None:
    from .io.files import write_figure, write_table
    from .io.model_file import load_model
    from .twins import check_twins

    if not Path(args.model).is_file():
        raise UsageError(f"no such model file: {args.model}")
    model = load_model(args.model)
    trials = _read_trials(args)
    check = check_twins(model, trials, n_twins=args.n_twins, random_state=args.seed,
                        modes=[m for m in args.modes.split(",") if m], protocol=args.protocol,
                        psychometrics=not args.no_psychometrics,
                        free_sessions=args.free_sessions)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(check.summary, out / "twin_check_summary.csv")
    write_table(check.sessions, out / "twin_check_sessions.csv")
    import matplotlib

    matplotlib.use("Agg")  # only files are written
    import matplotlib.pyplot as plt

    from .plotting import plot_twin_check

    fig = plot_twin_check(check)
    write_figure(fig, out / "twin_check.png", dpi=120)
    plt.close(fig)
    if not args.quiet:
        n_animals = trials["subject"].nunique()
        print(f"{args.n_twins} twins of {args.model} vs {n_animals} animal(s):")
        print(check.report())
        print(f"wrote twin_check.png, twin_check_summary.csv, twin_check_sessions.csv to {out}")


def _compare(args: argparse.Namespace) -> None:
    from sklearn.model_selection import GroupKFold

    from .evaluation import compare_rules, comparison_report
    from .io.files import write_table

    trials = _read_trials(args)
    rules = [r for r in args.rules.split(",") if r]
    n_animals = trials["subject"].nunique()
    if n_animals < 2:
        raise UsageError(f"compare needs at least 2 animals, the input has {n_animals}")
    table = compare_rules(trials, rules, cv=GroupKFold(min(args.folds, n_animals)),
                          estimator_params=_estimator_params(args) | {"verbose": 0})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_table(table, args.out)
    if args.quiet:
        return
    print(f"held-out animals ({n_animals}, GroupKFold), mean per animal:")
    print(comparison_report(table))


def _demo(args: argparse.Namespace) -> None:
    from .demo import QUICK, DemoSizes, run_demo

    run_demo(args.out, QUICK if args.quick else DemoSizes(),
             report=(lambda line: None) if args.quiet else print)


def _experiment(args: argparse.Namespace) -> None:
    from .experiment import PAPER_RULES, run_paper_experiment

    if (args.cache_dir is None) == (not args.remote):
        raise UsageError("give one of --cache-dir DIR (a local ONE cache) or --remote")
    if (args.subjects is None) == (args.labs is None):
        raise UsageError("give one of --subjects a,b,c or --labs x,y")
    from one.api import ONE

    if args.remote:  # the IBL public database
        one = ONE(base_url="https://openalyx.internationalbrainlab.org",
                  password="international", silent=True)
    else:
        if not Path(args.cache_dir).is_dir():
            raise UsageError(f"no such ONE cache folder: {args.cache_dir}")
        one = ONE(cache_dir=args.cache_dir, mode="local")
    names = lambda text: [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    params = {} if args.epochs is None else {"max_epochs": args.epochs}
    result = run_paper_experiment(
        one, subjects=names(args.subjects) if args.subjects else None,
        labs=names(args.labs) if args.labs else None, n_trials=args.n_trials,
        rules=names(args.rules) if args.rules else PAPER_RULES, n_folds=args.folds,
        estimator_params=params, out=args.out, n_jobs=args.jobs, progress=not args.quiet,
        min_trials=args.min_trials)
    import matplotlib.pyplot as plt

    for figure in result.figures.values():
        plt.close(figure)
    if not args.quiet:
        print(result.report)
        print(f"wrote {', '.join(sorted(p.name for p in result.files.values()))} to {args.out}")


def _word_or_number(word: str | None, number: str, below: float | None = None):
    """Return an argparse type: ``word`` itself, or a number >= 0 (described as ``number``).

    With ``below``, the number must also be less than it; with ``word=None``, only numbers.
    """
    allowed = ">= 0" if below is None else f"in [0, {below:g})"
    expected = number if word is None else f"{word!r} or {number}"

    def parse(text: str) -> str | float:
        if word is not None and text == word:
            return text
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value >= 0 and (below is None or value < below)):  # NaN fails too
            raise argparse.ArgumentTypeError(f"expected {expected} {allowed}, got {text!r}")
        return value
    return parse


def _prior(values: list) -> str | float | tuple[float, ...]:
    """``--correction-prior``: one value as given, several as candidates to choose among."""
    if len(values) == 1:
        return values[0]
    if "auto" in values:
        raise ValueError("--correction-prior: 'auto' stands alone; candidates are numbers")
    return tuple(values)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``ibl-learnrules``."""
    from .simulate import GROUND_TRUTH_DEFAULTS

    parser = argparse.ArgumentParser(
        prog="ibl-learnrules",
        description="Infer how mice learn the IBL task: learning rules over a dynamic GLM.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the main job: compare rules on KS014 and a cohort",
                          description="Fit the fixed GLM, the classic rules and the DNN/RNN "
                                      "rules; compare them on held-out simulated mice and on "
                                      "KS014's later sessions; write figures, models and a "
                                      "JSON summary.")
    demo.add_argument("--out", default="ibl_learnrules_demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    demo.add_argument("--quiet", action="store_true", help="print nothing")
    demo.set_defaults(func=_demo)
    sim = sub.add_parser("simulate", help="simulate a cohort learning the IBL training protocol",
                         description="Simulate mice learning the IBL training protocol with a "
                                     "known rule; print their learning curve beside KS014's.")
    sim.add_argument("--n-subjects", type=_positive_int, default=4)
    sim.add_argument("--n-sessions", type=_positive_int, default=15)
    sim.add_argument("--rule", choices=sorted(GROUND_TRUTH_DEFAULTS), default="reinforce")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", default=None, help="write the trials table (.csv or .parquet)")
    sim.add_argument("--one-cache", default=None,
                     help="also write the cohort as ALF sessions in a new local ONE cache")
    sim.add_argument("--quiet", action="store_true", help="print nothing")
    sim.set_defaults(func=_simulate)

    from .engine import LR_SCHEDULES
    from .rules import available_rules
    from .trials import COVARIATES

    def data_and_training(command):
        command.add_argument("--trials", help="trials table (.csv or .parquet)")
        command.add_argument("--nwb", nargs="+", metavar="FILE",
                             help="IBL NWB session files (either column vocabulary)")
        command.add_argument("--one-cache", help="a local ONE cache folder (with --subject)")
        command.add_argument("--subject", nargs="+", help="subject(s) to use")
        command.add_argument("--epochs", type=_positive_int, default=50)
        command.add_argument("--lr", type=float, default=0.01)
        command.add_argument("--lr-schedule", choices=("auto", *LR_SCHEDULES), default="auto",
                             help="learning rate over the epochs (cosine: anneal to 0; auto: "
                                  "the rule's default, constant for the built-in rules)")
        command.add_argument("--tbptt", type=_positive_int, default=100)
        command.add_argument("--covariates", nargs="+", choices=list(COVARIATES), default=None,
                             metavar="COVARIATE",
                             help="GLM covariates (default: stimulus bias); e.g. stimulus bias "
                                  "reward_side_trace for biased blocks. Choices: "
                                  + ", ".join(COVARIATES))
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--quiet", action="store_true", help="print nothing")

    fit = sub.add_parser("fit", help="fit a learning rule and save the model",
                         description="Fit one learning rule on a trials table, NWB files or a "
                                     "ONE cache.")
    data_and_training(fit)
    fit.add_argument("--rule", choices=available_rules(), default="dnn")
    fit.add_argument("--out", required=True, help="model file to write (.pt)")
    fit.add_argument("--checkpoint", metavar="FILE",
                     help="save the training state to FILE after every epoch and on Ctrl-C")
    fit.add_argument("--resume", action="store_true",
                     help="with --checkpoint: carry on from FILE if it exists (same data and "
                          "settings: the result is that of an uninterrupted fit)")
    fit.add_argument("--weight-noise", type=_word_or_number("learn", "a standard deviation"),
                     default=None,
                     help="'learn', or a fixed standard deviation: Gaussian noise on the "
                          "weights after every trial, on top of the rule (slower: a filter); "
                          "use --tbptt 500 or more with it")
    fit.add_argument("--noise-reversion", type=_word_or_number("learn", "a rate", below=1),
                     default=None,
                     metavar="RATE",
                     help="with --weight-noise: 'learn', or a rate in [0, 1) per trial at "
                          "which the noise falls back to the learned weights (default: none, "
                          "a random walk)")
    fit.add_argument("--free-running", type=_word_or_number("auto", "a weight"), default="auto",
                     metavar="WEIGHT",
                     help="weight of the free-running likelihood in the loss (the rule run on "
                          "its own expected choices), so that its twins learn more at the "
                          "animals' pace; 0: teacher forcing only (default auto: the rule's "
                          "default, 0 for the built-in rules)")
    fit.add_argument("--free-weights", nargs="+", default=None, metavar="COVARIATE",
                     help="with --free-running: only these covariates' weights run free in "
                          "that likelihood, the others follow the animals' choices (e.g. "
                          "'stimulus': learn the stimulus at the animals' pace given their bias)")
    fit.add_argument("--free-running-trains", choices=("all", "base"), default="all",
                     help="with --free-running: what that likelihood trains, all of the rule "
                          "or ('base') only the classic rule a network nests, whose "
                          "correction then learns from the animals' choices alone")
    fit.add_argument("--correction-prior", type=_word_or_number("auto", "a precision"),
                     nargs="+", default=["auto"], metavar="PRECISION",
                     help="precision of a Gaussian prior holding a network rule's correction "
                          "near the classic rule it nests; its pull falls as the trials grow "
                          "(default auto: the rule's default, 30 for dnn, 10 for rnn; 0: none). "
                          "Several values are candidates, chosen on held-out animals (or each "
                          "animal's last sessions, below 5 animals)")
    fit.add_argument("--drift-guard", type=_word_or_number(None, "a number"), default=0.0,
                     metavar="STRENGTH",
                     help="penalty on a network rule's expected update where it would carry "
                          "the weights further out beyond the range the animals' weights "
                          "span: twins whose bias does not run away, at some cost in "
                          "prediction (default 0: off; 1 is a firm guard)")
    fit.add_argument("--nwb-results", metavar="DIR",
                     help="with --nwb: write one results file per session into DIR "
                          "(trajectory, fitted rule), linked to the untouched source file")
    fit.set_defaults(func=_fit)

    check = sub.add_parser("check", help="closed-loop check: a fitted rule's twins vs animals",
                           description="Run twins of a saved model, free under the IBL "
                                       "protocol and replaying the animals' stimuli; compare "
                                       "learning curves, sessions to trained_1a, psychometrics, "
                                       "debiasing trials and block switches with the animals.")
    check.add_argument("--model", required=True, help="model file written by fit (.pt)")
    check.add_argument("--trials", help="trials table (.csv or .parquet)")
    check.add_argument("--nwb", nargs="+", metavar="FILE", help="IBL NWB session files")
    check.add_argument("--one-cache", help="a local ONE cache folder (with --subject)")
    check.add_argument("--subject", nargs="+", help="subject(s) to use")
    check.add_argument("--n-twins", type=_positive_int, default=20)
    check.add_argument("--modes", default="free,replay", help="free and/or replay")
    check.add_argument("--protocol", choices=("training", "biased"), default=None,
                       help="of the free twins (default: biased if the animals have blocks)")
    check.add_argument("--no-psychometrics", action="store_true",
                       help="skip the per-session psychometric fits (faster)")
    check.add_argument("--free-sessions", type=_positive_int, default=None, metavar="N",
                       help="sessions of the free twins (default: the animals'); more show "
                            "when twins train after the animals' last session")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--out", default="twin_check", help="output folder")
    check.add_argument("--quiet", action="store_true", help="print nothing")
    check.set_defaults(func=_check)

    compare = sub.add_parser("compare", help="compare rules on held-out animals",
                             description="Cross-validate rules by animal (GroupKFold) and test "
                                         "them pairwise across animals.")
    data_and_training(compare)
    compare.add_argument("--rules", default="none,reinforce,dnn",
                         help="comma-separated rule names")
    compare.add_argument("--folds", type=_positive_int, default=5)
    compare.add_argument("--out", help="write the per-animal table (.csv)")
    compare.set_defaults(func=_compare)

    experiment = sub.add_parser(
        "experiment", help="the paper's experiment: mice through ONE, 5-fold comparison",
        description="Load the first N training trials of mice (by name or lab) through ONE, "
                    "compare none/reinforce/reinforce_baseline/dnn/rnn on held-out mice "
                    "(GroupKFold), test the flexible rules against the classic ones, and write "
                    "results.csv, tests.csv, report.txt, summary.json and figures.")
    source = experiment.add_mutually_exclusive_group()
    source.add_argument("--cache-dir", help="a local ONE cache folder")
    source.add_argument("--remote", action="store_true",
                        help="the IBL public database (openalyx; needs internet)")
    mice = experiment.add_mutually_exclusive_group()
    mice.add_argument("--subjects", help="comma-separated subject names")
    mice.add_argument("--labs", help="comma-separated lab names: all their mice")
    experiment.add_argument("--n-trials", type=_positive_int, default=10_000,
                            help="first trials of training sessions per mouse (default 10000)")
    experiment.add_argument("--min-trials", type=_positive_int, default=None,
                            help="leave out mice with fewer trials (default n-trials / 10)")
    experiment.add_argument("--rules", default=None,
                            help="comma-separated rule names (default "
                                 "none,reinforce,reinforce_baseline,dnn,rnn)")
    experiment.add_argument("--folds", type=_positive_int, default=5)
    experiment.add_argument("--epochs", type=_positive_int, default=None,
                            help="max_epochs of every fit (default: the package default)")
    experiment.add_argument("--jobs", type=int, default=None, help="fits run at once (joblib)")
    experiment.add_argument("--out", default="ibl_learnrules_experiment", help="output folder")
    experiment.add_argument("--quiet", action="store_true", help="print nothing, no progress")
    experiment.set_defaults(func=_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError, TypeError, OSError) as err:
        # one line whatever the message holds (torch and hdmf messages span lines)
        message = " ".join(str(err).split())
        print(f"ibl-learnrules {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
