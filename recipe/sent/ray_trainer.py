"""The trainer: veRL 0.9.1's ``RayPPOTrainer`` (legacy driver) with SENT, AER and the
curriculum added through the hooks, the way verl-recipe's ``dapo_ray_trainer.py`` extends it.

====================================  ==================================================
veRL piece                             our change
====================================  ==================================================
``RayPPOTrainer.init_workers``         install :func:`recipe.sent.worker_loss.entropy_rl_loss` with ``set_loss_fn``
``RayPPOTrainer.fit``                  score prompts (rollout workers), build the curriculum;
                                       a ``file`` logger that keeps history across resumes
``RayPPOTrainer._compute_old_log_prob`` keep the batch's token entropy for the hooks
``RayPPOTrainer._update_actor``        run :class:`~recipe.sent.hooks.EntropyHooks`, attach fields
``RayPPOTrainer._save/_load_checkpoint`` our state (AER, EMA tables, sampler) beside veRL's, a manifest;
                                       resume skips bad checkpoints
====================================  ==================================================
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf, open_dict
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.utils import tracking

from entropy_rl.curriculum import CurriculumConfig, SemanticEntropyCurriculumSampler
from recipe.sent import checkpoint, diagnostics, scoring
from recipe.sent.hooks import EntropyHooks, MicroBatchLayout, reward_check_metrics
from recipe.sent.worker_loss import make_actor_loss


# ============================================================== metrics file
class ResumableFileLogger(tracking.FileLogger):
    """veRL's ``file`` logger (JSON lines, one record per step), but a resumed run keeps history.

    veRL opens the file with ``"wb"``: a resumed run would erase the records of every step
    before its checkpoint. Here the old records are read first; at the first record the run
    logs (step s), a resumed run (s > 1) writes back the old records of steps < s (those of
    steps ≥ s came from the attempt that died and are logged again), and a fresh run (s ≤ 1)
    moves the old file aside to ``<name>.<time>.jsonl`` instead of erasing it. A torn last
    line (the process died mid-write) is dropped.
    """

    def __init__(self, project_name: str, experiment_name: str) -> None:
        path = os.getenv("VERL_FILE_LOGGER_PATH") or os.path.join(
            os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", ".")), project_name, f"{experiment_name}.jsonl"
        )
        try:
            with open(path, "rb") as f:
                self._previous = f.read()
        except OSError:
            self._previous = b""
        super().__init__(project_name, experiment_name)
        self._first = True

    def log(self, data, step):
        if self._first:
            self._first = False
            if self._previous:
                self._carry_over(step)
        super().log(data, step)

    def _carry_over(self, step: int) -> None:
        if step <= 1:
            stem, ext = os.path.splitext(self.filepath)
            aside = f"{stem}.{time.strftime('%Y%m%d-%H%M%S')}{ext}"
            with open(aside, "wb") as f:
                f.write(self._previous)
            print(f"[entropy-rl] metrics of the previous run in this file moved to {aside}", flush=True)
            return
        kept = 0
        for line in self._previous.splitlines():
            try:
                old_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
            if old_step < step:
                self.fp.write(line + b"\n")
                kept += 1
        print(
            f"[entropy-rl] resumed at step {step}: kept {kept} metric records of earlier steps in {self.filepath}",
            flush=True,
        )


def curriculum_kwargs(config: Any) -> dict:
    """``entropy_rl.curriculum`` as :class:`CurriculumConfig` arguments (seed: ``data.seed``)."""
    c = OmegaConf.to_container(config.entropy_rl.curriculum, resolve=True)
    for k in ("enable", "adaptive", "adaptive_ema"):
        c.pop(k)
    c["seed"] = int(config.data.get("seed") or 1)
    return c


# ============================================================== batch helpers
def decode_responses(tokenizer, responses: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    texts = []
    for ids, m in zip(responses, response_mask):
        texts.append(tokenizer.decode(ids[m != 0].tolist(), skip_special_tokens=True))
    return texts


def sequence_logprobs(batch: DataProto) -> np.ndarray | None:
    """log P(o) per response from the rollout's own log-probs (None when it returned none)."""
    if "rollout_log_probs" not in batch.batch.keys():
        return None
    lp = batch.batch["rollout_log_probs"].float()
    m = (batch.batch["response_mask"] != 0).float()
    return (lp * m).sum(-1).numpy()


def dataset_rows(dataset) -> list[dict]:
    """The rows of an RLHFDataset (HF datasets.Dataset inside) or a pandas DataFrame."""
    frame = dataset.dataframe
    if isinstance(frame, pd.DataFrame):
        return frame.to_dict("records")
    return [frame[i] for i in range(len(frame))]


