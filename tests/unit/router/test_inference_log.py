from services.router.inference_log import InferenceLog, read_inference_log


def test_log_rotates_and_reads_back_newest_rows(tmp_path):
    log = InferenceLog(tmp_path, max_bytes=2000, pid=42)
    for i in range(100):
        log.write(1 if i % 2 else 2, {"amount": float(i), "hour": 3.0}, score=i / 100, label=int(i > 50))
    log.write(3, {"amount": 1.0, "hour": 1.0}, score=0.5, label=1, shadow=True)
    log.close()
    files = sorted(p.name for p in (tmp_path / "inference" / "v1").iterdir())
    assert files == ["42.jsonl", "42.jsonl.1"]  # rotated, one older file kept
    assert sum(p.stat().st_size for p in (tmp_path / "inference" / "v1").iterdir()) < 2 * 2000 + 200

    v1 = read_inference_log(tmp_path, version=1)
    assert set(v1["version"]) == {1}
    assert {"amount", "hour", "score", "label", "version", "ts", "shadow"} <= set(v1.columns)
    assert v1["amount"].iloc[-1] == 99.0  # newest kept
    assert list(v1["ts"]) == sorted(v1["ts"])

    newest = read_inference_log(tmp_path, limit=5)
    assert len(newest) == 5 and newest["version"].iloc[-1] == 3 and bool(newest["shadow"].iloc[-1])
    assert len(read_inference_log(tmp_path, include_shadow=False).query("version == 3")) == 0


def test_empty_log_is_an_empty_frame(tmp_path):
    assert read_inference_log(tmp_path).empty


def test_request_path_writes_stay_in_memory_until_the_flush(tmp_path):
    """A logged request costs no system call: lines reach the file at the background flush
    (about once a second), and a reopened log keeps counting toward rotation."""
    log = InferenceLog(tmp_path, max_bytes=3000, pid=5)
    log.write(1, {"amount": 1.0}, score=0.1, label=0)
    path = tmp_path / "inference" / "v1" / "5.jsonl"
    assert path.stat().st_size == 0
    for i in range(5):
        log.write(1, {"amount": float(i)}, score=0.1, label=0)
    assert path.stat().st_size == 0
    log.flush()
    size = path.stat().st_size
    assert size > 0 and len(read_inference_log(tmp_path, version=1)) == 6
    log.close()
    again = InferenceLog(tmp_path, max_bytes=size + 100, pid=5)  # a restarted worker appends
    for i in range(3):
        again.write(1, {"amount": float(i)}, score=0.1, label=0)
    again.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["5.jsonl", "5.jsonl.1"]
