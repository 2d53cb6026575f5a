"""The labels dataset poller's reading side: only new rows, file:line errors naming the
column, a replaced file read again, the environment file's ``labels`` block checked.
(Posting to a real router: ``tests/integration/test_feedback.py``.)"""

from __future__ import annotations

import pytest

from promotion.errors import ConfigError
from promotion.labels import LabelsPoller, LabelsSource


def source(path, column="label", kind="label") -> LabelsSource:
    return LabelsSource(path=path, display=path.name, column=column, kind=kind, request_id_column="request_id",
                        feedback_url="http://127.0.0.1:9/feedback", token_env="T")


def test_only_rows_added_since_the_last_read_and_unlabelled_rows_wait(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("request_id,label,note\nab1,1,x\nab2,,not yet\nab3,true,y\n")
    poller = LabelsPoller(source(f), tmp_path / "cursor.json")
    rows, cursor = poller.read_new()
    assert [item for _, item in rows] == [{"request_id": "ab1", "label": 1}, {"request_id": "ab3", "label": True}]
    assert rows[1][0] == "labels.csv:4"
    poller._save(cursor)
    with open(f, "a") as fh:
        fh.write("ab4,0,z\nab5,1")  # the last line is still being written
    rows, cursor = poller.read_new()
    assert [item["request_id"] for _, item in rows] == ["ab4"] and rows[0][0] == "labels.csv:5"
    poller._save(cursor)
    f.write_text("request_id,label\nzz1,0\n")  # replaced: read from the start
    assert [item["request_id"] for _, item in poller.read_new()[0]] == ["zz1"]


@pytest.mark.parametrize("text,message", [
    ("id,label\nab1,1\n", "labels.csv:1 request_id: column missing (columns: id, label)"),
    ("request_id,label\nab1,1\n,1\n", "labels.csv:3 request_id: empty"),
    ("request_id,label\nab/1,1\n", "labels.csv:2 request_id: must be a request id"),
])
def test_a_bad_dataset_names_file_line_and_column(tmp_path, text, message):
    f = tmp_path / "labels.csv"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        LabelsPoller(source(f), tmp_path / "c.json").read_new()
    assert str(err.value).startswith(message)


def test_regression_values_must_be_numbers(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("request_id,value\nr1,4.5\nr2,abc\n")
    with pytest.raises(ConfigError, match=r"^labels.csv:3 value: must be a finite number"):
        LabelsPoller(source(f, "value", "value"), tmp_path / "c.json").read_new()


def test_parquet_rows_past_the_cursor(tmp_path):
    import pandas as pd

    f = tmp_path / "labels.parquet"
    pd.DataFrame({"request_id": ["a1", "a2"], "label": [1, 0]}).to_parquet(f)
    poller = LabelsPoller(source(f), tmp_path / "c.json")
    rows, cursor = poller.read_new()
    assert [item for _, item in rows] == [{"request_id": "a1", "label": 1}, {"request_id": "a2", "label": 0}]
    poller._save(cursor)
    pd.DataFrame({"request_id": ["a1", "a2", "a3"], "label": [1, 0, 1]}).to_parquet(f)
    rows, _ = poller.read_new()
    assert [item["request_id"] for _, item in rows] == ["a3"] and rows[0][0] == "labels.parquet row 3"


def test_the_environment_files_labels_block_is_validated(repo):
    from promotion.config import Project

    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text() + "labels:\n  path: ../outside.csv\n")
    with pytest.raises(ConfigError, match=r"environments/prod.yaml:\d+ labels.path"):
        Project.discover(repo).environment("prod")
    env_file.write_text(env_file.read_text().replace("../outside.csv", "data/prod-labels.csv"))
    src = LabelsSource.from_environment(Project.discover(repo).environment("prod"), root=repo)
    assert src.path == (repo / "data" / "prod-labels.csv").resolve() and src.kind == "label"
    assert src.feedback_url.endswith("/feedback")
