"""The installed actor loss, called exactly as veRL's engine calls a ``set_loss_fn`` loss:
``fn(model_output=..., data=micro_batch, dp_group=None)`` with veRL's TensorDict layout
(``left_right_2_no_padding``, nested jagged log-probs over the whole sequence)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import agg_loss, kl_penalty
from verl.utils import tensordict_utils as tu
from verl.utils.metric import Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import left_right_2_no_padding

from entropy_rl.losses import compute_policy_loss, select_tokens
from recipe.sent.hooks import FIELD_ENTROPY_COEF, FIELD_TOKEN_SET, sent_config
from recipe.sent.worker_loss import make_actor_loss

CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "conf"))


def cfg_for(method, *extra):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="entropy_rl", overrides=[f"method={method}", *extra])
    OmegaConf.resolve(cfg)
    return cfg


def make_micro_batch(B=5, P=6, R=9, seed=0, dtype=torch.float64):
    """A micro-batch as veRL's engine hands it to the loss, plus padded views for the reference."""
    g = torch.Generator().manual_seed(seed)
    plen = torch.randint(2, P + 1, (B,), generator=g)
    rlen = torch.randint(1, R + 1, (B,), generator=g)
    prompt_mask = (torch.arange(P)[None] >= (P - plen)[:, None]).long()  # left padded
    resp_mask = (torch.arange(R)[None] < rlen[:, None]).long()  # right padded
    attention_mask = torch.cat([prompt_mask, resp_mask], 1)
    prompts = torch.randint(3, 20, (B, P), generator=g) * prompt_mask
    responses = torch.randint(3, 20, (B, R), generator=g) * resp_mask
    position_ids = torch.clamp(torch.cumsum(attention_mask, 1) - 1, min=0)
    ent = torch.rand(B, R, generator=g, dtype=dtype) * 2 * resp_mask
    logp = -torch.rand(B, R, generator=g, dtype=dtype) * 3 * resp_mask
    old = (logp + 0.2 * torch.randn(B, R, generator=g, dtype=dtype)) * resp_mask
    ref = (logp - 0.1 * torch.rand(B, R, generator=g, dtype=dtype)) * resp_mask
    adv = torch.randn(B, 1, generator=g, dtype=dtype).expand(B, R) * resp_mask
    dp = DataProto.from_single_dict(
        {
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], 1),
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "response_mask": resp_mask,
            "old_log_probs": old,
            "advantages": adv.contiguous(),
            "ref_log_prob": ref,
        }
    )
    return dp, dict(plen=plen, rlen=rlen, ent=ent, logp=logp, old=old, ref=ref, adv=adv.contiguous(), mask=resp_mask)


def to_engine_layout(dp: DataProto, B: int):
    td = left_right_2_no_padding(dp.to_tensordict())
    n_tokens = int(dp.batch["response_mask"].sum())
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=n_tokens, global_batch_size=B)
    return td


def nested_full_sequence(per_response: torch.Tensor, plen, rlen, requires_grad=False):
    """Model output as the engine makes it: one value per sequence token, jagged.
    Response token t of row i sits at position plen_i − 1 + t (the left shift)."""
    seqs = []
    for i in range(per_response.shape[0]):
        full = torch.zeros(int(plen[i] + rlen[i]), dtype=per_response.dtype)
        full[plen[i] - 1 : plen[i] - 1 + rlen[i]] = per_response[i, : rlen[i]]
        seqs.append(full)
    leaf = torch.cat(seqs).requires_grad_(requires_grad)
    offsets = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    return torch.nested.nested_tensor_from_jagged(leaf, offsets=offsets), leaf


def scalar(v):
    return v.aggregate() if isinstance(v, Metric) else v


