import pandas as pd
import pytest

from ibl_learnrules import validate_trials
from ibl_learnrules.cli import main


def test_simulate_writes_a_trials_table(tmp_path, capsys):
    out = tmp_path / "cohort.parquet"
    assert main(["simulate", "--n-subjects", "2", "--n-sessions", "3", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table["subject"].nunique() == 2
    assert len(validate_trials(table)) == len(table)
    printed = capsys.readouterr().out
    assert "KS014" in printed and f"wrote {len(table)} simulated trials" in printed


def test_bad_output_suffix_is_a_one_line_error(tmp_path, capsys):
    assert main(["simulate", "--n-sessions", "1", "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "must end in .csv or .parquet" in err


def test_bad_usage_exits_with_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--n-subjects", "zero"])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