def curriculum_metrics(sampler: SemanticEntropyCurriculumSampler, rows: list[int] | None) -> dict[str, float]:
    """Stage, progress, and the semantic entropy of this batch's prompts and of the stage."""
    m = sampler.metrics()
    scores = sampler.scores.numpy()
    if rows is not None:
        m["curriculum/batch_semantic_entropy"] = float(np.nanmean(scores[np.unique(rows)]))
    stage = sampler.current_stage
    members = [i for i in range(sampler.num_rows) if sampler.stage_of(i) == stage]
    if members:
        m["curriculum/stage_semantic_entropy"] = float(np.nanmean(scores[members]))
    return m


def rollout_vs_ref_metrics(batch: DataProto) -> dict[str, float]:
    """How far the policy that generated the batch is from the reference (initial) policy.

    Beside veRL's ``training/rollout_probs_diff_*`` (rollout vs. the actor's recomputation)
    this tells a weight sync that never happened from one that did: with stale rollout
    weights the rollout matches the reference and not the actor.
    """
    b = batch.batch
    if "rollout_log_probs" not in b.keys() or "ref_log_prob" not in b.keys():
        return {}
    mask = b["response_mask"] != 0
    diff = (b["rollout_log_probs"].float().exp() - b["ref_log_prob"].float().exp()).abs()[mask]
    if diff.numel() == 0:
        return {}
    return {
        "training/rollout_ref_probs_diff_max": float(diff.max()),
        "training/rollout_ref_probs_diff_mean": float(diff.mean()),
    }


