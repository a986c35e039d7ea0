"""Every file the package writes replaces its target only when complete.

Two guards. The table below runs each writer with its serialiser failing midway (it writes a
few bytes to the path it was given, then raises): the existing target must stay
byte-identical and no temporary file may be left. A writer that bypassed
:func:`~ibl_learnrules.io.files.atomic_write` would leave the partial bytes in the target. And a
static check walks the package's source: every serialiser call must write to ``tmp``, the
temporary file ``atomic_write`` hands its writer, so a new writer cannot bypass it unseen.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import types
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from pynwb import NWBHDF5IO

import ibl_learnrules
from ibl_learnrules import LearningRuleGLM, save_model, simulate_cohort
from ibl_learnrules.cli import main
from ibl_learnrules.io.files import copy_file, write_figure, write_table, write_text
from ibl_learnrules.io.nwb import trials_to_nwb, write_results

matplotlib.use("Agg")
pytestmark = pytest.mark.filterwarnings("ignore:.*no-go trial:UserWarning")

ORIGINAL = b"the original content, which must survive a failed write\n"


class Injected(OSError):
    """The failure a test injects into a serialiser."""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("writers")
    cohort = simulate_cohort(2, n_trials=150, n_sessions=2, random_state=0, alpha=0.05)
    cohort.to_csv(root / "cohort.csv", index=False)
    model = LearningRuleGLM(rule="reinforce", max_epochs=1, random_state=0).fit(cohort)
    save_model(model, root / "model.pt")
    nwb = trials_to_nwb(cohort[cohort["subject"] == "sim000"], root / "nwb")
    return types.SimpleNamespace(root=root, cohort=cohort, csv=root / "cohort.csv",
                                 model=model, model_file=root / "model.pt", nwb=nwb)


# ------------------------------------------------------------------ failure injection
def partial_then_fail(path_of):
    """A serialiser that writes a few bytes where it was told to, then fails."""
    def failing(*args, **kwargs):
        with open(path_of(*args, **kwargs), "wb") as f:
            f.write(b"partial")
        raise Injected("disk full (injected)")
    return failing


def complete_then_fail(real):
    """A serialiser that finishes its file, then fails (a crash before the rename)."""
    def failing(*args, **kwargs):
        real(*args, **kwargs)
        raise Injected("crash after writing (injected)")
    return failing


SERIALISERS = {
    "to_csv": (pd.DataFrame, "to_csv", partial_then_fail(lambda self, path, *a, **k: path)),
    "to_parquet": (pd.DataFrame, "to_parquet",
                   partial_then_fail(lambda self, path, *a, **k: path)),
    "savefig": (Figure, "savefig", partial_then_fail(lambda self, path, *a, **k: path)),
    "write_text": (Path, "write_text", partial_then_fail(lambda self, *a, **k: self)),
    "torch.save": (torch, "save", partial_then_fail(lambda obj, path, *a, **k: path)),
    "copyfile": (shutil, "copyfile", partial_then_fail(lambda src, dst, *a, **k: dst)),
    "nwb": (NWBHDF5IO, "write", complete_then_fail(NWBHDF5IO.write)),
}


# --------------------------------------------------------------------------- writers
@dataclass(frozen=True)
class Writer:
    id: str
    serialiser: str
    #: (tmp_path, assets) -> (target that exists beforehand, call that rewrites it);
    #: the target is filled with ORIGINAL unless the setup wrote a real file there
    setup: object


def with_original(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(ORIGINAL)
    return target


def nwb_copy(tmp, a) -> Path:
    target = tmp / "session.nwb"
    target.write_bytes(a.nwb[0].read_bytes())
    return target


def experiment_write(tmp, a, name):
    import matplotlib.pyplot as plt

    from ibl_learnrules.experiment import _write

    figure = plt.figure()
    result = types.SimpleNamespace(results=a.cohort.head(), tests=a.cohort.head(2),
                                   report="report", figures={"model_comparison": figure},
                                   files={}, summary=lambda: {"n": 1})
    return with_original(tmp / "out" / name), lambda: _write(result, tmp / "out")


def one_cache(tmp, a):
    from ibl_learnrules.io.one import write_one_cache

    root = tmp / "cache"
    target = with_original(root / "sessions.pqt")  # the table of an existing cache
    cohort = a.cohort.assign(date=pd.Timestamp("2024-01-01")
                             + pd.to_timedelta(a.cohort["session_idx"], unit="D"))
    return target, lambda: write_one_cache(cohort, root)


def spec(tmp, a):
    from ibl_learnrules.nwb.make_spec import NAMESPACE, write_spec

    return (with_original(tmp / "spec" / f"{NAMESPACE}.namespace.yaml"),
            lambda: write_spec(tmp / "spec"))


def cli(target_name, *args):
    """A CLI writer: exit code 2 and one line on stderr are checked with the target."""
    def setup(tmp, a):
        target = with_original(tmp / target_name)
        argv = [str(x(tmp, a)) if callable(x) else x for x in args]
        return target, lambda: main(argv)
    return setup


WRITERS = [
    Writer("save_model", "torch.save",
           lambda tmp, a: (with_original(tmp / "m.pt"), lambda: save_model(a.model, tmp / "m.pt"))),
    Writer("trials_to_nwb", "nwb",
           lambda tmp, a: (with_original(tmp / "sim000-s00.nwb"), lambda: trials_to_nwb(
               a.cohort[a.cohort["session"] == "sim000-s00"], tmp, overwrite=True))),
    Writer("write_results-append", "nwb",
           lambda tmp, a: (nwb_copy(tmp, a), lambda: write_results(tmp / "session.nwb",
                                                                   a.model))),
    Writer("write_results-output", "nwb",
           lambda tmp, a: (with_original(tmp / "results.nwb"), lambda: write_results(
               nwb_copy(tmp, a), a.model, output=tmp / "results.nwb"))),
    Writer("write_table-csv", "to_csv",
           lambda tmp, a: (with_original(tmp / "t.csv"),
                           lambda: write_table(a.cohort, tmp / "t.csv"))),
    Writer("write_table-parquet", "to_parquet",
           lambda tmp, a: (with_original(tmp / "t.parquet"),
                           lambda: write_table(a.cohort, tmp / "t.parquet"))),
    Writer("write_text", "write_text",
           lambda tmp, a: (with_original(tmp / "r.txt"), lambda: write_text(tmp / "r.txt", "x"))),
    Writer("write_figure", "savefig",
           lambda tmp, a: (with_original(tmp / "f.png"),
                           lambda: write_figure(Figure(), tmp / "f.png"))),
    Writer("copy_file", "copyfile",
           lambda tmp, a: (with_original(tmp / "c.csv"), lambda: copy_file(a.csv, tmp / "c.csv"))),
    Writer("write_one_cache-tables", "copyfile", one_cache),
    Writer("write_spec", "copyfile", spec),
    Writer("experiment-results.csv", "to_csv",
           lambda tmp, a: experiment_write(tmp, a, "results.csv")),
    Writer("experiment-report.txt", "write_text",
           lambda tmp, a: experiment_write(tmp, a, "report.txt")),
    Writer("experiment-figure", "savefig",
           lambda tmp, a: experiment_write(tmp, a, "model_comparison.png")),
    Writer("cli-simulate-csv", "to_csv",
           cli("sim.csv", "simulate", "--n-subjects", "1", "--n-sessions", "1", "--quiet",
               "--out", lambda tmp, a: tmp / "sim.csv")),
    Writer("cli-simulate-parquet", "to_parquet",
           cli("sim.parquet", "simulate", "--n-subjects", "1", "--n-sessions", "1", "--quiet",
               "--out", lambda tmp, a: tmp / "sim.parquet")),
    Writer("cli-fit-model", "torch.save",
           cli("m.pt", "fit", "--trials", lambda tmp, a: a.csv, "--rule", "none", "--epochs",
               "1", "--quiet", "--out", lambda tmp, a: tmp / "m.pt")),
    Writer("cli-compare-table", "to_csv",
           cli("table.csv", "compare", "--trials", lambda tmp, a: a.csv, "--rules", "none",
               "--folds", "2", "--epochs", "1", "--quiet",
               "--out", lambda tmp, a: tmp / "table.csv")),
    Writer("cli-check-table", "to_csv",
           cli("o/twin_check_summary.csv", "check", "--model", lambda tmp, a: a.model_file,
               "--trials", lambda tmp, a: a.csv, "--n-twins", "1", "--modes", "replay",
               "--no-psychometrics", "--quiet", "--out", lambda tmp, a: tmp / "o")),
    Writer("cli-check-figure", "savefig",
           cli("o/twin_check.png", "check", "--model", lambda tmp, a: a.model_file,
               "--trials", lambda tmp, a: a.csv, "--n-twins", "1", "--modes", "replay",
               "--no-psychometrics", "--quiet", "--out", lambda tmp, a: tmp / "o")),
]


@pytest.mark.parametrize("writer", WRITERS, ids=[w.id for w in WRITERS])
def test_a_failed_write_leaves_the_target_byte_identical(writer, assets, tmp_path, monkeypatch,
                                                         capsys):
    target, call = writer.setup(tmp_path, assets)
    before = digest(target)
    owner, name, failing = SERIALISERS[writer.serialiser]
    monkeypatch.setattr(owner, name, failing)
    if writer.id.startswith("cli-"):
        assert call() == 2
        err = capsys.readouterr().err
        assert "injected" in err and err.count("\n") == 1, err
    else:
        with pytest.raises(Injected):
            call()
    monkeypatch.undo()
    assert digest(target) == before, f"{writer.id} wrote into its target directly"
    leftovers = [p for p in files_under(tmp_path) if ".tmp" in p]
    assert leftovers == [], f"{writer.id} left temporary files {leftovers}"


def test_writers_work_when_nothing_fails(tmp_path):
    frame = pd.DataFrame({"a": [1, 2]})
    pd.testing.assert_frame_equal(pd.read_csv(write_table(frame, tmp_path / "a.csv")), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(write_table(frame, tmp_path / "a.pqt")), frame)
    with pytest.raises(ValueError, match=r"\.csv or \.parquet, got 'a\.xlsx'"):
        write_table(frame, tmp_path / "a.xlsx")
    assert files_under(tmp_path) == ["a.csv", "a.pqt"]


# -------------------------------------------------------------- the static guard
#: serialiser -> how to find the path it writes to in a call: ("arg", i), ("kw", name) or
#: "receiver" (``path.write_text(...)``). Reading modes are recognised and allowed.
WRITE_CALLS = {
    "to_csv": ("arg", 0), "to_parquet": ("arg", 0), "to_json": ("arg", 0),
    "to_pickle": ("arg", 0), "to_hdf": ("arg", 0), "savefig": ("arg", 0),
    "write_text": "receiver", "write_bytes": "receiver", "save": ("arg", 1),
    "copy": ("arg", 1), "copy2": ("arg", 1), "copyfile": ("arg", 1),
    "export_spec": ("arg", 2), "make_parquet_db": ("kw", "out_dir"),
    "NWBHDF5IO": ("arg", 0), "_open_nwb": ("arg", 0), "open": ("arg", 0),
}
#: names too common to mean a write unless called on this module
MODULE_ONLY = {"copy": "shutil", "copy2": "shutil", "copyfile": "shutil", "save": "torch"}
#: where the temporary file is made, and the readers' one opening function
EXEMPT = {("io/files.py", "atomic_write"), ("io/nwb.py", "_open_nwb")}


def _is_tmp(node) -> bool:
    """``tmp`` or ``str(tmp)``: the temporary file of atomic_write (or a scratch folder)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "str" and node.args:
        node = node.args[0]
    return isinstance(node, ast.Name) and node.id == "tmp"


