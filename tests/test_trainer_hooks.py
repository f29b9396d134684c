"""The trainer's hooks on real DataProto batches, without Ray: scoring (generation from a tiny
random transformers model) → sampler feed, batch-wide SENT selection, AER step, adaptive
curriculum refresh, and checkpoint save / rebuild / load that continues exactly."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
from verl.trainer.ppo.ray_trainer import Role
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils.dataset.rl_dataset import collate_fn

from entropy_rl.reward import compute_score
from recipe.sent.adapter import initial_sampler
from recipe.sent.hooks import FIELD_ENTROPY_COEF, FIELD_TOKEN_SET
from recipe.sent.ray_trainer import EntropyRLTrainer
from tests.tiny import make_model, make_tokenizer

CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "conf"))
N_ROWS, BATCH, N_ROLL, RESP = 12, 4, 4, 8


class TinyRollout:
    """Stands in for veRL's agent-loop manager: real sampling from a tiny random model."""

    def __init__(self, model, tokenizer):
        self.model, self.tok, self.calls = model, tokenizer, 0

    def generate_sequences(self, gen: DataProto) -> DataProto:
        self.calls += 1
        # as veRL's agent loop: the chat template on raw_prompt, prompts left-padded
        texts = [
            self.tok.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False)
            for m in gen.non_tensor_batch["raw_prompt"]
        ]
        enc = self.tok(texts, return_tensors="pt", padding=True)
        ids, am = enc["input_ids"], enc["attention_mask"]
        torch.manual_seed(1000 + int(gen.meta_info.get("global_steps", 0)))
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=am,
                max_new_tokens=RESP,
                do_sample=True,
                top_k=0,
                pad_token_id=self.tok.pad_token_id,
                eos_token_id=self.tok.eos_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        resp = out.sequences[:, ids.shape[1] :]
        resp = torch.nn.functional.pad(resp, (0, RESP - resp.shape[1]), value=self.tok.pad_token_id)
        lp = torch.stack([torch.log_softmax(s, -1) for s in out.scores], 1)
        lp = torch.nn.functional.pad(lp, (0, 0, 0, RESP - lp.shape[1]))
        tok_lp = lp.gather(-1, resp.unsqueeze(-1)).squeeze(-1)
        # valid through the first eos (inclusive)
        is_eos = (resp == self.tok.eos_token_id).long()
        mask = ((torch.cumsum(is_eos, 1) - is_eos) == 0).long()
        mask[:, 0] = 1
        attention = torch.cat([am, mask], 1)
        # the agent loop returns the request's non-tensor fields with the rollouts
        return DataProto.from_single_dict(
            data={
                **dict(gen.non_tensor_batch),
                "prompts": ids,
                "responses": resp,
                "response_mask": mask,
                "rollout_log_probs": tok_lp * mask,
                "input_ids": torch.cat([ids, resp], 1),
                "attention_mask": attention,
                "position_ids": torch.clamp(torch.cumsum(attention, 1) - 1, min=0),
            },
        )


class FakeCheckpointManager:
    def __init__(self):
        self.updates = self.sleeps = 0

    def update_weights(self, step):
        self.updates += 1

    def sleep_replicas(self):
        self.sleeps += 1


