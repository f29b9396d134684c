"""Exact resume under faults, on CPU, at the level of our trainer hooks and checkpoint files.

A "process" is a fresh set of objects — :class:`~recipe.sent.hooks.EntropyHooks` (AER
controller, semantic-entropy EMA tables), the curriculum sampler inside a torchdata
``StatefulDataLoader`` (as veRL builds it) and an :class:`~recipe.sent.ray_trainer.EntropyRLTrainer`
shell whose ``_save_checkpoint`` / ``_load_checkpoint`` are the real ones, over veRL's real
``RayPPOTrainer`` save / load (only the actor worker group is a fake that writes a shard).
:func:`fit` mirrors the shape of veRL's ``RayPPOTrainer.fit`` loop (load, epochs of the
dataloader, save every ``save_freq`` steps and at the last). Batches are synthetic and a
pure function of (step, rows), so a replayed step must reproduce the uninterrupted run
bit for bit: data order, curriculum stage and scores, AER state (α_t, H₀, H*), the
semantic-entropy tables and the fake model weights are compared with ``==``.

Faults: a process is killed at seeded random steps (between steps, right after a save, at
an epoch boundary, in the middle of a save at several phases, and by a torn file after a
save), and the next process resumes from what is on disk.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from torchdata.stateful_dataloader import StatefulDataLoader

from entropy_rl.curriculum import CurriculumConfig, SemanticEntropyCurriculumSampler
from recipe.sent import checkpoint
from recipe.sent.checkpoint import (
    MANIFEST_FILE,
    SAVING_FILE,
    STATE_FILE,
    TRACKER_FILE,
    choose_checkpoint,
    validate_checkpoint,
)
from recipe.sent.hooks import FIELD_ENTROPY_COEF, EntropyHooks
from recipe.sent.ray_trainer import EntropyRLTrainer, curriculum_kwargs

CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "conf"))
N_ROWS, BATCH, N_ROLL, T = 22, 4, 4, 8  # 5 steps per epoch (drop_last drops 2 rows)
EPOCHS, SAVE_FREQ = 3, 2
STEPS_PER_EPOCH = N_ROWS // BATCH
TOTAL = EPOCHS * STEPS_PER_EPOCH  # 15
SHARD = "actor/model_world_size_1_rank_0.pt"
ANSWERS = ["1", "2", "3", "1/2", "0.5", None]


class Killed(Exception):
    """The process dies here; only what is on disk survives."""


@pytest.fixture(scope="module")
def base_cfg():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(
            config_name="entropy_rl",
            overrides=[
                "method=sent_aer",
                "entropy_rl.curriculum.adaptive=true",
                "entropy_rl.curriculum.num_stages=2",
                "entropy_rl.curriculum.stage_epochs=1",  # a pass per stage: 3 epochs cross both stages 3 times
                f"data.train_batch_size={BATCH}",
                f"trainer.save_freq={SAVE_FREQ}",
                f"trainer.total_epochs={EPOCHS}",
                "entropy_rl.token_kl.cov_fraction=0.05",
                "entropy_rl.aer.anchor_steps=3",
                "entropy_rl.aer.alpha_max=0.5",
                "entropy_rl.aer.rho=0.8",
                "trainer.resume_mode=auto",
            ],
        )
    return cfg


def config_in(base_cfg, ckpt_dir: Path):
    cfg = copy.deepcopy(base_cfg)
    with open_dict(cfg):
        cfg.trainer.default_local_dir = str(ckpt_dir)
    return cfg


def initial_scores() -> list[float]:
    """The scored table's H_SE (ties on purpose: broken by row index)."""
    return [((i * 7) % 5) / 4 for i in range(N_ROWS)]


class IdxDataset(torch.utils.data.Dataset):
    def __len__(self):
        return N_ROWS

    def __getitem__(self, i):
        return i


class FakeActor:
    """The actor worker group's checkpoint calls: one shard holding the fake weights."""

    def __init__(self, proc):
        self.proc, self.loaded = proc, []
        self.fail_after_shard = False

    def save_checkpoint(self, local_path, remote_path, global_step, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)
        torch.save(
            {"weights": self.proc.weights.clone(), "step": global_step},
            os.path.join(local_path, os.path.basename(SHARD)),
        )
        if self.fail_after_shard:
            raise Killed("during veRL's save, after the shards")

    def load_checkpoint(self, local_path, del_local_after_load=False):
        self.loaded.append(local_path)
        self.proc.weights = torch.load(os.path.join(local_path, os.path.basename(SHARD)))["weights"]


