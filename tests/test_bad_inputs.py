"""Bad inputs found by the bad-input pass (issue 15), each through the entry point a user hits: the exit code and
the one line that names the file, the field and the problem; nothing read or written outside the data root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _frames import contract_log

from iat.data.io import DatasetError, dataset_parts, read_dataset, write_parts
from iatcli.main import main


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, the error line); the error is one line, with no traceback before it (progress bars aside)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) <= 1, err
    return code, lines[0] if lines else ""


@pytest.fixture
def chunked(tmp_path) -> Path:
    df, schema = contract_log(60)
    return write_parts(tmp_path / "chunked", [df.iloc[:30], df.iloc[30:]], schema)


def test_a_short_part_fails_validation_naming_the_part_and_both_counts(chunked, tmp_path, capsys):
    part = chunked / "part-00001.parquet"
    import pandas as pd

    pd.read_parquet(part).iloc[:25].to_parquet(part, index=False)  # 5 rows lost
    code, err = _cli(capsys, "validate", str(chunked), "--out", str(tmp_path / "out"))
    assert code == 2
    assert str(part) in err and "holds 25 rows" in err and "says 30" in err
    with pytest.raises(DatasetError, match="holds 25 rows"):
        read_dataset(chunked)


@pytest.mark.parametrize(
    "entry, field, problem",
    [
        ({"file": "../elsewhere.parquet", "rows": 30}, "parts[0].file", "no folders, no '..'"),
        ({"file": "/etc/passwd", "rows": 30}, "parts[0].file", "not the name of a .parquet part"),
        ({"file": "part-00000.parquet", "rows": "thirty"}, "parts[0].rows", "not a whole number"),
        ({"file": "part-00000.parquet", "rows": -1}, "parts[0].rows", "not a whole number"),
    ],
)
def test_parts_index_entries_are_checked_and_confined_to_the_folder(chunked, capsys, entry, field, problem):
    index = json.loads((chunked / "parts.json").read_text())
    index["parts"][0] = entry
    (chunked / "parts.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError) as e:
        dataset_parts(chunked)
    assert str(chunked / "parts.json") in str(e.value) and field in str(e.value) and problem in str(e.value)
    code, err = _cli(capsys, "validate", str(chunked))
    assert code == 2 and field in err


def test_a_malformed_parts_index_names_its_file(chunked, capsys):
    (chunked / "parts.json").write_text('{"rows": 60, "parts": [}')
    code, err = _cli(capsys, "validate", str(chunked))
    assert code == 2 and f"{chunked / 'parts.json'}: not valid JSON" in err


def test_parts_that_do_not_add_up_to_the_index_total_are_refused(chunked):
    index = json.loads((chunked / "parts.json").read_text())
    index["rows"] = 61
    (chunked / "parts.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="rows says 61, its parts add up to 60"):
        dataset_parts(chunked)


def _csv(tmp_path: Path, text: str) -> Path:
    df, schema = contract_log(5)
    schema.to_yaml(tmp_path / "schema.yaml")
    p = tmp_path / "log.csv"
    p.write_text(text)
    return p


def test_a_csv_with_a_duplicated_header_name_is_refused(tmp_path, capsys):
    df, _ = contract_log(5)
    text = df.to_csv(index=False).replace(",score", ",price", 1)
    p = _csv(tmp_path, text)
    code, err = _cli(capsys, "validate", str(p))
    assert code == 2 and str(p) in err and "more than once in the header: ['price']" in err


def test_a_csv_with_the_wrong_delimiter_says_so(tmp_path, capsys):
    df, _ = contract_log(5)
    p = _csv(tmp_path, df.to_csv(index=False, sep=";"))
    code, err = _cli(capsys, "validate", str(p))
    assert code == 2 and str(p) in err and "missing required columns" in err and "separated by ';'" in err


def test_a_schema_with_a_text_time_names_the_field_and_the_file(tmp_path, capsys):
    df, schema = contract_log(5)
    df.to_parquet(tmp_path / "log.parquet", index=False)
    schema.to_yaml(tmp_path / "schema.yaml")
    text = (tmp_path / "schema.yaml").read_text()
    (tmp_path / "schema.yaml").write_text(text.replace(f"ts_min: {schema.ts_min}", "ts_min: yesterday"))
    code, err = _cli(capsys, "validate", str(tmp_path / "log.parquet"))
    assert code == 2 and str(tmp_path / "schema.yaml") in err and "'ts_min' must be an integer" in err and "'yesterday'" in err


def test_a_schema_time_range_in_milliseconds_is_refused(tmp_path):
    from iat.schema import Schema, SchemaError

    _, schema = contract_log(5)
    d = schema.to_dict()
    d["ts_max"] = 1_700_000_000_000
    with pytest.raises(SchemaError, match="ts_max 1700000000000 is not a time in seconds"):
        Schema.from_dict(d)


def _iat(*argv: str) -> tuple[int, str]:
    """The ``iat`` command in its own process, as a user runs it: (exit code, stderr)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "iatcli.main", *argv], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    return p.returncode, p.stderr


def test_run_refuses_a_flag_its_pipeline_does_not_take():
    code, err = _iat("run", "data", "--epochs", "3")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: iat run data does not take --epochs")
    assert "Traceback" not in err and "pydantic" not in err


def test_a_bad_training_value_fails_before_any_step_runs():
    from zenml.client import Client

    before = len(Client().list_pipeline_runs(size=1000))
    code, err = _iat("run", "source", "--epochs", "0")
    assert code == 2 and err.strip() == "error: TrainConfig.epochs must be >= 1, got 0"
    assert len(Client().list_pipeline_runs(size=1000)) == before  # no run started