class FakeWorkerGroup:
    def save_checkpoint(self, *a, **k):
        pass

    def load_checkpoint(self, *a, **k):
        pass


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tok = make_tokenizer()
    model = make_model(tok, path=str(root / "model"))
    rows = []
    questions = ["What is 1 + 2 ?", "Solve x = 1", "What is 3 ?", "so what is x ?", "1 + 1 = ?", "the answer ?"]
    for i in range(N_ROWS):
        rows.append(
            {
                "data_source": "tiny",
                "prompt": [{"role": "user", "content": questions[i % 6] + " " + str(1 + i % 3)}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": ["1", "0.5", "3"][i % 3]},
                "extra_info": {"index": 100 + i, "split": "train"},
            }
        )
    path = str(root / "train.parquet")
    pd.DataFrame(rows).to_parquet(path)
    return {"root": root, "tok": tok, "model": model, "train": path}


def make_config(tiny, tmp, method="sent_aer", *extra):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(
            config_name="entropy_rl",
            overrides=[
                f"method={method}",
                f"data.train_files={tiny['train']}",
                f"data.val_files={tiny['train']}",
                f"actor_rollout_ref.model.path={tiny['root'] / 'model'}",
                f"data.train_batch_size={BATCH}",
                f"actor_rollout_ref.rollout.n={N_ROLL}",
                "data.max_prompt_length=16",
                f"data.max_response_length={RESP}",
                "data.filter_overlong_prompts=false",
                f"entropy_rl.scoring.cache_dir={tmp / 'cache'}",
                f"trainer.default_local_dir={tmp / 'ckpt'}",
                "entropy_rl.scoring.n_samples=6",
                "entropy_rl.token_kl.cov_fraction=0.05",
                "entropy_rl.aer.anchor_steps=1",
                # one pass per stage: 12 rows then cross both stages in 3 steps (the presets' 5 passes
                # per stage are tested in tests/test_paper_presets.py)
                "entropy_rl.curriculum.stage_epochs=1",
                *extra,
            ],
        )
    OmegaConf.resolve(cfg)
    return cfg


def build_trainer(tiny, cfg):
    ds = create_rl_dataset(cfg.data.train_files, cfg.data, tiny["tok"], None, is_train=True)
    trainer = EntropyRLTrainer(
        config=cfg,
        tokenizer=tiny["tok"],
        role_worker_mapping={Role.ActorRolloutRef: object},
        resource_pool_manager=None,
        train_dataset=ds,
        val_dataset=ds,
        collate_fn=collate_fn,
        train_sampler=initial_sampler(cfg, ds),
    )
    trainer.async_rollout_manager = TinyRollout(tiny["model"], tiny["tok"])
    trainer.checkpoint_manager = FakeCheckpointManager()
    trainer.actor_rollout_wg = FakeWorkerGroup()
    return trainer


def make_step_batch(trainer, tiny, batch_dict, step):
    """What fit() holds right before _update_actor: rollouts, rewards, old log-probs, advantages."""
    batch = DataProto.from_single_dict(batch_dict)
    batch.non_tensor_batch["uid"] = np.array(
        [str(uuid.UUID(int=step * 1000 + i)) for i in range(len(batch))], dtype=object
    )
    gen = trainer._get_gen_batch(batch)
    gen.meta_info["global_steps"] = step
    out = trainer.async_rollout_manager.generate_sequences(gen.repeat(N_ROLL, interleave=True))
    batch = batch.repeat(N_ROLL, interleave=True).union(out)
    texts = [
        tiny["tok"].decode(r[m != 0].tolist(), skip_special_tokens=True)
        for r, m in zip(batch.batch["responses"], batch.batch["response_mask"])
    ]
    res = [compute_score("tiny", t, rm["ground_truth"]) for t, rm in zip(texts, batch.non_tensor_batch["reward_model"])]
    mask = batch.batch["response_mask"]
    scores = torch.zeros(mask.shape)
    last = mask.sum(-1) - 1
    scores[torch.arange(len(res)), last] = torch.tensor([r["score"] for r in res])
    batch.batch["token_level_scores"] = scores
    batch.non_tensor_batch["acc"] = np.array([r["acc"] for r in res], dtype=float)
    batch.non_tensor_batch["pred"] = np.array([r["pred"] for r in res], dtype=object)
    with torch.no_grad():
        logits = tiny["model"](input_ids=batch.batch["input_ids"], attention_mask=batch.batch["attention_mask"]).logits
    P = batch.batch["prompts"].shape[1]
    lp_all = torch.log_softmax(logits[:, P - 1 : -1].float(), -1)
    batch.batch["old_log_probs"] = lp_all.gather(-1, batch.batch["responses"].unsqueeze(-1)).squeeze(-1) * mask
    entropy = -(lp_all.exp() * lp_all).sum(-1) * mask
    adv, _ = compute_grpo_outcome_advantage(scores, mask, batch.non_tensor_batch["uid"])
    batch.batch["advantages"] = adv
    trainer._entropy = entropy
    return batch


def run_steps(trainer, tiny, steps, start_step, log):
    """fit()'s loop shape: epochs of the dataloader, hooks per step, checkpoint via veRL's path."""
    step = start_step
    while step < start_step + steps:
        for batch_dict in trainer.train_dataloader:
            log.append(list(batch_dict["index"]))
            batch = make_step_batch(trainer, tiny, batch_dict, step)
            metrics = trainer.apply_hooks(batch)
            trainer.global_steps = step
            step += 1
            if step >= start_step + steps:
                return metrics, batch
    return metrics, batch


def test_scoring_feeds_the_sampler_and_is_cached(tiny, tmp_path):
    cfg = make_config(tiny, tmp_path)
    trainer = build_trainer(tiny, cfg)
    sampler = trainer.setup_curriculum()
    assert trainer.async_rollout_manager.calls == N_ROWS // BATCH  # one generation call per batch of prompts
    assert trainer.checkpoint_manager.updates == 1 and trainer.checkpoint_manager.sleeps == 1
    cache = trainer.score_cache([trainer.train_dataset.dataframe[i] for i in range(N_ROWS)])
    table = pd.read_parquet(cache.path)
    assert len(table) == N_ROWS and list(table["index"]) == list(range(100, 100 + N_ROWS))
    se = table["semantic_entropy"].to_numpy()
    assert np.all(np.isfinite(se)) and np.all(se >= 0) and np.all(se <= np.log(6) + 1e-9)
    assert se.std() > 0, "real generations give prompts different semantic entropies"
    # the dataloader now draws from the curriculum: stage 0 holds the low-entropy half
    assert trainer.train_dataloader.sampler is sampler and trainer.hooks.sampler is sampler
    order = list(iter(sampler))
    first, second = order[: N_ROWS // 2], order[N_ROWS // 2 :]
    assert max(se[first]) <= min(se[second])
    # a restart reuses the cache: no generation at all
    again = build_trainer(tiny, cfg)
    again.setup_curriculum()
    assert again.async_rollout_manager.calls == 0
    assert list(iter(again.hooks.sampler)) == order


def test_scoring_settings_must_match_rollout_in_run(tiny, tmp_path):
    cfg = make_config(tiny, tmp_path, "sent", "entropy_rl.scoring.temperature=0.6")
    with pytest.raises(ValueError, match="recipe.sent.score"):
        build_trainer(tiny, cfg).setup_curriculum()


def test_step_hooks_attach_fields_and_metrics(tiny, tmp_path):
    cfg = make_config(tiny, tmp_path, "sent_aer", "entropy_rl.curriculum.adaptive=true")
    trainer = build_trainer(tiny, cfg)
    trainer.setup_curriculum()
    log = []
    metrics, batch = run_steps(trainer, tiny, 2, 1, log)
    ts = batch.batch[FIELD_TOKEN_SET]
    mask = batch.batch["response_mask"]
    assert ts.shape == mask.shape and ts.dtype == torch.int8
    assert int((ts[mask == 0] != 0).sum()) == 0
    assert metrics["sent/batch_high_cov_tokens"] >= 1
    coef = batch.batch[FIELD_ENTROPY_COEF]
    assert coef.shape == mask.shape and torch.all(coef[mask == 0] == 0)
    assert trainer.hooks.aer.steps == 2 and trainer.hooks.aer.h0 is not None
    for k in (
        "aer/alpha",
        "aer/target_entropy",
        "sent/batch_low_entropy_frac",
        "curriculum/stage",
        "curriculum/batch_semantic_entropy",
        "curriculum/stage_semantic_entropy",
        "curriculum/rollout_semantic_entropy",
    ):
        assert k in metrics, k
    assert any(k.startswith("entropy_by_difficulty/") for k in metrics)
    # adaptive refresh: the step's rollouts updated the sampler's scores, no extra generation
    assert trainer.hooks.sampler.num_updates == 2
    assert len(trainer.hooks.se_table) == 2 * BATCH


@pytest.mark.parametrize("stop_at", [2, 3])  # mid-epoch and exactly at the epoch boundary
def test_resume_continues_exactly(tiny, tmp_path, stop_at):
    steps = 5
    ref_cfg = make_config(tiny, tmp_path / "ref", "sent_aer", "entropy_rl.curriculum.adaptive=true")
    ref = build_trainer(tiny, ref_cfg)
    ref.setup_curriculum()
    ref_log = []
    run_steps(ref, tiny, steps, 1, ref_log)

    cfg = make_config(tiny, tmp_path / "run", "sent_aer", "entropy_rl.curriculum.adaptive=true")
    first = build_trainer(tiny, cfg)
    first.setup_curriculum()
    log = []
    run_steps(first, tiny, stop_at, 1, log)
    first._save_checkpoint()
    assert os.path.exists(os.path.join(cfg.trainer.default_local_dir, f"global_step_{stop_at}", "entropy_rl_state.pt"))

    second = build_trainer(tiny, cfg)  # everything rebuilt from scratch
    second.setup_curriculum()
    assert second._load_checkpoint() == stop_at
    assert second.hooks.aer.state_dict() == first.hooks.aer.state_dict()
    run_steps(second, tiny, steps - stop_at, stop_at + 1, log)
    assert log == ref_log
    assert second.hooks.state_dict() == ref.hooks.state_dict()
    torch.testing.assert_close(second.hooks.sampler.scores, ref.hooks.sampler.scores)
