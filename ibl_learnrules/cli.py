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
    from .simulate import simulate_cohort

    cohort = simulate_cohort(args.n_subjects, rule=args.rule, n_sessions=args.n_sessions,
                             random_state=args.seed)
    if args.out is not None:
        out = Path(args.out)
        if out.suffix not in (".csv", ".parquet", ".pqt"):
            raise UsageError(f"--out must end in .csv or .parquet, got {out.name!r}")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".csv":
            cohort.to_csv(out, index=False)
        else:
            cohort.to_parquet(out, index=False)
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
    from .simulate import LEARNERS

    parser = argparse.ArgumentParser(
        prog="ibl-learnrules",
        description="Infer how mice learn the IBL task: learning rules over a dynamic GLM.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate a cohort learning the IBL training protocol",
                         description="Simulate mice learning the IBL training protocol with a "
                                     "known rule; print their learning curve beside KS014's.")
    sim.add_argument("--n-subjects", type=_positive_int, default=4)
    sim.add_argument("--n-sessions", type=_positive_int, default=15)
    sim.add_argument("--rule", choices=sorted(LEARNERS), default="reinforce")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", default=None, help="write the trials table (.csv or .parquet)")
    sim.add_argument("--quiet", action="store_true", help="print nothing")
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError, TypeError, OSError) as err:
        print(f"ibl-learnrules {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
