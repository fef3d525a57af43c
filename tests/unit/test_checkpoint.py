"""Checkpoints: verified on load, damaged ones skipped with a warning, never a silent restart."""

import io
import re
import warnings

import pytest
import torch

from rlhp_core.checkpoint import (CheckpointError, CheckpointWarning, complete_checkpoints, load_latest,
                                  read_checkpoint, save_checkpoint)

WEIGHTS = torch.arange(4096, dtype=torch.float32)


def three(run):
    """Checkpoints at steps 10, 20, 30 (KEEP=2 leaves 20 and 30); returns the step-20 and step-30 dirs."""
    for step in (10, 20, 30):
        save_checkpoint(run, step, {"w": WEIGHTS + step})
    return complete_checkpoints(run)


def no_warnings(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_round_trip_keeps_newest(tmp_path):
    older, newest = three(tmp_path)
    assert [older.name, newest.name] == ["step-000000000020", "step-000000000030"]
    blob = no_warnings(load_latest, tmp_path)
    assert blob["step"] == 30 and torch.equal(blob["state"]["w"], WEIGHTS + 30)


def test_fresh_run_dir_is_none(tmp_path):
    assert load_latest(tmp_path) is None
    (tmp_path / "checkpoints" / ".tmp-step-000000000010-123").mkdir(parents=True)  # a crash mid-write
    assert no_warnings(load_latest, tmp_path) is None


def test_flipped_bytes_fall_back_with_warning_naming_both(tmp_path):
    older, newest = three(tmp_path)
    data = bytearray((newest / "state.pt").read_bytes())
    at = data.find((WEIGHTS + 30).numpy().tobytes()[4000:4064])
    assert at > 0
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    (newest / "state.pt").write_bytes(bytes(data))
    # without the checksum this would load: the unpickler does not notice changed tensor bytes
    assert torch.load(io.BytesIO(bytes(data)), weights_only=False)["step"] == 30
    with pytest.warns(CheckpointWarning) as caught:
        blob = load_latest(tmp_path)
    assert blob["step"] == 20 and torch.equal(blob["state"]["w"], WEIGHTS + 20)
    message = str(caught[0].message)
    assert str(older) in message and newest.name in message and "SHA-256" in message


def test_truncated_newest_falls_back(tmp_path):
    older, newest = three(tmp_path)
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(CheckpointWarning, match=re.escape(str(older))) as caught:
        assert load_latest(tmp_path)["step"] == 20
    assert newest.name in str(caught[0].message) and "truncated" in str(caught[0].message)


def test_unfinished_newest_falls_back(tmp_path):
    save_checkpoint(tmp_path, 10, {"w": 1})
    half = tmp_path / "checkpoints" / "step-000000000020"
    half.mkdir()
    (half / "state.pt").write_bytes(b"partial")  # no COMPLETE marker
    with pytest.warns(CheckpointWarning, match="step-000000000020: .* has no COMPLETE marker"):
        assert load_latest(tmp_path)["step"] == 10


def test_all_damaged_is_an_error_naming_each(tmp_path):
    older, newest = three(tmp_path)
    (older / "state.pt").write_bytes(b"\x00garbage")
    (newest / "COMPLETE").write_text("{not json")
    with pytest.raises(CheckpointError) as caught:
        load_latest(tmp_path)
    message = str(caught.value)
    assert "none of the 2 checkpoint(s)" in message and "refusing to start over from step 0" in message
    assert f"{older.name}: {older / 'state.pt'} is truncated" in message
    assert f"{newest.name}: {newest / 'COMPLETE'} is unreadable" in message


def test_missing_state_or_binary_marker_refused(tmp_path):
    older, newest = three(tmp_path)
    (newest / "state.pt").unlink()
    (older / "COMPLETE").write_bytes(bytes(range(256)))
    with pytest.raises(CheckpointError) as caught:
        load_latest(tmp_path)
    assert f"{newest / 'state.pt'} cannot be read: No such file or directory" in str(caught.value)
    assert f"{older / 'COMPLETE'} is unreadable" in str(caught.value)


def test_markers_removed_is_an_error_not_a_fresh_start(tmp_path):
    for path in three(tmp_path):
        (path / "COMPLETE").unlink()
    with pytest.raises(CheckpointError, match="(?s)step-000000000030: .*no COMPLETE marker.*step-000000000020"):
        load_latest(tmp_path)


def test_damaged_newer_checkpoint_does_not_push_out_good_ones(tmp_path):
    older, newest = three(tmp_path)
    (newest / "state.pt").write_bytes(b"damaged")
    with pytest.warns(CheckpointWarning):
        assert load_latest(tmp_path)["step"] == 20
    save_checkpoint(tmp_path, 25, {"w": WEIGHTS})  # the resumed run's next checkpoint
    assert older.is_dir() and newest.is_dir()  # two good ones kept; the damaged one left to inspect
    (tmp_path / "checkpoints" / "step-000000000025" / "state.pt").write_bytes(b"damaged too")
    with pytest.warns(CheckpointWarning):
        assert load_latest(tmp_path)["step"] == 20


def legacy(path):
    """Rewrite a checkpoint's marker the way the code before checksums wrote it: the bare step."""
    (path / "COMPLETE").write_text(str(int(path.name.split("-")[1])))
    return path


def test_checkpoint_from_before_checksums_loads_with_warning(tmp_path):
    older, newest = map(legacy, three(tmp_path))
    with pytest.warns(CheckpointWarning, match="before checkpoints carried a checksum"):
        assert load_latest(tmp_path)["step"] == 30
    (newest / "state.pt").write_bytes(b"\x00garbage")
    with pytest.warns(CheckpointWarning) as caught:
        assert load_latest(tmp_path)["step"] == 20
    unverified, fallback = (str(w.message) for w in caught)
    assert unverified == f"{older} was written before checkpoints carried a checksum; loaded it unverified"
    assert re.match(f"(?s)resuming from {re.escape(str(older))}, .*{newest.name}: .*corrupt or not a torch file",
                    fallback)
    torch.save({"model": 1}, older / "state.pt")
    with pytest.raises(CheckpointError, match="is not an rlhp checkpoint"):
        read_checkpoint(older)
    with pytest.raises(CheckpointError, match="none of the 2"):
        load_latest(tmp_path)
