"""The loss veRL's actor workers run: installed by the trainer with ``set_loss_fn``.

``make_actor_loss`` binds the run's settings into a picklable ``entropy_rl_loss``; veRL's
engine calls it per micro-batch as ``fn(model_output, data, dp_group)``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from verl.trainer.ppo.core_algos import agg_loss, kl_penalty
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from entropy_rl.losses import SentKLConfig, compute_policy_loss, select_tokens
from recipe.sent.hooks import FIELD_ENTROPY_COEF, FIELD_TOKEN_SET, sent_config


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
    batch_info = {
        "dp_size": data["dp_size"],
        "batch_num_tokens": data["batch_num_tokens"],
        "global_batch_size": data["global_batch_size"],
        "loss_scale_factor": config.loss_scale_factor,
    }
    config.global_batch_info.update(batch_info)
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
    padded = data.select(*fields).to_padded_tensor()
    mask = padded["response_mask"]
    advantages = padded["advantages"]

    token_set = None
    if token_kl:
        if selection == "batch":
            if FIELD_TOKEN_SET not in padded:
                raise KeyError(f"batch-wide SENT selection: the batch carries no {FIELD_TOKEN_SET!r} field")
            token_set = padded[FIELD_TOKEN_SET]
        else:
            if entropy is None:
                raise ValueError("selection=micro needs the token entropy (actor.calculate_entropy=true)")
            token_set = select_tokens(entropy, log_prob, advantages, mask, sent)

    entropy_coef = None
    if aer:
        if FIELD_ENTROPY_COEF not in padded:
            raise KeyError(f"AER: the batch carries no {FIELD_ENTROPY_COEF!r} field")
        entropy_coef = padded[FIELD_ENTROPY_COEF].to(log_prob.dtype)
    if config.entropy_coeff:
        entropy_coef = config.entropy_coeff if entropy_coef is None else entropy_coef + config.entropy_coeff

    loss, raw = compute_policy_loss(
        padded["old_log_probs"],
        log_prob,
        advantages,
        mask,
        sent,
        token_set=token_set,
        ref_log_prob=padded.get("ref_log_prob", None),
        entropy=entropy,
        entropy_coef=entropy_coef,
        rollout_is_weights=padded.get("rollout_is_weights", None),
        clip_ratio_low=config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio,
        clip_ratio_high=config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio,
        clip_ratio_c=config.get("clip_ratio_c", 3.0),
        loss_agg_mode=config.loss_agg_mode,
        global_batch_info=batch_info,
    )
    summed = {"actor/pg_loss", "sent/kl_loss", "aer/entropy_bonus"}
    metrics = {
        k: Metric(value=v, aggregation=loss_agg if k in summed else AggregationType.MEAN) for k, v in raw.items()
    }

    if config.use_kl_loss:
        kld = kl_penalty(logprob=log_prob, ref_logprob=padded["ref_log_prob"], kl_penalty=config.kl_loss_type)
        kl_loss = agg_loss(loss_mat=kld, loss_mask=mask, loss_agg_mode=config.loss_agg_mode, **batch_info)
        loss = loss + kl_loss * config.kl_loss_coef
        metrics["kl_loss"] = Metric(value=kl_loss, aggregation=loss_agg)
        metrics["kl_coef"] = config.kl_loss_coef
    return loss, metrics


def make_actor_loss(config: Any):
    """The picklable loss that ``set_loss_fn`` sends to every actor worker."""
    actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    knobs = config.entropy_rl
    return partial(
        entropy_rl_loss,
        config=actor_config,
        sent=sent_config(knobs.token_kl),
        token_kl=bool(knobs.token_kl.enable),
        selection=str(knobs.token_kl.selection),
        aer=bool(knobs.aer.enable),
    )
