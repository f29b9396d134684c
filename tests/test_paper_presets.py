"""The presets a user launches reproduce what the papers ran: SENT's curriculum schedule
(every pass of stage 0 before stage 1), its release-equivalent token count on the actor's
real micro-batch layout, AER's bounded per-token coefficient, the Clip-Higher baseline and
AER's models — each checked on the composed config, not on the library defaults."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torchdata.stateful_dataloader import StatefulDataLoader

from entropy_rl.curriculum import CurriculumConfig, SemanticEntropyCurriculumSampler
from recipe.sent.hooks import EntropyHooks, MicroBatchLayout
from recipe.sent.ray_trainer import curriculum_kwargs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONF = os.path.join(ROOT, "conf")


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="entropy_rl", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


# ---------------------------------------------------------------- 1. curriculum schedule
def stage_sequence_of_a_run(cfg, n_rows: int) -> tuple[list[int], list[int], SemanticEntropyCurriculumSampler]:
    """Drive the sampler as veRL's fit() does: trainer.total_epochs passes over a
    StatefulDataLoader(batch_size=train_batch_size, drop_last=True). Returns the stage and the
    row of every yielded index."""
    scores = np.random.default_rng(0).permutation(n_rows) / n_rows * 2.0  # distinct synthetic H_SE
    frame = pd.DataFrame({cfg.entropy_rl.curriculum.score_key: scores})
    sampler = SemanticEntropyCurriculumSampler(frame, CurriculumConfig(**curriculum_kwargs(cfg)))
    loader = StatefulDataLoader(
        list(range(n_rows)), batch_size=int(cfg.data.train_batch_size), drop_last=True, sampler=sampler
    )
    stages, rows = [], []
    for _ in range(int(cfg.trainer.total_epochs)):
        for batch in loader:
            for i in batch.tolist():
                stages.append(sampler.stage_of(i))
                rows.append(i)
    return stages, rows, sampler


@pytest.mark.parametrize("method", ["sent", "sent_aer", "sent_curriculum_only"])
@pytest.mark.parametrize("model", ["r1_distill_qwen_1.5b", "qwen2.5_math_7b", "qwen3_14b", "qwen2.5_0.5b_1gpu"])
def test_sent_presets_run_every_pass_of_stage_0_before_stage_1(method, model):
    """The release: stage 1 for 5 epochs, then stage 2 for 5 epochs. In one run the stage of
    the yielded rows must never decrease, and each stage gets 5 full passes."""
    cfg = cfg_for(f"method={method}", f"model={model}")
    n_rows = 4 * int(cfg.data.train_batch_size)  # 2 stages of 2 batches each: no row dropped
    stages, rows, sampler = stage_sequence_of_a_run(cfg, n_rows)
    assert stages == sorted(stages), "a stage-0 row came after a stage-1 row"
    assert set(stages) == {0, 1}
    for s in (0, 1):
        members = [i for i in range(n_rows) if sampler.stage_of(i) == s]
        seen = [r for r, st in zip(rows, stages) if st == s]
        assert len(seen) == 5 * len(members)
        size = len(members)
        for p in range(5):  # 5 passes, each a permutation of the stage
            assert sorted(seen[p * size : (p + 1) * size]) == sorted(members)
    assert len(rows) == 10 * (n_rows // 2)


def test_interleaved_schedule_is_a_named_option():
    cfg = cfg_for("method=sent", "model=r1_distill_qwen_1.5b", "entropy_rl.curriculum.schedule=interleaved")
    n_rows = 4 * int(cfg.data.train_batch_size)
    stages, _, _ = stage_sequence_of_a_run(cfg, n_rows)
    per_pass = n_rows // 2
    assert [stages[i * per_pass] for i in range(10)] == [0, 1] * 5
    with pytest.raises(ValueError, match="schedule"):
        CurriculumConfig(schedule="shuffled")


def test_cfg_job_shows_the_release_schedule_and_count_rule():
    out = subprocess.run(
        [sys.executable, "-m", "recipe.sent.main", "--cfg", "job", "method=sent", "model=r1_distill_qwen_1.5b"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    job = OmegaConf.create(out.stdout)
    cur = job.entropy_rl.curriculum
    assert (cur.num_stages, cur.stage_epochs, cur.schedule, job.trainer.total_epochs) == (2, 5, "staged", 1)
    assert job.entropy_rl.token_kl.cov_count == "release"


# ---------------------------------------------------------------- 4. token count on the real layout
def verl_micro_batches(n_rows, dp, mini_rows, micro=None, max_token_len=None, seq_lens=None):
    """Row ids of every micro-batch as veRL 0.9.1 forms them: DataProto.chunk over ranks,
    tu.make_iterator over mini-batches (shuffle off), prepare_micro_batches."""
    from tensordict import TensorDict
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    seq_lens = seq_lens if seq_lens is not None else [8] * n_rows
    T = max(seq_lens)
    att = (torch.arange(T)[None] < torch.tensor(seq_lens)[:, None]).long()
    dp_batch = DataProto.from_single_dict({"row": torch.arange(n_rows), "attention_mask": att})
    out = []
    for rank in dp_batch.chunk(dp):
        td = TensorDict(
            {
                "row": rank.batch["row"],
                "attention_mask": rank.batch["attention_mask"],
                "input_ids": rank.batch["attention_mask"],
            },
            batch_size=[len(rank)],
        )
        for mini in tu.make_iterator(
            td, mini_batch_size=mini_rows // dp, epochs=1, seed=42, dataloader_kwargs={"shuffle": False}
        ):
            if micro is not None:
                tu.assign_non_tensor(mini, use_dynamic_bsz=False, micro_batch_size_per_gpu=micro)
            else:
                tu.assign_non_tensor(mini, use_dynamic_bsz=True, max_token_len_per_gpu=max_token_len)
            mbs, _ = prepare_micro_batches(mini, dp_group=None)
            out.append([sorted(mb["row"].tolist()) for mb in mbs])
    return out


def our_groups(layout, n_rows, seq_lens=None):
    ids, m = layout.micro_batch_ids(n_rows, seq_lens)
    return sorted(sorted(np.flatnonzero(ids.numpy() == g).tolist()) for g in range(m)), m


@pytest.mark.parametrize("dp,mini,micro", [(8, 1024, 4), (2, 64, 8), (1, 16, 16), (4, 32, 2)])
def test_layout_matches_verls_micro_batches(dp, mini, micro):
    n_rows = 2 * mini
    want = sorted(g for per in verl_micro_batches(n_rows, dp, mini, micro=micro) for g in per)
    got, m = our_groups(MicroBatchLayout(dp, mini, micro_batch_rows=micro), n_rows)
    assert got == want and m == len(want)


def test_dynamic_layout_matches_verl_on_one_rank():
    rng = np.random.default_rng(3)
    seq_lens = rng.integers(10, 200, size=64).tolist()
    want = sorted(g for per in verl_micro_batches(64, 1, 32, max_token_len=600, seq_lens=seq_lens) for g in per)
    got, _ = our_groups(MicroBatchLayout(1, 32, max_token_len=600), 64, seq_lens)
    assert got == want


def test_layout_from_the_presets():
    lay = MicroBatchLayout.from_config(cfg_for("method=sent", "model=r1_distill_qwen_1.5b"))
    assert lay == MicroBatchLayout(dp_size=8, mini_batch_rows=1024, micro_batch_rows=4)
    _, m = lay.micro_batch_ids(256 * 8)
    assert m == 512  # the release's layout: 2048 responses in micro-batches of 4
    lay = MicroBatchLayout.from_config(cfg_for("method=sent", "model=qwen3_14b"))
    assert lay.max_token_len == 18432 and lay.dp_size == 16 and lay.micro_batch_rows is None


def driver_batch(B, T, seed=0, lens=None):
    g = torch.Generator().manual_seed(seed)
    lens = torch.full((B,), T) if lens is None else torch.as_tensor(lens)
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    ent = torch.rand(B, T, generator=g) * mask
    logp = -torch.rand(B, T, generator=g) * mask
    adv = torch.randn(B, 1, generator=g).expand(B, T) * mask
    correct = (torch.rand(B, generator=g) > 0.5).double().numpy()
    uids = [f"p{i // 8}" for i in range(B)]
    return dict(
        entropy=ent, old_log_prob=logp, advantages=adv.contiguous(), response_mask=mask, correct=correct, uids=uids
    )


@pytest.mark.parametrize("length", [500, 1500, 2048])
def test_sent_preset_selects_the_releases_count_whatever_the_length(length):
    """r1_distill layout (8 ranks, micro-batches of 4) at k = 0.0002: 2 tokens per micro-batch
    pair — one β_high, one β_low per micro-batch — so 512 each per step at any length, where
    the plain fraction of the batch would give ⌊0.0002·0.8·2048·L⌋ (≈ 0.33·L)."""
    cfg = cfg_for("method=sent", "model=r1_distill_qwen_1.5b")
    hooks = EntropyHooks(cfg.entropy_rl, layout=MicroBatchLayout.from_config(cfg))
    B = 256 * 8
    fields, metrics = hooks.on_batch(**driver_batch(B, length))
    assert metrics["sent/micro_batches"] == 512
    assert metrics["sent/high_cov_tokens"] == metrics["sent/high_cov_tokens_release_equiv"] == 512
    ts = fields["sent_token_set"]
    assert int((ts == 3).sum()) == 512 and int((ts == 2).sum()) == 512
    # which tokens: the batch's highest Cov, wherever they are (not one per micro-batch)
    assert int(((ts == 3).reshape(512, -1).sum(-1) > 0).sum()) < 512

    frac = cfg_for("method=sent", "model=r1_distill_qwen_1.5b", "entropy_rl.token_kl.cov_count=fraction")
    hooks = EntropyHooks(frac.entropy_rl, layout=MicroBatchLayout.from_config(frac))
    fields, metrics = hooks.on_batch(**driver_batch(B, length))
    want = math.floor(2e-4 * math.floor(0.8 * B * length))
    assert metrics["sent/high_cov_tokens"] == want and metrics["sent/high_cov_tokens_release_equiv"] == 512
    assert int((fields["sent_token_set"] == 3).sum()) == want


def test_counts_are_logged_with_micro_selection_too():
    cfg = cfg_for("method=sent", "model=r1_distill_qwen_1.5b", "entropy_rl.token_kl.selection=micro")
    hooks = EntropyHooks(cfg.entropy_rl, layout=MicroBatchLayout.from_config(cfg))
    fields, metrics = hooks.on_batch(**driver_batch(64, 30))
    assert "sent_token_set" not in fields
    assert metrics["sent/high_cov_tokens"] == metrics["sent/high_cov_tokens_release_equiv"] == 16


# ---------------------------------------------------------------- 2. AER's coefficient, logged
def test_aer_logs_its_largest_coefficient_and_the_cap_holds():
    cfg = cfg_for("method=aer", "entropy_rl.aer.alpha_init=0.1", "entropy_rl.aer.adaptive=false")
    hooks = EntropyHooks(cfg.entropy_rl)
    batch = driver_batch(256, 6)
    batch["uids"] = [f"p{i}" for i in range(256)]
    batch["correct"] = np.array([1.0] * 255 + [0.0])  # 255 solved, one never: w = 256 uncapped
    fields, metrics = hooks.on_batch(**batch)
    coef = fields["aer_entropy_coef"]
    assert metrics["aer/coef_max"] == pytest.approx(float(coef.max())) == pytest.approx(0.1 * 4.0)
    assert metrics["aer/coef_max"] <= cfg.entropy_rl.aer.alpha_max * cfg.entropy_rl.aer.w_max * (1 + 1e-6)
    assert metrics["aer/weight_capped_frac"] == pytest.approx(1 / 256)


# ---------------------------------------------------------------- 5. the missing rows
def test_clip_higher_preset_is_dapos_decoupled_clip():
    cfg = cfg_for("method=clip_higher")
    a = cfg.actor_rollout_ref.actor
    assert (a.clip_ratio_low, a.clip_ratio_high, a.policy_loss.loss_mode) == (0.2, 0.28, "vanilla")
    assert not cfg.entropy_rl.token_kl.enable and not cfg.entropy_rl.aer.enable
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "| `clip_higher` |" in readme


def test_clip_higher_loss_lets_a_ratio_of_1_25_through():
    """ε_high = 0.28: a positive-advantage token at ratio 1.25 still has a gradient; GRPO's
    symmetric 0.2 clip stops it."""
    from recipe.sent.worker_loss import make_actor_loss
    from tests.test_worker_loss import make_micro_batch, nested_full_sequence, to_engine_layout

    grads = {}
    for method in ("grpo", "clip_higher"):
        dp, t = make_micro_batch(B=3, dtype=torch.float32)
        adv = torch.ones_like(t["adv"]) * t["mask"]
        logp = (t["old"] + math.log(1.25)) * t["mask"]
        dp.batch["advantages"] = adv
        td = to_engine_layout(dp, 3)
        lp_nested, leaf = nested_full_sequence(logp, t["plen"], t["rlen"], requires_grad=True)
        ent_nested, _ = nested_full_sequence(t["ent"], t["plen"], t["rlen"])
        # without the reference-KL term, whose gradient is never clipped
        loss, _ = make_actor_loss(cfg_for(f"method={method}", "actor_rollout_ref.actor.use_kl_loss=false"))(
            model_output={"log_probs": lp_nested, "entropy": ent_nested}, data=td, dp_group=None
        )
        loss.backward()
        grads[method] = leaf.grad.abs().sum().item()
    assert grads["grpo"] == 0.0 and grads["clip_higher"] > 0.0


@pytest.mark.parametrize(
    "model,path", [("qwen3_4b_base", "Qwen/Qwen3-4B-Base"), ("qwen3_8b_base", "Qwen/Qwen3-8B-Base")]
)
def test_aer_model_presets_evaluate_on_aers_sets(model, path):
    cfg = cfg_for(f"model={model}", "method=aer")
    assert cfg.actor_rollout_ref.model.path == path
    sets = [os.path.basename(os.path.dirname(f)) for f in cfg.data.val_files]
    assert sets == ["aime24", "aime25", "amc23", "math500"]
    assert cfg.actor_rollout_ref.rollout.val_kwargs.n > 1  # pass@1 (mean@n) and pass@k (best@n)
    text = open(os.path.join(CONF, "model", f"{model}.yaml")).read()
    assert "OUR CHOICE" in text and "2510.10959" in text
    assert f"`{model}`" in open(os.path.join(ROOT, "README.md")).read()