# ============================================================== the trainer
class EntropyRLTrainer(RayPPOTrainer):
    """veRL's ``RayPPOTrainer`` plus SENT / AER / the curriculum, through the hooks only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entropy_rl = self.config.entropy_rl
        # SENT's release-equivalent token count needs the actor update's micro-batches
        layout = MicroBatchLayout.from_config(self.config) if self.entropy_rl.token_kl.enable else None
        self.hooks = EntropyHooks(self.entropy_rl, layout=layout)
        self._entropy: torch.Tensor | None = None
        self._row_of_index: dict[Any, int] | None = None

    # ---------------------------------------------------------------- setup
    def init_workers(self) -> None:
        super().init_workers()
        self.actor_rollout_wg.set_loss_fn(make_actor_loss(self.config))
        print(diagnostics.placement_report(self.actor_rollout_wg, "actor_rollout"))

    def fit(self):
        if self.entropy_rl.curriculum.enable:
            self.setup_curriculum()
        tracking.FileLogger = ResumableFileLogger  # veRL's fit() builds its Tracking from this name
        return super().fit()

    def setup_curriculum(self) -> SemanticEntropyCurriculumSampler:
        """Scores (cache or scoring pass) → curriculum sampler → the train dataloader."""
        rows = dataset_rows(self.train_dataset)
        self._row_of_index = scoring.check_rows(rows, self.train_row_names(len(rows)))
        table = self.semantic_entropy_table(rows, self._row_of_index)
        frame = pd.DataFrame({self.entropy_rl.curriculum.score_key: table["semantic_entropy"].to_numpy()})
        sampler = SemanticEntropyCurriculumSampler(frame, CurriculumConfig(**curriculum_kwargs(self.config)))
        self._create_dataloader(self.train_dataset, self.val_dataset, None, sampler)
        self.hooks.sampler = sampler
        print(f"[entropy-rl] curriculum: {len(table)} prompts in stages of sizes {sampler.stage_sizes}")
        return sampler

    def train_row_names(self, num_rows: int):
        """``r -> "<file> row <i>"`` for the loaded training rows: per file when veRL kept
        every row of ``data.train_files`` (in order), else the dataset position."""
        files = self.config.data.train_files
        files = [files] if isinstance(files, str) else list(files)
        try:
            counts = [pq.ParquetFile(os.path.expanduser(f)).metadata.num_rows for f in files]
        except Exception:  # not local parquet (veRL copies remote files): name the list
            counts = []
        if counts and sum(counts) == num_rows:
            starts = np.cumsum([0] + counts[:-1])

            def name(r: int) -> str:
                k = int(np.searchsorted(starts, r, side="right")) - 1
                return f"{files[k]} row {r - int(starts[k])}"

            return name
        return lambda r: f"train data ({', '.join(files)}) row {r} after veRL's filtering"

    def score_cache(self, rows: list[dict]) -> scoring.ScoreCache:
        s = self.entropy_rl.scoring
        spec = scoring.cache_spec(
            scoring.dataset_fingerprint(rows),
            self.config.actor_rollout_ref.model.path,
            s.n_samples,
            s.temperature,
            s.top_p,
            s.max_response_length,
            s.seed,
        )
        return scoring.ScoreCache.for_spec(s.cache_dir, spec)

    def semantic_entropy_table(self, rows: list[dict], index_of: dict | None = None) -> pd.DataFrame:
        """Per-row H_SE and pass rate: from the cache when one matches, else a scoring pass.
        Bad rows (no prompt / gold / index, repeated index) and a cache that does not match
        this dataset, model and scoring setting raise, naming file, row and field.
        ``index_of``: :func:`recipe.sent.scoring.check_rows` of ``rows``, when already done."""
        if index_of is None:
            index_of = scoring.check_rows(rows, self.train_row_names(len(rows)))
        cache = self.score_cache(rows)
        if cache.exists():
            print(f"[entropy-rl] semantic-entropy scores from cache {cache.path}")
            return cache.load(list(index_of))
        if not self.entropy_rl.scoring.enable:
            raise FileNotFoundError(
                f"curriculum needs semantic-entropy scores: no cache at {cache.path} "
                "and entropy_rl.scoring.enable=false"
            )
        r = self.config.actor_rollout_ref.rollout
        s = self.entropy_rl.scoring
        if (s.temperature, s.top_p, s.max_response_length) != (r.temperature, r.top_p, r.response_length):
            raise ValueError(
                "in-run scoring samples with the rollout workers' settings, but entropy_rl.scoring "
                f"(temperature {s.temperature}, top_p {s.top_p}, max_response_length {s.max_response_length}) differs "
                f"from actor_rollout_ref.rollout ({r.temperature}, {r.top_p}, {r.response_length}); "
                "run `python -m recipe.sent.score` with the same overrides first (it writes the cache this run reads)"
            )
        table = self.score_prompts(rows)
        path = cache.save(table)
        print(f"[entropy-rl] semantic-entropy scores written to {path}: {scoring.score_table_metrics(table)}")
        return table

    def score_prompts(self, rows: list[dict]) -> pd.DataFrame:
        """M samples per prompt from the rollout workers (initial policy) → score table."""
        from torchdata.stateful_dataloader import StatefulDataLoader
        from verl.utils.dataset.rl_dataset import collate_fn

        m = int(self.entropy_rl.scoring.n_samples)
        bs = int(self.config.data.get("gen_batch_size") or self.config.data.train_batch_size)

        class _Rows(torch.utils.data.Dataset):
            def __init__(self, ds):
                self.ds = ds

            def __len__(self):
                return len(self.ds)

            def __getitem__(self, i):
                item = dict(self.ds[i])
                item["_row"] = i
                return item

        loader = StatefulDataLoader(_Rows(self.train_dataset), batch_size=bs, shuffle=False, collate_fn=collate_fn)

        def batches():
            for batch_dict in loader:
                yield [int(x) for x in batch_dict["_row"]], batch_dict

        def generate(batch_dict):
            batch = DataProto.from_single_dict({k: v for k, v in batch_dict.items() if k != "_row"})
            gen = self._get_gen_batch(batch)
            gen.meta_info["global_steps"] = 0
            gen = gen.repeat(repeat_times=m, interleave=True)
            out = self.async_rollout_manager.generate_sequences(gen)
            texts = decode_responses(self.tokenizer, out.batch["responses"], out.batch["response_mask"])
            lps = sequence_logprobs(out)
            n = len(texts) // m
            groups = [texts[i * m : (i + 1) * m] for i in range(n)]
            lp_groups = None if lps is None else [lps[i * m : (i + 1) * m].tolist() for i in range(n)]
            return groups, lp_groups

        self.checkpoint_manager.update_weights(0)  # rollout replicas awake with the initial weights
        try:
            return scoring.run_scoring(
                batches(),
                generate,
                num_rows=len(rows),
                estimator=self.entropy_rl.scoring.estimator,
                indices=[(r.get("extra_info") or {}).get("index", i) for i, r in enumerate(rows)],
                golds=[(r.get("reward_model") or {}).get("ground_truth") for r in rows],
            )
        finally:
            self.checkpoint_manager.sleep_replicas()

    # ---------------------------------------------------------------- per step
    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        # veRL pops the entropy after logging its mean; the hooks need it per token.
        self._entropy = old_log_prob.batch["entropys"].detach().clone()
        return old_log_prob, mfu

    def _update_actor(self, batch: DataProto) -> DataProto:
        metrics = self.apply_hooks(batch)
        output = super()._update_actor(batch)
        output.meta_info["metrics"].update({k: [v] for k, v in metrics.items()})
        return output

    def apply_hooks(self, batch: DataProto) -> dict[str, float]:
        """Run the per-step entropy machinery on the whole batch; attach its fields."""
        if self._entropy is None:
            raise RuntimeError(
                "entropy-rl needs recomputed old log-probs (rollout_correction.bypass_mode is not supported)"
            )
        b = batch.batch
        non_tensor = batch.non_tensor_batch
        if "acc" in non_tensor:
            correct = np.asarray(non_tensor["acc"], dtype=np.float64)
        else:
            correct = (b["token_level_scores"].sum(-1) > 0).numpy()
        rows = preds = None
        if self._row_of_index is not None:
            # extra_info travels with the batch through generation (a reward key); "index" may not
            rows = [self._row_of_index[(ei or {}).get("index")] for ei in non_tensor["extra_info"]]
        if self.hooks.adaptive_curriculum:
            preds = [None if p in (None, "") else str(p) for p in non_tensor["pred"]]
        fields, metrics = self.hooks.on_batch(
            entropy=self._entropy,
            old_log_prob=b["old_log_probs"],
            advantages=b["advantages"],
            response_mask=b["response_mask"],
            correct=correct,
            uids=non_tensor["uid"],
            rows=rows,
            preds=preds,
            seq_logprobs=sequence_logprobs(batch) if self.entropy_rl.scoring.estimator == "likelihood" else None,
            seq_lens=b["attention_mask"].sum(-1).tolist(),
            step=getattr(self, "global_steps", None),
        )
        for k, v in fields.items():
            batch.batch[k] = v
        if self.hooks.sampler is not None:
            metrics.update(curriculum_metrics(self.hooks.sampler, rows))
        metrics.update(reward_check_metrics(non_tensor))  # veRL logs no reward extras as training metrics
        metrics.update(rollout_vs_ref_metrics(batch))
        self._entropy = None
        return metrics

    # ---------------------------------------------------------------- checkpoints
    def _step_dir(self) -> str:
        return os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")

    def _save_checkpoint(self):
        """Our state first (atomic), then veRL's (shards, data.pt, tracker), then the manifest
        and the tracker again: a crash at any point leaves the tracker naming a step whose
        files all validate, or a step :meth:`_load_checkpoint` detects and skips."""
        step_dir = self._step_dir()
        checkpoint.save_entropy_rl_state(step_dir, self.hooks, self.hooks.sampler)
        super()._save_checkpoint()
        ckpt = self.config.actor_rollout_ref.actor.checkpoint
        checkpoint.finish_checkpoint(step_dir, self.global_steps, async_shards=bool(ckpt.get("async_save", False)))

    def _load_checkpoint(self):
        """veRL's load of a checkpoint that validates (:func:`choose_checkpoint`), then ours."""
        t = self.config.trainer
        if t.resume_mode == "disable":
            return super()._load_checkpoint()
        if t.default_hdfs_dir is not None:
            return super()._load_checkpoint()  # veRL raises: loading from HDFS is not implemented
        root = os.path.abspath(os.path.expanduser(str(t.default_local_dir)))
        if t.resume_mode == "resume_path":
            step_dir = os.path.abspath(os.path.expanduser(str(t.resume_from_path)))
            problems = checkpoint.validate_checkpoint(step_dir)
            if problems:
                raise RuntimeError(
                    f"trainer.resume_from_path={step_dir} is not a usable checkpoint: {'; '.join(problems)}"
                )
            super()._load_checkpoint()
        else:
            step_dir, warnings = checkpoint.choose_checkpoint(root)
            for w in warnings:
                print(w, flush=True)
            if not warnings:  # healthy (or no tracker: from scratch): veRL's own load, unchanged
                super()._load_checkpoint()
            else:  # the tracker's step is bad: make veRL load the one chosen, or none
                with open_dict(t):
                    mode, path = t.resume_mode, t.get("resume_from_path")
                    t.resume_mode, t.resume_from_path = ("resume_path", step_dir) if step_dir else ("disable", path)
                try:
                    super()._load_checkpoint()
                finally:
                    with open_dict(t):
                        t.resume_mode, t.resume_from_path = mode, path
            if step_dir is None:
                self.global_steps = 0
                return 0
        if self.global_steps == 0:
            return 0
        checkpoint.load_entropy_rl_state(
            step_dir, self.hooks, self.hooks.sampler, self.train_dataloader, self.global_steps
        )
        return self.global_steps
