"""The artifact gate: unsafe pickles are named and never loaded; declared requirements are checked."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from _gate_helpers import checks, gate, log_version, propose, registry, write_policy
from promotion.gates import _requirements
from promotion.gates.artifact import scan_directory


class Payload:
    """Unpickling this runs a shell command: what a poisoned model artifact carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _estimator():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.arange(40, dtype=float).reshape(-1, 2)
    return LogisticRegression().fit(X, (X[:, 0] > 20).astype(int))


# -- scanning ------------------------------------------------------------------------------

def test_a_pickle_that_imports_os_system_is_named_whatever_its_file_is_called(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Payload("true")))
    # protocol 0 has no header, and the name says XGBoost: the first pickle still parses to STOP
    (tmp_path / "weights.xgb").write_bytes(pickle.dumps(Payload("true"), protocol=0))
    (tmp_path / "requirements.txt").write_text("scikit-learn\n")
    found = scan_directory(tmp_path)
    assert [str(f) for f in found.unsafe] == ["model.pkl: posix.system", "weights.xgb: posix.system"]
    assert found.files == 2 and not found.code and not found.errors


def test_code_by_value_and_source_files_are_code_not_exploits(tmp_path):
    import cloudpickle

    def rule(x):
        return x * 2

    (tmp_path / "python_model.pkl").write_bytes(cloudpickle.dumps(rule))
    (tmp_path / "model_code.py").write_text("import mlflow\n")
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: my_team.loader\n")
    found = scan_directory(tmp_path)
    assert not found.unsafe
    assert found.code == ("model_code.py (Python source)",
                          "python_model.pkl (pickled code: rebuilds functions or classes by value)",
                          "MLmodel (loader_module my_team.loader)")


def test_a_symbolic_link_cannot_be_scanned(tmp_path):
    (tmp_path / "model.pkl").symlink_to("/etc/hostname")
    assert scan_directory(tmp_path).errors == ("model.pkl: a symbolic link",)


# -- requirements --------------------------------------------------------------------------

def test_declared_requirements_are_checked_against_what_is_installed(tmp_path):
    sklearn = metadata.version("scikit-learn")
    (tmp_path / "requirements.txt").write_text(
        f"mlflow=={metadata.version('mlflow')}\n"
        f"scikit-learn>={sklearn}  # a comment\n"
        "xgboost\n"                                 # installed as xgboost-cpu
        "definitely-not-installed-pkg==1.0\n"
        "numpy<1.0\n"
        'pywin32>=300; sys_platform == "win32"\n'   # not for this platform
        "--index-url https://pypi.example.invalid/simple\n"
        "-r extra.txt\n"
        "not a requirement!!\n"
        "-e ./local\n")
    (tmp_path / "extra.txt").write_text("pandas>=99\n")
    (tmp_path / "python_env.yaml").write_text("python: 3.11\ndependencies:\n- -r requirements.txt\n- scipy>=99\n")
    (tmp_path / "conda.yaml").write_text("dependencies:\n- python=3.11\n- pip:\n  - psutil==0.0.1\n")
    got = _requirements.check(tmp_path)
    numpy = metadata.version("numpy")
    assert got.unmet == ["requirements.txt:4 definitely-not-installed-pkg==1.0: not installed",
                         f"requirements.txt:5 numpy<1.0: installed {numpy}",
                         f"extra.txt:1 pandas>=99: installed {metadata.version('pandas')}",
                         f"python_env.yaml:4 scipy>=99: installed {metadata.version('scipy')}",
                         "conda.yaml:4 psutil==0.0.1: installed " + metadata.version("psutil")]
    assert sorted(got.problems)[0] == "requirements.txt:10 -e ./local: an editable requirement cannot be checked"
    assert sorted(got.problems)[1].startswith("requirements.txt:9 not a requirement!!: not a requirement (")
    assert len(got.problems) == 2
    assert f"scikit-learn>={sklearn} ({sklearn})" in got.checked
    assert any(c.startswith("xgboost (") and " as xgboost-cpu)" in c for c in got.checked)
    assert got.sources == ["requirements.txt", "python_env.yaml", "conda.yaml"]
    assert _requirements.check(tmp_path, ignore=("numpy", "definitely-not-installed-pkg", "pandas", "scipy",
                                                 "psutil")).unmet == []


