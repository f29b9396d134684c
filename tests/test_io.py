"""Crash-safe writes (entropy_rl.io): a failed write leaves the old file and no temporary."""

from __future__ import annotations

import json
import os

import pytest

from entropy_rl.io import atomic_replace_dir, atomic_write, atomic_write_json, atomic_write_path


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    atomic_write(path, lambda f: f.write(b"old"))
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, lambda f: (f.write(b"half"), 1 / 0))
    assert path.read_bytes() == b"old"
    assert os.listdir(path.parent) == ["x.bin"]
    with pytest.raises(RuntimeError):
        atomic_write_path(path, lambda tmp: (open(tmp, "w").write("half"), (_ for _ in ()).throw(RuntimeError())))
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["x.bin"]


def test_json_and_directory_replacement(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"k": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": 1}
    dest = tmp_path / "model"
    atomic_replace_dir(lambda d: open(os.path.join(d, "config.json"), "w").write("{}"), dest)
    atomic_replace_dir(lambda d: open(os.path.join(d, "weights"), "w").write("w"), dest)
    assert sorted(os.listdir(dest)) == ["weights"]  # replaced whole, not merged

    def broken(d):
        open(os.path.join(d, "partial"), "w").write("p")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_replace_dir(broken, dest)
    assert sorted(os.listdir(dest)) == ["weights"]
    assert sorted(os.listdir(tmp_path)) == ["a.json", "model"]
