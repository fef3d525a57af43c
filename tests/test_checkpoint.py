import torch
import pytest

from rlhp_core.checkpoint import CheckpointError, complete_checkpoints, load_latest, read_checkpoint, save_checkpoint


def test_round_trip_keeps_newest(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, {"w": torch.tensor([float(step)])})
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000000000020", "step-000000000030"]
    assert load_latest(tmp_path)["state"]["w"].item() == 30.0


def test_half_written_is_ignored(tmp_path):
    save_checkpoint(tmp_path, 10, {"w": 1})
    half = tmp_path / "checkpoints" / "step-000000000020"
    half.mkdir()
    (half / "state.pt").write_bytes(b"partial")  # no COMPLETE marker: a crash mid-write
    assert load_latest(tmp_path)["step"] == 10


def test_corrupt_and_foreign_refused(tmp_path):
    path = save_checkpoint(tmp_path, 10, {"w": 1})
    (path / "state.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_latest(tmp_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": 1}, foreign)
    with pytest.raises(CheckpointError, match="is not an rlhp checkpoint"):
        read_checkpoint(foreign)
