"""Every tutorial runs end to end at reduced size and draws non-empty figures."""

import runpy
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ibl_learnrules.datasets import TUTORIAL_SCALE_VARIABLE  # noqa: E402

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9]*.py"))


def drawn(ax) -> int:
    """Number of data points an axes shows (lines, markers, bars, images)."""
    points = sum(len(line.get_xdata()) for line in ax.get_lines())
    points += sum(len(c.get_offsets()) for c in ax.collections)
    points += len(ax.patches) + len(ax.images)
    return points


def test_the_tutorials_are_the_listed_ones():
    assert [p.name[:3] for p in TUTORIALS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_draws(path, tmp_path, monkeypatch):
    monkeypatch.setenv(TUTORIAL_SCALE_VARIABLE, "0.1")
    monkeypatch.chdir(tmp_path)
    plt.close("all")
    text = path.read_text()
    assert "**What you will learn**" in text and "## Loading" in text
    assert "### Example 1" in text
    try:
        runpy.run_path(str(path), run_name="__main__")
        figures = [plt.figure(n) for n in plt.get_fignums()]
        assert figures, f"{path.name} drew no figure"
        for k, fig in enumerate(figures):
            assert any(drawn(ax) > 0 for ax in fig.axes), f"figure {k} of {path.name} is empty"
            out = tmp_path / f"figure{k}.png"
            fig.savefig(out)
            assert out.stat().st_size > 5_000
    finally:
        plt.close("all")
