"""Checkpoint integrity: our state beside veRL's, a manifest per step, and the choice of the
step a resume may trust.

A step folder is complete only once its manifest exists (written last, after veRL's shards and
our ``entropy_rl_state.pt``); a save cut short leaves the ``entropy_rl_saving`` marker and no
manifest. :func:`choose_checkpoint` validates the tracker's step (files present, sizes and
small files' hashes as recorded) and falls back to the newest step that validates.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from entropy_rl.io import atomic_write as write_atomic

STATE_FILE = "entropy_rl_state.pt"

TRACKER_FILE = "latest_checkpointed_iteration.txt"  # veRL's
MANIFEST_FILE = "entropy_rl_manifest.json"
SAVING_FILE = "entropy_rl_saving"  # present from the start of a save until its manifest exists
_MANIFEST_VERSION = 1
_HASHED = (STATE_FILE, "data.pt")  # small files whose bytes are checked; veRL's shards by size


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_entropy_rl_state(step_dir: str, hooks: Any, sampler: Any) -> str:
    """Write ``<step_dir>/entropy_rl_state.pt`` (hooks: AER, EMA tables; the sampler) atomically."""
    state = {"hooks": hooks.state_dict()}
    if sampler is not None:
        state["sampler"] = sampler.state_dict()
    os.makedirs(step_dir, exist_ok=True)
    # Marks the step as a save in progress: a step folder without a manifest is then either
    # cut short (marker: nothing was lost) or not ours / torn after the fact (no marker: keep it).
    write_atomic(os.path.join(step_dir, SAVING_FILE), lambda f: f.write(b"save in progress\n"))
    path = os.path.join(step_dir, STATE_FILE)
    write_atomic(path, lambda f: torch.save(state, f))
    return path


def load_entropy_rl_state(step_dir: str, hooks: Any, sampler: Any, dataloader: Any, global_step: int) -> None:
    """Restore what :func:`save_entropy_rl_state` wrote. veRL restores the dataloader (and so
    the sampler) from ``data.pt`` except at an epoch boundary; there the sampler is restored
    from our copy and started on its next epoch, with the scores it had."""
    path = os.path.join(step_dir, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"resuming at step {global_step}: {path} is missing (not an entropy-rl run?)")
    state = torch.load(path, weights_only=False)
    hooks.load_state_dict(state["hooks"])
    if sampler is not None and global_step % len(dataloader) == 0:
        sampler.load_state_dict(state["sampler"])
        sampler.set_epoch(sampler.epoch + 1)


def _step_files(step_dir: str) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            if name in (MANIFEST_FILE, SAVING_FILE) or (name.startswith(".") and name.endswith(".tmp")):
                continue
            out.append(os.path.relpath(os.path.join(folder, name), step_dir))
    return out


def write_manifest(step_dir: str, async_shards: bool = False) -> dict:
    """``<step_dir>/entropy_rl_manifest.json``: every file of the step with its size, sha256
    of our state and ``data.pt``. Written last, atomically: its presence means the save
    finished. With veRL's ``async_save`` the shards may still be in flight: only the
    step's top-level files are listed then."""
    files = {}
    for rel in _step_files(step_dir):
        if async_shards and os.sep in rel:
            continue
        full = os.path.join(step_dir, rel)
        entry = {"size": os.path.getsize(full)}
        if rel in _HASHED:
            entry["sha256"] = _sha256(full)
        files[rel] = entry
    manifest = {"version": _MANIFEST_VERSION, "files": files}
    write_atomic(os.path.join(step_dir, MANIFEST_FILE), lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest


def finish_checkpoint(step_dir: str, global_step: int, async_shards: bool = False) -> None:
    """After veRL's save: the manifest, then veRL's tracker rewritten atomically (veRL writes
    it in place; a crash there could leave it empty)."""
    write_manifest(step_dir, async_shards)
    try:
        os.remove(os.path.join(step_dir, SAVING_FILE))
    except FileNotFoundError:
        pass
    if async_shards:
        return  # veRL writes no tracker with async_save
    tracker = os.path.join(os.path.dirname(os.path.abspath(step_dir)), TRACKER_FILE)
    write_atomic(tracker, lambda f: f.write(str(global_step).encode()))


def validate_checkpoint(step_dir: str) -> list[str]:
    """What is wrong with a step folder (empty: it can be resumed): missing or unreadable
    manifest, a listed file missing or of another size or hash, our state not loadable."""
    if not os.path.isdir(step_dir):
        return ["the folder does not exist"]
    mpath = os.path.join(step_dir, MANIFEST_FILE)
    if not os.path.exists(mpath):
        if os.path.exists(os.path.join(step_dir, SAVING_FILE)):
            return [f"no {MANIFEST_FILE}: the save was cut short"]
        return [f"no {MANIFEST_FILE} and no save marker: not a checkpoint entropy-rl finished writing"]
    try:
        with open(mpath, "rb") as f:
            manifest = json.loads(f.read())
        files = manifest["files"]
        if manifest.get("version") != _MANIFEST_VERSION or not isinstance(files, dict):
            raise ValueError(f"version {manifest.get('version')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{MANIFEST_FILE} is unreadable ({type(e).__name__}: {e})"]
    problems = []
    for rel in (STATE_FILE, "data.pt"):
        if rel not in files:
            problems.append(f"{rel} is not in the manifest")
    for rel, entry in files.items():
        full = os.path.join(step_dir, rel)
        if not os.path.isfile(full):
            problems.append(f"{rel} is missing")
            continue
        size = os.path.getsize(full)
        if size != entry.get("size"):
            problems.append(f"{rel} has {size} bytes, the manifest says {entry.get('size')} (truncated?)")
        elif "sha256" in entry and _sha256(full) != entry["sha256"]:
            problems.append(f"{rel} does not match its sha256 in the manifest")
    if not problems:
        try:
            state = torch.load(os.path.join(step_dir, STATE_FILE), weights_only=False)
            if not isinstance(state, dict) or "hooks" not in state:
                problems.append(f"{STATE_FILE} holds no entropy-rl state")
        except Exception as e:  # any unpickling failure means the state cannot be resumed
            problems.append(f"{STATE_FILE} cannot be loaded ({type(e).__name__}: {e})")
    return problems


def _step_of(name: str) -> int | None:
    if not name.startswith("global_step_"):
        return None
    tail = name[len("global_step_") :]
    return int(tail) if tail.isdigit() else None


def choose_checkpoint(root: str) -> tuple[str | None, list[str]]:
    """The checkpoint ``trainer.resume_mode=auto`` resumes, and warnings.

    veRL's tracker names the last step saved. If that step folder fails
    :func:`validate_checkpoint` (or the tracker is unreadable), the newest earlier
    ``global_step_*`` that validates is chosen, with a warning naming each bad checkpoint
    and what is wrong. No tracker: ``(None, [])`` (a fresh run, as in veRL). A tracker
    but no valid checkpoint: if every rejected step is a save that was cut short (its
    ``entropy_rl_saving`` marker is still there), ``(None, warnings)``, a fresh run
    announced; otherwise (a finished checkpoint went bad, or a folder entropy-rl did not
    write) ``RuntimeError`` naming every bad checkpoint and the ways out.
    """
    tracker = os.path.join(root, TRACKER_FILE)
    if not os.path.exists(tracker):
        return None, []
    steps = sorted((k for k in map(_step_of, os.listdir(root)) if k is not None), reverse=True)
    warnings, rejected = [], []
    only_cut_short = True  # every rejected step is an unfinished save: nothing to lose
    try:
        with open(tracker, "rb") as f:
            named = int(f.read().decode().strip())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        named = None
        rejected.append(f"{tracker} is unreadable ({type(e).__name__}: {e})")
    candidates = steps if named is None else [named] + [k for k in steps if k < named]
    for k in candidates:
        step_dir = os.path.join(root, f"global_step_{k}")
        problems = validate_checkpoint(step_dir)
        if not problems:
            if rejected:
                warnings.append(
                    f"[entropy-rl] WARNING: resuming from {step_dir} instead of the checkpoint the tracker names: "
                    + "; ".join(rejected)
                )
            return step_dir, warnings
        rejected.append(f"checkpoint {step_dir} is incomplete or corrupt: {'; '.join(problems)}")
        only_cut_short &= problems[0] in ("the folder does not exist", f"no {MANIFEST_FILE}: the save was cut short")
    if only_cut_short:  # e.g. the first save was cut short: start over, announced
        warnings.append(
            f"[entropy-rl] WARNING: no finished checkpoint in {root}, training from step 0:\n  " + "\n  ".join(rejected)
        )
        return None, warnings
    # A finished checkpoint went bad (or a folder is not ours): starting over would later
    # overwrite it. The user decides.
    raise RuntimeError(
        f"no usable checkpoint in {root}:\n  "
        + "\n  ".join(rejected)
        + "\n  To start over: trainer.resume_mode=disable or a new trainer.default_local_dir; to start "
        "from a checkpoint's weights only: actor_rollout_ref.model.path=<its global_step_N>/actor/huggingface"
    )