def test_a_failing_step_prints_one_line_not_zenmls_traceback(iat_home):
    """A step that raises (here: a log file that does not exist) ends the CLI with its message in one line."""
    code, err = _iat("run", "data", "--dataset", "file", "--path", str(iat_home / "no-such-log.csv"))
    assert code == 2 and "Traceback" not in err and len(err) < 2_000, err[-3000:]
    assert err.strip().splitlines()[-1] == f"error: instance log not found: {iat_home / 'no-such-log.csv'}"
    code, err = _iat("--debug", "run", "data", "--dataset", "file", "--path", str(iat_home / "no-such-log.csv"))
    assert code != 0 and "Traceback" in err


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import iatcli.main as cli

    def boom(_a):
        raise KeyError("tok_gap")

    monkeypatch.setattr(cli, "_cmd_tokens_inspect", boom)
    code, err = _cli(capsys, "tokens", "inspect", "x")
    assert code == 1 and err == "error: KeyError: 'tok_gap'  (iat --debug ... shows the traceback)"
    with pytest.raises(KeyError):
        main(["--debug", "tokens", "inspect", "x"])


def test_paths_outside_the_data_root_are_refused(monkeypatch, tmp_path):
    from iat.limits import PathOutsideRootError, confined

    monkeypatch.setenv("IAT_DATA_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    assert confined("reports/x", "reports_dir") == tmp_path / "root" / "reports" / "x"
    for bad in ("/etc/passwd", "../outside", str(tmp_path / "root" / ".." / "x")):
        with pytest.raises(PathOutsideRootError, match="is outside the data root"):
            confined(bad, "path")
    (tmp_path / "root" / "link").symlink_to("/etc")
    with pytest.raises(PathOutsideRootError):
        confined("link/passwd", "path")


def test_a_deployed_data_pipeline_cannot_read_or_write_outside_the_data_root(iat_home):
    """What an unauthenticated POST /invoke could pass: the data pipeline's own parameters."""
    from pipelines.data import data_pipeline

    with pytest.raises(ValueError, match="path '/etc/passwd' is outside the data root"):
        data_pipeline(dataset="file", path="/etc/passwd")
    with pytest.raises(ValueError, match="users must be a whole number from 1 to 100,000"):
        data_pipeline(dataset="synthetic", users=10**9)
    with pytest.raises(ValueError, match="reports_dir '/tmp/elsewhere' is outside the data root"):
        data_pipeline(dataset="synthetic", users=60, seed=1, reports_dir="/tmp/elsewhere")
    assert not Path("/tmp/elsewhere").exists()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: "features: [\n", "is not valid YAML: line 2, column 1: expected the node content"),
        (lambda t: t + "\nextra: [1]\n", "'extra' must be a mapping, got list [1]"),
    ],
)
def test_schema_file_problems_are_one_line_naming_the_file(tmp_path, capsys, mutate, expected):
    df, schema = contract_log(5)
    df.to_parquet(tmp_path / "log.parquet", index=False)
    schema.to_yaml(tmp_path / "schema.yaml")
    (tmp_path / "schema.yaml").write_text(mutate((tmp_path / "schema.yaml").read_text()))
    code, err = _cli(capsys, "validate", str(tmp_path / "log.parquet"))
    assert code == 2 and str(tmp_path / "schema.yaml") in err and expected in err


def test_a_csv_header_with_an_unnamed_column_is_refused(tmp_path, capsys):
    df, _ = contract_log(5)
    p = _csv(tmp_path, df.to_csv(index=False).replace(",score", ",", 1))
    code, err = _cli(capsys, "validate", str(p))
    assert code == 2 and "has no name" in err and str(p) in err


def test_config_values_of_the_wrong_type_name_the_parameter(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  users: many\nsource:\n  train: {lr: fast}\n")
    code, err = _iat("run", "data", "--config", str(cfg))
    assert code == 2 and err.strip().splitlines()[-1] == "error: iat run data: parameter 'users' input should be a valid integer, unable to parse string as an integer, got 'many'"
    code, err = _iat("run", "source", "--config", str(cfg))
    assert code == 2 and err.strip() == "error: TrainConfig.lr must be a number, got 'fast'"
    cfg.write_text("data: [\n")
    code, err = _iat("run", "data", "--config", str(cfg))
    assert code == 2 and f"error: config {cfg} is not valid YAML: line 2" in err


def test_a_downstream_run_without_its_source_fails_before_a_ranker_version_exists():
    from zenml.client import Client

    from pipelines.downstream import downstream_pipeline

    spec = {"name": "bad-input-probe", "model": "ranker", "config": {"seq": "din", "iat": "din"}, "tokens": "no_such_source", "L": 8, "base_L": 8}
    with pytest.raises(ValueError, match="no source model iat-source-synthetic-no_such_source: run `iat run source"):
        downstream_pipeline(spec=spec, source="no_such_source")
    with pytest.raises(KeyError):
        Client().get_model("iat-ranker-synthetic-bad-input-probe")  # no empty model (version) left behind


def test_run_parameters_a_caller_can_set_are_bounded():
    """A deployed pipeline's invoke can set epochs, L, n_boot, seeds: none may book the machine for days."""
    from iat.limits import check_run_bounds

    check_run_bounds(epochs=20, L=256, n_boot=200, seeds=[0, 1, 2], processes=2)
    for kw, msg in (({"epochs": 10**9}, "epochs must be 1 to 1000"), ({"L": 0}, "L must be 1 to 4096"),
                    ({"n_boot": -1}, "n_boot must be 0 to 10000"), ({"seeds": list(range(50))}, "seeds must be a list of 1 to 20 seeds")):
        with pytest.raises(ValueError, match=msg):
            check_run_bounds(**kw)