def test_an_include_cannot_leave_the_model_directory(tmp_path):
    (tmp_path / "requirements.txt").write_text("-r ../../etc/requirements.txt\n")
    assert _requirements.check(tmp_path).problems == [
        "requirements.txt:1 -r ../../etc/requirements.txt: not a file inside the model directory"]


def test_the_python_version_the_model_was_saved_with(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    python_version: 3.8.10\n")
    theirs, here = _requirements.python_mismatch(tmp_path)
    assert theirs == "3.8.10" and here.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")


# -- the gate, on versions in a real registry ---------------------------------------------

def test_a_poisoned_model_blocks_and_no_gate_loads_it(repo, tmp_path, capsys):
    marker = tmp_path / "pwned"
    model = _estimator()
    model.payload = Payload(f"touch {marker}")
    reg = registry(repo)
    version, digest = log_version(reg, model, serialization_format="cloudpickle")
    propose(repo, version, digest)
    write_policy(repo, "  artifact: {}\n  cost: {}\n")

    code, doc = gate(repo, capsys)
    found = checks(doc)
    assert code == 1
    assert found["artifact.pickle"]["verdict"] == "BLOCK"
    assert found["artifact.pickle"]["message"] == "v1: unsafe content: model.pkl: posix.system"
    cost = [c for c in doc["gates"][1]["checks"]]
    assert cost and all(c["verdict"] == "BLOCK" for c in cost)
    assert "v1 is not loaded: its artifact imports model.pkl: posix.system (unsafe)" in cost[0]["message"]
    assert not marker.exists()

    # the artifact is what the scanner says: loading it runs the command
    path = reg.artifact_path("fraud-detector", version)
    subprocess.run([sys.executable, "-c", f"import mlflow.sklearn; mlflow.sklearn.load_model({str(path)!r})"],
                   capture_output=True, timeout=120)
    assert marker.exists()


def test_requirements_the_serving_environment_lacks_block_naming_them(repo, capsys):
    reg = registry(repo)
    version, digest = log_version(reg, _estimator(), serialization_format="skops",
                                  pip_requirements=["scikit-learn==0.0.1", "xgboost"])
    propose(repo, version, digest)
    write_policy(repo, "  artifact: {}\n")
    code, doc = gate(repo, capsys)
    found = checks(doc)
    assert code == 1
    assert found["artifact.pickle"]["verdict"] == "PASS" and "no unsafe import" in found["artifact.pickle"]["message"]
    assert found["artifact.code"]["verdict"] == "PASS" and found["artifact.code"]["message"] == "v1 brings no code of its own"
    req = found["artifact.requirements"]
    assert req["verdict"] == "BLOCK"
    assert f"requirements.txt:2 scikit-learn==0.0.1: installed {metadata.version('scikit-learn')}" in req["message"]
    assert "xgboost" not in req["message"].split("lacks:")[1]
    assert found["artifact.python"]["verdict"] == "PASS"


def test_code_is_listed_for_review_and_can_be_refused(repo, capsys):
    import mlflow.pyfunc

    class Doubler(mlflow.pyfunc.PythonModel):  # defined in a function: cloudpickle keeps it by value
        def predict(self, context, model_input, params=None):
            return model_input * 2

    reg = registry(repo)
    version, digest = log_version(reg, Doubler(), flavor="pyfunc", pip_requirements=["mlflow"])
    propose(repo, version, digest)
    write_policy(repo, "  artifact: {}\n")
    code, doc = gate(repo, capsys)
    found = checks(doc)
    assert code == 0, doc
    assert found["artifact.code"]["message"].startswith("v1 runs code at load: python_model.pkl (pickled code")
    write_policy(repo, "  artifact: {allow_code: false}\n")
    code, doc = gate(repo, capsys)
    assert code == 1 and checks(doc)["artifact.code"]["verdict"] == "BLOCK"
    assert checks(doc)["artifact.code"]["line"] == 4
