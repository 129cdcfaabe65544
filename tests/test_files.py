"""Files the library writes for a user: atomic, and with the permissions a plain open() gives
(not mkstemp's owner-only 0600), so that a service running as another user can read them."""

import os
import stat

import pytest
import torch

import mobilenets
from mobilenets.files import atomic_write
from mobilenets.training.checkpoint import save_checkpoint


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saved_models_and_checkpoints_are_readable_by_others(tmp_path, umask_022):
    model = mobilenets.create_model("mobilenet_v1_025", num_classes=3)
    mobilenets.save(model, tmp_path / "saved")
    save_checkpoint(tmp_path / "last.pt", {"x": torch.zeros(2)})
    written = [*(tmp_path / "saved").iterdir(), tmp_path / "last.pt"]
    assert len(written) >= 3
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert torch.equal(torch.load(tmp_path / "last.pt")["x"], torch.zeros(2))


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