class Process:
    """Everything a training process holds in memory, built from scratch."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.hooks = EntropyHooks(cfg.entropy_rl)
        frame = pd.DataFrame({"semantic_entropy": initial_scores()})
        self.sampler = SemanticEntropyCurriculumSampler(frame, CurriculumConfig(**curriculum_kwargs(cfg)))
        self.hooks.sampler = self.sampler
        # as RayPPOTrainer._create_dataloader builds it
        self.dataloader = StatefulDataLoader(
            IdxDataset(), batch_size=BATCH, num_workers=0, drop_last=True, sampler=self.sampler
        )
        self.weights = torch.zeros(3, dtype=torch.float64)
        self.actor = FakeActor(self)
        self.resumed_at = None
        t = object.__new__(EntropyRLTrainer)  # the real methods; no Ray, no workers
        t.config, t.entropy_rl, t.hooks = cfg, cfg.entropy_rl, self.hooks
        t.train_dataloader, t.actor_rollout_wg, t.use_critic, t.global_steps = self.dataloader, self.actor, False, 0
        self.trainer = t

    def snapshot(self) -> dict:
        aer = self.hooks.aer
        return {
            "aer": aer.state_dict(),
            "alpha": aer.alpha,
            "h0": aer.h0,
            "target": aer.target,
            "se_table": dict(self.hooks.se_table),
            "acc_table": dict(self.hooks.acc_table),
            "scores": self.sampler.scores.tolist(),
            "stage": self.sampler.current_stage,
            "epoch": self.sampler.epoch,
            "weights": self.weights.tolist(),
        }


def synthetic_batch(step: int, rows: list[int]) -> dict:
    """The step's rollouts as the hooks see them: a pure function of (step, rows). The token
    entropy decays with the step (a collapsing policy), so AER's α_t moves off zero."""
    g = torch.Generator().manual_seed(step * 1_000_003 + sum((j + 1) * 7919 * r for j, r in enumerate(rows)))
    b = len(rows) * N_ROLL
    lengths = torch.randint(1, T + 1, (b,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    entropy = torch.rand(b, T, generator=g, dtype=torch.float32) * 2.0 * 0.8**step * mask
    old_lp = -torch.rand(b, T, generator=g) * 3 * mask
    adv = torch.randn(b, T, generator=g) * mask
    pick = torch.randint(0, len(ANSWERS), (b,), generator=g).tolist()
    preds = [ANSWERS[k] for k in pick]
    correct = [float(p in ("1/2", "0.5")) for p in preds]
    uids = [f"{step}-{r}" for r in rows for _ in range(N_ROLL)]
    per_resp_rows = [r for r in rows for _ in range(N_ROLL)]
    seq_lp = (old_lp * mask).sum(-1).double().tolist()
    return dict(
        entropy=entropy,
        old_log_prob=old_lp,
        advantages=adv,
        response_mask=mask,
        correct=correct,
        uids=uids,
        rows=per_resp_rows,
        preds=preds,
        seq_logprobs=seq_lp,
    )


def fit(proc: Process, ref: dict | None, seen: dict, kill: tuple[int, str] | None = None):
    """veRL's fit() shape. ``ref``: the uninterrupted run's per-step snapshots to compare each
    executed step with (None: this is the reference, record into ``seen``)."""
    t, dl = proc.trainer, proc.dataloader
    t.global_steps = 0
    t._load_checkpoint()
    start = proc.resumed_at = t.global_steps
    current_epoch = t.global_steps // len(dl)
    t.global_steps += 1
    for _ in range(current_epoch, EPOCHS):
        for batch in dl:
            step = t.global_steps
            rows = batch.tolist()
            fields, _ = proc.hooks.on_batch(**synthetic_batch(step, rows))
            proc.weights = proc.weights * 0.5 + torch.stack(
                [fields[FIELD_ENTROPY_COEF].double().sum(), torch.tensor(float(step)), torch.tensor(float(sum(rows)))]
            )
            snap = dict(proc.snapshot(), rows=rows)
            if ref is None:
                seen[step] = snap
            else:
                assert snap == ref[step], (
                    f"step {step} after a resume from step {start} differs from the uninterrupted run"
                )
                seen[step] = snap
            is_last = step >= TOTAL
            if kill == (step, "between_steps"):
                raise Killed(step)
            if SAVE_FREQ > 0 and (is_last or step % SAVE_FREQ == 0):
                save(proc, step, kill)
            t.global_steps += 1
            if is_last:
                return start
    return start


def save(proc: Process, step: int, kill):
    """``trainer._save_checkpoint()``, with the requested fault injected."""
    mode = kill[1] if kill is not None and kill[0] == step else None
    root = proc.cfg.trainer.default_local_dir
    if mode == "in_verl_save":  # shards written, no data.pt, no tracker
        proc.actor.fail_after_shard = True
    real_finish = checkpoint.finish_checkpoint

    def finish_killed(*a, **k):  # veRL wrote the tracker; the process dies before our manifest
        raise Killed("after veRL's tracker, before the manifest")

    if mode == "before_manifest":
        checkpoint.finish_checkpoint = finish_killed
    try:
        proc.trainer._save_checkpoint()
    finally:
        checkpoint.finish_checkpoint = real_finish
        proc.actor.fail_after_shard = False
    if mode == "after_save":
        raise Killed(step)
    if mode == "torn_state":  # the file system lost the tail of our state after the save
        path = os.path.join(root, f"global_step_{step}", STATE_FILE)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise Killed(step)


def reference_run(base_cfg, tmp: Path) -> dict:
    seen: dict = {}
    fit(Process(config_in(base_cfg, tmp)), None, seen)
    assert sorted(seen) == list(range(1, TOTAL + 1))
    return seen


def kill_schedule(seed: int, n: int = 5) -> list[tuple[int, str]]:
    """Seeded kill points at increasing steps; always one mid-epoch, one at an epoch
    boundary and one right after a save, the rest drawn from every fault mode."""
    rng = random.Random(seed)
    save_steps = [s for s in range(1, TOTAL) if s % SAVE_FREQ == 0]
    boundary = rng.choice([s for s in range(STEPS_PER_EPOCH, TOTAL, STEPS_PER_EPOCH)])
    mid = rng.choice([s for s in range(2, TOTAL) if s % STEPS_PER_EPOCH and s % SAVE_FREQ])
    after = rng.choice([s for s in save_steps if s not in (boundary, mid)])
    chosen = {boundary: "between_steps", mid: "between_steps", after: "after_save"}
    modes = ["between_steps", "after_save", "in_verl_save", "before_manifest", "torn_state"]
    while len(chosen) < n:
        s = rng.randrange(1, TOTAL)
        if s not in chosen:
            chosen[s] = rng.choice(modes if s in save_steps else ["between_steps"])
    return sorted(chosen.items())


def run_with_kills(base_cfg, tmp: Path, ref: dict, schedule) -> dict:
    cfg = config_in(base_cfg, tmp)
    seen: dict = {}
    resumes, restarts = [], 0
    for kill in [*schedule, None]:
        while True:
            proc = Process(cfg)  # a new process: nothing survives but the files
            try:
                fit(proc, ref, seen, kill)
            except Killed:
                break
            except RuntimeError as e:
                # every finished checkpoint is torn: the run refuses to guess (a restart would
                # overwrite them); the user starts over, as the message says
                assert "no usable checkpoint" in str(e) and "trainer.resume_mode=disable" in str(e), e
                shutil.rmtree(cfg.trainer.default_local_dir)
                restarts += 1
                continue
            finally:
                resumes.append(proc.resumed_at)
            assert kill is None, f"kill point {kill} was never reached"
            break
    assert sorted(seen) == list(range(1, TOTAL + 1))
    assert proc.snapshot() == {k: v for k, v in ref[TOTAL].items() if k != "rows"}
    return {"resumes": resumes, "final": proc, "restarts": restarts}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_at_random_steps_resumes_exactly(base_cfg, tmp_path, seed, capsys):
    ref = reference_run(base_cfg, tmp_path / "ref")
    # the reference exercises what must be restored: stages, moving α_t, an anchored H₀
    assert {ref[s]["stage"] for s in ref} == {0, 1} and {ref[s]["epoch"] for s in ref} == {0, 1, 2}
    assert ref[TOTAL]["h0"] is not None and ref[TOTAL]["alpha"] > 0 and len({ref[s]["alpha"] for s in ref}) > 5
    assert ref[TOTAL]["scores"] != initial_scores()  # the adaptive refresh moved the table
    schedule = kill_schedule(seed)
    out = run_with_kills(base_cfg, tmp_path / "run", ref, schedule)
    log = capsys.readouterr().out
    # every fault left a checkpoint to resume from; torn / unfinished ones were detected and skipped
    for step, mode in schedule:
        if mode in ("torn_state", "before_manifest"):
            bad = os.path.join(tmp_path / "run", f"global_step_{step}")
            assert f"checkpoint {bad} is incomplete or corrupt" in log, (step, mode)
    assert len(out["resumes"]) == len(schedule) + 1 and out["resumes"][0] == 0


def test_schedules_cover_the_required_kill_points():
    for seed in range(3):
        sched = dict(kill_schedule(seed))
        assert len(sched) == 5
        assert any(s % STEPS_PER_EPOCH == 0 for s in sched)  # an epoch boundary
        assert any(s % STEPS_PER_EPOCH and mode == "between_steps" for s, mode in sched.items())  # mid-epoch
        assert "after_save" in sched.values()


@pytest.mark.parametrize("mode", ["in_verl_save", "before_manifest", "torn_state", "after_save"])
def test_each_fault_mode_at_an_epoch_boundary(base_cfg, tmp_path, mode, capsys):
    ref = reference_run(base_cfg, tmp_path / "ref")
    step = 2 * STEPS_PER_EPOCH  # 10: a save step and an epoch boundary
    out = run_with_kills(base_cfg, tmp_path / "run", ref, [(5, "between_steps"), (step, mode)])
    expected_resume = {"in_verl_save": 8, "before_manifest": 8, "torn_state": 8, "after_save": 10}[mode]
    assert out["resumes"] == [0, 4, expected_resume]
    warned = "is incomplete or corrupt" in capsys.readouterr().out
    assert warned == (mode in ("before_manifest", "torn_state"))


@pytest.mark.skipif(os.environ.get("ENTROPY_RL_SOAK") != "1", reason="soak: set ENTROPY_RL_SOAK=1")
def test_soak_many_kill_schedules(base_cfg, tmp_path):
    ref = reference_run(base_cfg, tmp_path / "ref")
    for seed in range(100, 140):
        run_with_kills(base_cfg, tmp_path / f"run{seed}", ref, kill_schedule(seed, n=random.Random(seed).randint(3, 8)))


# ---------------------------------------------------------------- half-written checkpoints
def checkpoints(base_cfg, tmp: Path, steps: int = 6) -> Process:
    """A run stopped after ``steps`` (saves at 2, 4, 6)."""
    proc = Process(config_in(base_cfg, tmp))
    try:
        fit(proc, None, {}, (steps, "after_save"))
    except Killed:
        pass
    return proc


def test_save_writes_state_before_the_tracker_and_manifest_last(base_cfg, tmp_path, monkeypatch):
    proc = Process(config_in(base_cfg, tmp_path))
    events = []
    tracker = tmp_path / TRACKER_FILE

    def named():
        return tracker.read_text() if tracker.exists() else None

    real_save, real_manifest = proc.actor.save_checkpoint, checkpoint.write_manifest

    def save_shards(local_path, *a, **k):  # veRL's part starts: our state is already complete on disk
        step_dir = Path(local_path).parent
        events.append(("shards", (step_dir / STATE_FILE).exists(), named()))
        torch.load(step_dir / STATE_FILE, weights_only=False)
        return real_save(local_path, *a, **k)

    def manifest(step_dir, *a, **k):
        events.append(("manifest", None, named()))
        return real_manifest(step_dir, *a, **k)

    monkeypatch.setattr(proc.actor, "save_checkpoint", save_shards)
    monkeypatch.setattr(checkpoint, "write_manifest", manifest)
    try:
        fit(proc, None, {}, (4, "after_save"))
    except Killed:
        pass
    assert events == [("shards", True, None), ("manifest", None, "2"), ("shards", True, "2"), ("manifest", None, "4")]
    assert named() == "4" and validate_checkpoint(str(tmp_path / "global_step_4")) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temporaries left behind


def test_truncated_or_corrupt_files_fall_back_to_the_previous_checkpoint(base_cfg, tmp_path):
    checkpoints(base_cfg, tmp_path)
    root, last, prev = str(tmp_path), str(tmp_path / "global_step_6"), str(tmp_path / "global_step_4")
    assert choose_checkpoint(root) == (last, [])
    pristine = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def restore():
        for p, b in pristine.items():
            p.write_bytes(b)

    def flip_byte(p: Path):
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0xFF
        p.write_bytes(bytes(b))

    size = {rel: (tmp_path / "global_step_6" / rel).stat().st_size for rel in (STATE_FILE, "data.pt", SHARD)}
    faults = [
        (
            lambda: os.truncate(tmp_path / "global_step_6" / STATE_FILE, 10),
            f"{STATE_FILE} has 10 bytes, the manifest says {size[STATE_FILE]} (truncated?)",
        ),
        (
            lambda: os.truncate(tmp_path / "global_step_6" / "data.pt", 0),
            f"data.pt has 0 bytes, the manifest says {size['data.pt']}",
        ),
        (
            lambda: os.truncate(tmp_path / "global_step_6" / SHARD, 100),
            f"{SHARD} has 100 bytes, the manifest says {size[SHARD]}",
        ),
        (lambda: os.remove(tmp_path / "global_step_6" / SHARD), f"{SHARD} is missing"),
        (
            lambda: flip_byte(tmp_path / "global_step_6" / STATE_FILE),
            f"{STATE_FILE} does not match its sha256 in the manifest",
        ),
        (lambda: os.remove(tmp_path / "global_step_6" / MANIFEST_FILE), f"no {MANIFEST_FILE} and no save marker"),
        (
            lambda: (tmp_path / "global_step_6" / MANIFEST_FILE).write_text('{"version": 1, "fil'),
            f"{MANIFEST_FILE} is unreadable",
        ),
    ]
    for fault, why in faults:
        restore()
        fault()
        chosen, warnings = choose_checkpoint(root)
        assert chosen == prev, why
        assert len(warnings) == 1 and warnings[0].startswith(f"[entropy-rl] WARNING: resuming from {prev} instead of")
        assert f"checkpoint {last} is incomplete or corrupt: {why}" in warnings[0], (why, warnings[0])

    # a state file that matches its manifest but does not unpickle (written corrupt)
    restore()
    (tmp_path / "global_step_6" / STATE_FILE).write_bytes(b"PK\x03\x04 not a torch file")
    checkpoint.write_manifest(last)
    assert validate_checkpoint(last)[0].startswith(f"{STATE_FILE} cannot be loaded (")
    # both the tracker's step and the one before bad: the newest good one, every bad one named
    os.truncate(tmp_path / "global_step_4" / "data.pt", 3)
    chosen, (warning,) = choose_checkpoint(root)
    assert chosen == str(tmp_path / "global_step_2") and last in warning and prev in warning
    # the tracker names a step whose folder is gone / is unreadable
    restore()
    (tmp_path / TRACKER_FILE).write_text("8")
    chosen, (warning,) = choose_checkpoint(root)
    assert chosen == last and "global_step_8 is incomplete or corrupt: the folder does not exist" in warning
    (tmp_path / TRACKER_FILE).write_text("")  # veRL writes it in place: a crash can leave it empty
    chosen, (warning,) = choose_checkpoint(root)
    assert chosen == last and f"{tmp_path / TRACKER_FILE} is unreadable (ValueError" in warning
    # nothing usable, every step a save that was cut short (marker left): step 0, announced
    for k in (2, 4, 6):
        os.remove(tmp_path / f"global_step_{k}" / MANIFEST_FILE)
        (tmp_path / f"global_step_{k}" / SAVING_FILE).write_text("")
    (tmp_path / TRACKER_FILE).write_text("6")
    chosen, (warning,) = choose_checkpoint(root)
    assert chosen is None and warning.startswith(
        f"[entropy-rl] WARNING: no finished checkpoint in {root}, training from step 0"
    )
    assert [
        f"global_step_{k} is incomplete or corrupt: no {MANIFEST_FILE}: the save was cut short" in warning
        for k in (6, 4, 2)
    ] == [True] * 3
    # nothing usable and a step without a marker (not ours, or torn after it finished): an
    # error naming every bad one — a restart from step 0 would later overwrite those folders
    os.remove(tmp_path / "global_step_4" / SAVING_FILE)
    with pytest.raises(RuntimeError, match=f"no usable checkpoint in {root}") as err:
        choose_checkpoint(root)
    assert [f"global_step_{k} is incomplete or corrupt: no {MANIFEST_FILE}" in str(err.value) for k in (6, 4, 2)] == [
        True
    ] * 3
    assert "trainer.resume_mode=disable" in str(err.value)
    proc = Process(config_in(base_cfg, tmp_path))
    with pytest.raises(RuntimeError, match="no usable checkpoint"):
        proc.trainer._load_checkpoint()
    assert proc.actor.loaded == [] and proc.cfg.trainer.resume_mode == "auto"
    # by name too, a checkpoint without a manifest is refused, naming what is wrong
    with open_dict(proc.cfg):
        proc.cfg.trainer.resume_mode, proc.cfg.trainer.resume_from_path = "resume_path", str(tmp_path / "global_step_4")
    with pytest.raises(RuntimeError, match=f"global_step_4 is not a usable checkpoint: no {MANIFEST_FILE}"):
        proc.trainer._load_checkpoint()
    assert proc.actor.loaded == []
    os.remove(tmp_path / TRACKER_FILE)
    assert choose_checkpoint(root) == (None, [])  # no tracker: a fresh run, as veRL


def test_trainer_load_makes_verl_load_the_chosen_checkpoint(base_cfg, tmp_path, capsys):
    checkpoints(base_cfg, tmp_path)
    healthy = Process(config_in(base_cfg, tmp_path))
    assert healthy.trainer._load_checkpoint() == 6
    assert healthy.actor.loaded == [str(tmp_path / "global_step_6" / "actor")]  # veRL's own path, untouched

    os.truncate(tmp_path / "global_step_6" / STATE_FILE, 5)
    proc = Process(config_in(base_cfg, tmp_path))
    assert proc.trainer._load_checkpoint() == 4
    assert proc.actor.loaded == [str(tmp_path / "global_step_4" / "actor")]
    assert proc.trainer.config.trainer.resume_mode == "auto" and proc.trainer.config.trainer.resume_from_path is None
    out = capsys.readouterr().out
    assert f"WARNING: resuming from {tmp_path / 'global_step_4'} instead" in out and "(truncated?)" in out
    ref = Process(config_in(base_cfg, tmp_path / "ref"))
    seen: dict = {}
    try:
        fit(ref, None, seen, (4, "between_steps"))
    except Killed:
        pass
    # hooks and weights are restored now; the sampler when the dataloader's next iterator starts
    # (StatefulDataLoader applies its state lazily), which the kill runs above compare
    mine, theirs = proc.snapshot(), seen[4]
    for k in ("aer", "alpha", "h0", "target", "se_table", "acc_table", "weights"):
        assert mine[k] == theirs[k], k

    explicit = Process(config_in(base_cfg, tmp_path))
    with open_dict(explicit.cfg):
        explicit.cfg.trainer.resume_mode = "resume_path"
        explicit.cfg.trainer.resume_from_path = str(tmp_path / "global_step_6")
    with pytest.raises(RuntimeError, match=r"resume_from_path=.*global_step_6 is not a usable checkpoint: .*truncated"):
        explicit.trainer._load_checkpoint()
    off = Process(config_in(base_cfg, tmp_path))
    with open_dict(off.cfg):
        off.cfg.trainer.resume_mode = "disable"
    assert off.trainer._load_checkpoint() == 0 and off.actor.loaded == []


def test_state_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "global_step_1" / STATE_FILE
    checkpoint.write_atomic(str(path), lambda f: f.write(b"old"))

    def dies(obj, f):
        f.write(b"half of the new")
        raise Killed("mid-write")

    monkeypatch.setattr(checkpoint.torch, "save", dies)
    hooks = EntropyHooks(
        OmegaConf.create(
            {
                "token_kl": {"enable": False, "selection": "batch"},
                "aer": {"enable": False},
                "curriculum": {"enable": False, "adaptive": False, "adaptive_ema": 0.5},
            }
        )
    )
    with pytest.raises(Killed):
        checkpoint.save_entropy_rl_state(str(path.parent), hooks, None)
    assert path.read_bytes() == b"old" and sorted(p.name for p in path.parent.iterdir()) == [SAVING_FILE, STATE_FILE]


def test_async_save_manifest_lists_only_finished_files(tmp_path):
    """With veRL's async_save the shards may still be written after the call returns and
    veRL writes no tracker: the manifest covers our state and data.pt only, no tracker."""
    step = tmp_path / "global_step_3"
    (step / "actor").mkdir(parents=True)
    (step / "actor" / "shard.pt").write_bytes(b"in flight")
    (step / "data.pt").write_bytes(b"d")
    checkpoint.write_atomic(str(step / STATE_FILE), lambda f: torch.save({"hooks": {}}, f))
    checkpoint.finish_checkpoint(str(step), 3, async_shards=True)
    manifest = json.loads((step / MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == ["data.pt", STATE_FILE] and not (tmp_path / TRACKER_FILE).exists()
    (step / "actor" / "shard.pt").write_bytes(b"in flight, now longer")
    assert validate_checkpoint(str(step)) == []
    checkpoint.finish_checkpoint(str(step), 3)
    assert "actor/shard.pt" in json.loads((step / MANIFEST_FILE).read_text())["files"]
    assert (tmp_path / TRACKER_FILE).read_text() == "3"