def _mode(call: ast.Call) -> str | None:
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    mode = mode if mode is not None else (call.args[1] if len(call.args) > 1 else None)
    return mode.value if isinstance(mode, ast.Constant) else None


def bypassing_writes(source: str, module: str = "<snippet>") -> list[str]:
    """Serialiser calls in ``source`` that write anywhere but to ``tmp``."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef,
                                                     ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call) and (module, function) not in EXEMPT:
                name = getattr(child.func, "attr", getattr(child.func, "id", None))
                where = WRITE_CALLS.get(name)
                if name in MODULE_ONLY and getattr(getattr(child.func, "value", None), "id",
                                                   None) != MODULE_ONLY[name]:
                    where = None
                if name in ("NWBHDF5IO", "_open_nwb", "open") and _mode(child) in (None, "r",
                                                                                  "rb"):
                    where = None  # a reader
                if where == "receiver" and not isinstance(child.func, ast.Attribute):
                    where = None  # io.files.write_text(target, text): the atomic helper
                if where == "receiver":
                    target = getattr(child.func, "value", None)
                elif where is not None and where[0] == "arg":
                    target = child.args[where[1]] if len(child.args) > where[1] else None
                elif where is not None:
                    target = next((k.value for k in child.keywords if k.arg == where[1]), None)
                if where is not None and not _is_tmp(target):
                    found.append(f"{module}:{child.lineno} {ast.unparse(child)[:80]}")
            visit(child, inner)

    visit(ast.parse(source), None)
    return found


def test_every_serialiser_call_in_the_package_writes_to_a_temporary_file():
    package = Path(ibl_learnrules.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        module = str(path.relative_to(package))
        found += bypassing_writes(path.read_text(), module)
    assert found == [], "writes that bypass io.files.atomic_write:\n" + "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "table.to_csv(out / 'a.csv', index=False)",
    "fig.savefig(path, dpi=120)",
    "(out / 'summary.json').write_text(text)",
    "torch.save(blob, path)",
    "with NWBHDF5IO(str(path), 'w') as io: io.write(f)",
    "with open(path, 'w') as f: f.write(text)",
    "make_parquet_db(root, hash_ids=True)",
])
def test_the_static_guard_sees_a_bypass(snippet):
    assert len(bypassing_writes(snippet)) == 1
    safe = "atomic_write(target, lambda tmp: tmp.write_text(text))"
    assert bypassing_writes(safe) == []
