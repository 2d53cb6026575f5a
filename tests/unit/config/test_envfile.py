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


def test_set_model_keeps_the_file_mode(repo):
    path = repo / "environments" / "prod.yaml"
    path.chmod(0o664)
    set_model(path, 8, "sha256:" + "cd" * 32)
    assert path.stat().st_mode & 0o777 == 0o664
