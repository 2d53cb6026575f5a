from promotion._internal.envfile import set_model


def test_set_model_keeps_comments_and_layout(repo):
    path = repo / "environments" / "prod.yaml"
    before = path.read_text()
    assert set_model(path, 7, "sha256:" + "ab" * 32) is True
    after = path.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("  version: 1", "  version: 7"), (before.splitlines()[9], "  digest: sha256:" + "ab" * 32)]
    assert len(before.splitlines()) == len(after.splitlines())
    assert set_model(path, 7, "sha256:" + "ab" * 32) is False
