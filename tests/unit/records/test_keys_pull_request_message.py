"""``promotion keys create`` and ``rotate`` tell the operator how the new signer becomes
trusted: through a merged pull request, not a direct push."""

from __future__ import annotations

from _records_helpers import commit, record

from promotion.cli import main

WANTED = "open a pull request with this change to environments/trust.yaml: records the new key signs count only " \
         "once a merged pull request added it"


def test_create_and_rotate_say_the_trust_change_goes_through_a_pull_request(git_repo, capsys):
    assert main(["--root", str(git_repo), "keys", "create"]) == 0
    out = capsys.readouterr().out
    assert "commit: " in out and WANTED in out
    assert main(["--root", str(git_repo), "keys", "create"]) == 0
    assert WANTED not in capsys.readouterr().out  # nothing changed: nothing to open
    record(git_repo, 3)
    commit(git_repo, "record v3")
    assert main(["--root", str(git_repo), "keys", "rotate"]) == 0
    out = capsys.readouterr().out
    assert "retired key" in out and WANTED in out