@pytest.mark.parametrize(
    "method,selection",
    [("sent_token_only", "batch"), ("sent_token_only", "micro"), ("aer", "batch"), ("sent_aer", "batch")],
)
def test_installed_loss_equals_core_reference(method, selection):
    cfg = cfg_for(method, f"entropy_rl.token_kl.selection={selection}", "entropy_rl.token_kl.cov_fraction=0.1")
    B = 5
    dp, t = make_micro_batch(B=B)
    sent = sent_config(cfg.entropy_rl.token_kl)
    token_set = select_tokens(t["ent"], t["logp"], t["adv"], t["mask"], sent)
    coef = torch.rand(B, t["mask"].shape[1], dtype=torch.float64) * 0.05 * t["mask"]
    if cfg.entropy_rl.token_kl.enable and selection == "batch":
        dp.batch[FIELD_TOKEN_SET] = token_set
    if cfg.entropy_rl.aer.enable:
        dp.batch[FIELD_ENTROPY_COEF] = coef
    td = to_engine_layout(dp, B)
    lp_nested, lp_leaf = nested_full_sequence(t["logp"], t["plen"], t["rlen"], requires_grad=True)
    ent_nested, _ = nested_full_sequence(t["ent"], t["plen"], t["rlen"])

    fn = make_actor_loss(cfg)
    loss, metrics = fn(model_output={"log_probs": lp_nested, "entropy": ent_nested}, data=td, dp_group=None)
    loss.backward()

    # float64 reference from the core library on the padded views
    logp = t["logp"].clone().requires_grad_(True)
    want, _ = compute_policy_loss(
        t["old"],
        logp,
        t["adv"],
        t["mask"],
        sent,
        token_set=token_set if cfg.entropy_rl.token_kl.enable else None,
        entropy=t["ent"],
        entropy_coef=coef if cfg.entropy_rl.aer.enable else None,
        global_batch_info={"dp_size": 1, "batch_num_tokens": int(t["mask"].sum()), "global_batch_size": B},
    )
    kl = agg_loss(
        kl_penalty(logp, t["ref"], "low_var_kl"), t["mask"], "token-mean", batch_num_tokens=int(t["mask"].sum())
    )
    want = want + 0.001 * kl
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    # the gradient reaching the model output equals the reference gradient, token by token
    got_grad = torch.stack(
        [
            torch.nn.functional.pad(
                lp_leaf.grad[int((t["plen"][:i] + t["rlen"][:i]).sum()) + int(t["plen"][i]) - 1 :][: int(t["rlen"][i])],
                (0, t["mask"].shape[1] - int(t["rlen"][i])),
            )
            for i in range(B)
        ]
    )
    torch.testing.assert_close(got_grad, logp.grad * t["mask"], rtol=1e-10, atol=1e-12)
    if cfg.entropy_rl.token_kl.enable:
        assert scalar(metrics["sent/high_cov_frac"]) > 0
    if cfg.entropy_rl.aer.enable:
        assert "aer/entropy_bonus" in metrics


@pytest.mark.parametrize("method", ["grpo", "clip_cov", "kl_cov", "entropy_bonus", "clip_higher"])
def test_baselines_fall_back_to_verl(method):
    cfg = cfg_for(method)
    B = 5
    dp, t = make_micro_batch(B=B, dtype=torch.float32)
    td = to_engine_layout(dp, B)
    lp_nested, _ = nested_full_sequence(t["logp"], t["plen"], t["rlen"])
    ent_nested, _ = nested_full_sequence(t["ent"], t["plen"], t["rlen"])
    out = {"log_probs": lp_nested, "entropy": ent_nested}
    fn = make_actor_loss(cfg)
    ours, m1 = fn(model_output=out, data=td, dp_group=None)
    theirs, m2 = ppo_loss(fn.keywords["config"], out, to_engine_layout(dp, B), None)
    torch.testing.assert_close(ours, theirs)
    assert set(m1) == set(m2)


def test_batch_selection_requires_the_driver_field():
    cfg = cfg_for("sent_token_only")
    dp, t = make_micro_batch()
    td = to_engine_layout(dp, 5)
    lp, _ = nested_full_sequence(t["logp"], t["plen"], t["rlen"])
    with pytest.raises(KeyError, match=FIELD_TOKEN_SET):
        make_actor_loss(cfg)(model_output={"log_probs": lp, "entropy": lp}, data=td, dp_group=None)


def test_loss_fn_pickles_for_ray():
    import cloudpickle

    fn = make_actor_loss(cfg_for("sent_aer"))
    back = cloudpickle.loads(cloudpickle.dumps(fn))
    assert back.keywords["sent"] == fn.keywords["sent"] and back.keywords["aer"] is True
    assert np.isclose(back.keywords["config"].kl_loss_coef, 0.001)
