"""Numerical edge cases of the SENT / AER loss and their driver-side guards:
empty and one-token micro-batches, ties, all-zero advantages, fewer low-entropy tokens than
asked for, bf16, and NaN / inf inputs — counted by the (sync-free) loss, rejected with field,
step, row and token by the driver. References: tests/test_losses.py (float64, Python loops)."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from verl.trainer.ppo.core_algos import agg_loss

from entropy_rl.losses import (
    NONFINITE_METRIC,
    TOKEN_HIGH_COV,
    TOKEN_LOW,
    TOKEN_LOW_COV,
    TOKEN_OUTSIDE,
    SentKLConfig,
    compute_policy_loss,
    select_tokens,
)
from recipe.sent.hooks import EntropyHooks, check_finite
from tests.test_losses import make_batch, ref_loss, ref_sets
from tests.test_worker_loss import cfg_for, make_micro_batch, nested_full_sequence, scalar, to_engine_layout


@functools.lru_cache(maxsize=None)
def cached_cfg(method, *overrides):
    return cfg_for(method, *overrides)  # Hydra's compose costs ~0.8 s; the tests only read it


MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"]
GLOBAL = {"dp_size": 2, "batch_num_tokens": 50, "global_batch_size": 8, "loss_scale_factor": 7}


def full_loss(old, logp, adv, mask, cfg, sets, ent, **kw):
    """Loss with every term on (SENT KL to the reference when cfg.kl says so, AER bonus)."""
    return compute_policy_loss(
        old,
        logp,
        adv,
        mask,
        cfg,
        token_set=sets,
        ref_log_prob=old - 0.1,
        entropy=ent,
        entropy_coef=torch.full_like(ent, 0.05),
        **kw,
    )


def assert_matches_reference(ent, logp, old, adv, mask, cfg):
    """Sets equal the float64 reference; loss and gradients equal the Python-loop reference."""
    sets = select_tokens(ent, logp, adv, mask, cfg)
    assert sets.tolist() == ref_sets(ent.tolist(), logp.tolist(), adv.tolist(), mask.tolist(), cfg)
    lp1 = logp.clone().requires_grad_(True)
    loss, metrics = compute_policy_loss(old, lp1, adv, mask, cfg, token_set=sets)
    loss.backward()
    lp2 = logp.clone().requires_grad_(True)
    want = ref_loss(old, lp2, adv, mask.tolist(), sets.tolist(), cfg)
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lp1.grad, lp2.grad, rtol=1e-12, atol=1e-12)
    assert all(torch.isfinite(v) for v in metrics.values()) and metrics[NONFINITE_METRIC] == 0
    return sets, metrics


# ---------------------------------------------------------------- no valid token
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gbi", [{}, GLOBAL], ids=["local", "global"])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
def test_empty_micro_batch_is_finite_with_zero_gradient(mode, gbi, mask_dtype):
    ent, logp, old, adv, mask = make_batch(B=3, T=7, seed=21)
    mask = torch.zeros(3, 7, dtype=mask_dtype)
    for cfg in (SentKLConfig(cov_fraction=0.1), SentKLConfig(mode="paper", kl="k1", tau_h=1.0)):
        sets = select_tokens(ent, logp, adv, mask, cfg)
        assert torch.all(sets == TOKEN_OUTSIDE)
        lp, e = logp.clone().requires_grad_(True), ent.clone().requires_grad_(True)
        loss, metrics = full_loss(old, lp, adv, mask, cfg, sets, e, loss_agg_mode=mode, global_batch_info=gbi)
        loss.backward()
        assert loss.item() == 0.0, "an empty micro-batch adds nothing to the global sum"
        bad = {k: v.item() for k, v in metrics.items() if not torch.isfinite(v)}
        assert not bad, bad
        assert metrics[NONFINITE_METRIC] == 0
        assert torch.all(lp.grad == 0) and torch.all(e.grad == 0)
    if not gbi and mode != "token-sum":
        # the NaN guarded against: veRL's agg_loss divides by the local count, 0 here
        assert torch.isnan(agg_loss(torch.ones(3, 7), mask, mode))


def test_empty_micro_batch_through_the_installed_loss():
    """A micro-batch with no valid response token, through veRL's engine layout, inside a
    global batch that has tokens (every response holds at least its EOS token)."""
    from verl.utils import tensordict_utils as tu

    cfg = cached_cfg("sent_aer", "entropy_rl.token_kl.selection=micro")
    dp, t = make_micro_batch(B=3, seed=3)
    dp.batch["response_mask"].zero_()
    dp.batch["aer_entropy_coef"] = torch.zeros_like(t["ent"])
    td = to_engine_layout(dp, 3)
    tu.assign_non_tensor(td, batch_num_tokens=40, global_batch_size=8)
    lp_nested, lp_leaf = nested_full_sequence(t["logp"], t["plen"], t["rlen"], requires_grad=True)
    ent_nested, _ = nested_full_sequence(t["ent"], t["plen"], t["rlen"])
    from recipe.sent.worker_loss import make_actor_loss

    loss, metrics = make_actor_loss(cfg)(
        model_output={"log_probs": lp_nested, "entropy": ent_nested}, data=td, dp_group=None
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.all(lp_leaf.grad == 0)
    assert all(math.isfinite(scalar(v)) for v in metrics.values())


# ---------------------------------------------------------------- one valid token
@pytest.mark.parametrize(
    "cfg,expected",
    [
        (SentKLConfig(), TOKEN_LOW_COV),  # k = 1: the token is its own top-1 and bottom-1 → β_low (release)
        (SentKLConfig(mode="paper"), TOKEN_HIGH_COV),
        (SentKLConfig(min_selected=0), TOKEN_LOW),  # k = ⌊2e-4·1⌋ = 0: in T_low, no KL (release)
        (SentKLConfig(mode="paper", min_selected=0), TOKEN_LOW),  # ... β_low (paper)
        (SentKLConfig(tau_h=5.0, min_selected=3), TOKEN_LOW_COV),
        (SentKLConfig(tau_h=0.0), TOKEN_OUTSIDE),  # H < 0 selects nothing
    ],
    ids=str,
)
def test_one_valid_token(cfg, expected):
    ent, logp, old, adv, mask = make_batch(B=3, T=6, seed=22)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 4] = True
    lp = logp.clone().requires_grad_(True)
    sets, _ = assert_matches_reference(ent, logp, old, adv, mask, cfg)
    assert sets[1, 4] == expected and int((sets != TOKEN_OUTSIDE).sum()) == int(expected != TOKEN_OUTSIDE)
    loss, _ = full_loss(old, lp, adv, mask, cfg, sets, ent)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad[1, 4])
    grad = lp.grad.clone()
    grad[1, 4] = 0
    assert torch.all(grad == 0), "only the valid token gets a gradient"


# ---------------------------------------------------------------- ties
@pytest.mark.parametrize(
    "cfg",
    [
        SentKLConfig(cov_fraction=0.1),
        SentKLConfig(mode="paper", cov_fraction=0.1),
        SentKLConfig(cov_fraction=0.4, low_entropy_fraction=0.5, min_selected=2),
        SentKLConfig(tau_h=1.0, cov_fraction=0.2),
    ],
    ids=str,
)
def test_ties_are_broken_by_position(cfg):
    """All-equal entropies → T_low is the first n_low valid tokens (row-major); all-equal Cov
    (constant logπ, or all-zero advantages) → the top-k and bottom-k are both the first k of
    T_low: release mode gives them β_low (the release writes its low set last), so β_high
    reaches no token; paper mode gives them β_high and the rest of T_low β_low."""
    ent, logp, old, adv, mask = make_batch(B=4, T=9, seed=23)
    valid = [(b, t) for b in range(4) for t in range(9) if mask[b, t]]
    n_low = (
        len(valid)
        if cfg.tau_h is not None
        else min(max(1, math.floor(len(valid) * cfg.low_entropy_fraction)), len(valid))
    )
    k = min(max(cfg.min_selected, math.floor(n_low * cfg.cov_fraction)), n_low)
    flat = torch.full_like(ent, 0.7)
    sets, _ = assert_matches_reference(flat, logp, old, adv, mask, cfg)  # entropy ties, distinct Cov
    assert {bt for bt in valid if sets[bt] != TOKEN_OUTSIDE} == set(valid[:n_low])
    for lp_, adv_ in ((torch.full_like(logp, -1.25), adv), (logp, torch.zeros_like(adv))):
        sets, metrics = assert_matches_reference(flat, lp_, old, adv_, mask, cfg)
        top = TOKEN_LOW_COV if cfg.mode == "release" else TOKEN_HIGH_COV
        assert {bt for bt in valid if sets[bt] == top} == set(valid[:k])
        assert not (sets == (TOKEN_HIGH_COV if cfg.mode == "release" else TOKEN_LOW_COV)).any()
        assert {bt for bt in valid if sets[bt] == TOKEN_LOW} == set(valid[k:n_low])
    # ties are deterministic: the same call, the same answer, and bf16 ties likewise
    assert torch.equal(select_tokens(flat, logp, adv, mask, cfg), select_tokens(flat, logp, adv, mask, cfg))


def test_all_zero_advantages_leave_only_the_kl():
    """A = 0 everywhere (every group all-correct or all-wrong): no surrogate, finite loss,
    equal to the float64 reference, and the KL term alone in the loss."""
    ent, logp, old, adv, mask = make_batch(B=5, T=11, seed=24)
    cfg = SentKLConfig(cov_fraction=0.2)
    sets, metrics = assert_matches_reference(ent, logp, old, torch.zeros_like(adv), mask, cfg)
    assert metrics["actor/pg_clipfrac"] == 0 and metrics["sent/kl_loss"] > 0
    torch.testing.assert_close(metrics["actor/pg_loss"], torch.zeros((), dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        metrics["sent/kl_loss"], compute_policy_loss(old, logp, torch.zeros_like(adv), mask, cfg, token_set=sets)[0]
    )


# ---------------------------------------------------------------- fewer low-entropy tokens than k
def test_min_selected_larger_than_t_low():
    ent, logp, old, adv, mask = make_batch(B=2, T=6, seed=25)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :2] = mask[1, 3:5] = True  # 4 valid tokens, |T_low| = ⌊0.5·4⌋ = 2
    cfg = SentKLConfig(low_entropy_fraction=0.5, min_selected=5)
    sets, metrics = assert_matches_reference(ent, logp, old, adv, mask, cfg)
    # k is capped at |T_low|: all of T_low is in the top k and in the bottom k; release → β_low
    assert int((sets == TOKEN_LOW_COV).sum()) == 2 and metrics["sent/low_cov_frac"] == 0.5
    assert int((sets == TOKEN_HIGH_COV).sum()) == 0
    sets, metrics = assert_matches_reference(ent, logp, old, adv, mask, replace(cfg, mode="paper"))
    assert int((sets == TOKEN_HIGH_COV).sum()) == 2 and metrics["sent/high_cov_frac"] == 0.5


@pytest.mark.parametrize("mode", ["release", "paper"])
def test_cov_fraction_below_one_token(mode):
    """cov_fraction·|T_low| < 1 and min_selected = 0: no covariance set at all."""
    ent, logp, old, adv, mask = make_batch(B=4, T=10, seed=26)
    cfg = SentKLConfig(mode=mode, cov_fraction=0.01, min_selected=0)
    sets, metrics = assert_matches_reference(ent, logp, old, adv, mask, cfg)
    assert not ((sets == TOKEN_HIGH_COV) | (sets == TOKEN_LOW_COV)).any() and (sets == TOKEN_LOW).any()
    assert (metrics["sent/kl_loss"] == 0) == (mode == "release"), "release: T_low without Cov extremes gets no KL"


def test_tau_h_that_selects_nothing_is_plain_ppo():
    ent, logp, old, adv, mask = make_batch(B=4, T=10, seed=27)
    ent = ent.float().double()  # float32 values: the reference compares what the selection compares
    cfg = SentKLConfig(tau_h=float(ent.min()))  # H_t < min H: empty T_low
    sets, metrics = assert_matches_reference(ent, logp, old, adv, mask, cfg)
    assert torch.all(sets == TOKEN_OUTSIDE)
    assert metrics["sent/kl_loss"] == 0 and metrics["sent/low_entropy_frac"] == 0
    plain, _ = compute_policy_loss(old, logp, adv, mask, cfg)
    assert torch.equal(compute_policy_loss(old, logp, adv, mask, cfg, token_set=sets)[0], plain)


def test_tau_h_is_compared_exactly_not_rounded_to_float32():
    """H_t < τ_H as real numbers: a float32 entropy just below a τ_H that float32 cannot hold
    is in T_low (comparing with τ_H rounded to the nearest float32 would drop it)."""
    h = torch.tensor([[0.1, 0.2]], dtype=torch.float32)  # float32(0.1) = 0.100000001490116...
    tau = float(h[0, 0]) + 1e-12  # above the token's entropy, below the next float32
    assert float(torch.tensor(tau, dtype=torch.float32)) == float(h[0, 0])  # rounds onto it
    z = torch.zeros(1, 2)
    sets = select_tokens(h, z, z, torch.ones(1, 2, dtype=torch.bool), SentKLConfig(tau_h=tau))
    assert sets[0, 0] != TOKEN_OUTSIDE and sets[0, 1] == TOKEN_OUTSIDE
    with pytest.raises(ValueError, match="tau_h"):
        SentKLConfig(tau_h=math.nan)


# ---------------------------------------------------------------- bf16
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "cfg", [SentKLConfig(cov_fraction=0.05), SentKLConfig(mode="paper", cov_fraction=0.05, tau_h=1.0)], ids=str
)
def test_low_precision_inputs(dtype, cfg):
    """bf16/fp16 inputs select exactly what their float32 copies select (bf16 rounding makes
    many ties); the loss is finite and close to a float32 computation on the same values."""
    ent, logp, old, adv, mask = make_batch(B=8, T=64, seed=28, dtype=torch.float32)
    low = [x.to(dtype) for x in (ent, logp, old, adv)]
    ent16, logp16, old16, adv16 = low
    ent32, logp32, old32, adv32 = (x.float() for x in low)
    sets = select_tokens(ent16, logp16, adv16, mask, cfg)
    assert torch.equal(sets, select_tokens(ent32, logp32, adv32, mask, cfg))
    assert sets.tolist() == ref_sets(ent32.tolist(), logp32.tolist(), adv32.tolist(), mask.tolist(), cfg)
    if dtype == torch.bfloat16:
        assert len(set(ent16[mask].tolist())) < int(mask.sum()), "bf16 rounding must have made entropy ties"

    def run(o, lp, a, e):
        lp = lp.clone().requires_grad_(True)
        e = e.clone().requires_grad_(True)
        loss, metrics = compute_policy_loss(
            o, lp, a, mask, cfg, token_set=sets, entropy=e, entropy_coef=torch.full_like(e, 0.05)
        )
        loss.backward()
        return loss, metrics, lp.grad

    l16, m16, g16 = run(old16, logp16, adv16, ent16)
    l32, m32, g32 = run(old32, logp32, adv32, ent32)
    assert l16.dtype == dtype and torch.isfinite(l16) and all(torch.isfinite(v) for v in m16.values())
    torch.testing.assert_close(l16.float(), l32, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(g16.float(), g32, rtol=2e-2, atol=1e-4)
    for k in ("sent/low_entropy_frac", "sent/high_cov_frac", "sent/kl_low_entropy"):
        torch.testing.assert_close(m16[k].float(), m32[k], rtol=2e-2, atol=1e-3)


# ---------------------------------------------------------------- NaN / inf: counted by the loss
FIELDS = ["old_log_prob", "log_prob", "advantages", "entropy", "entropy_coef", "ref_log_prob", "rollout_is_weights"]


def _loss_inputs(seed=29):
    ent, logp, old, adv, mask = make_batch(B=4, T=12, seed=seed)
    return {
        "old_log_prob": old,
        "log_prob": logp,
        "advantages": adv,
        "entropy": ent,
        "entropy_coef": torch.full_like(ent, 0.05),
        "ref_log_prob": logp - 0.1,
        "rollout_is_weights": torch.ones_like(ent),
    }, mask


def _count(inputs, mask, cfg=SentKLConfig(kl="k1", cov_fraction=0.1)):
    sets = select_tokens(inputs["entropy"], inputs["log_prob"], inputs["advantages"], mask, cfg)
    _, metrics = compute_policy_loss(
        inputs["old_log_prob"],
        inputs["log_prob"],
        inputs["advantages"],
        mask,
        cfg,
        token_set=sets,
        ref_log_prob=inputs["ref_log_prob"],
        entropy=inputs["entropy"],
        entropy_coef=inputs["entropy_coef"],
        rollout_is_weights=inputs["rollout_is_weights"],
    )
    return metrics[NONFINITE_METRIC].item()


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["valid", "padding"])
def test_loss_counts_nonfinite_inputs(field, value, where):
    inputs, mask = _loss_inputs()
    assert _count(inputs, mask) == 0
    b, t = (0, 0) if where == "valid" else (int((~mask).nonzero()[0, 0]), int((~mask).nonzero()[0, 1]))
    assert bool(mask[b, t]) == (where == "valid")
    inputs[field] = inputs[field].clone()
    inputs[field][b, t] = value
    assert _count(inputs, mask) == 1
    other = FIELDS[(FIELDS.index(field) + 1) % len(FIELDS)]
    inputs[other] = inputs[other].clone()
    inputs[other][-1, 0] = math.nan
    assert _count(inputs, mask) == 2, "one count per input field holding a bad value"


def test_nonfinite_count_only_covers_what_the_loss_reads():
    """No entropy coefficient: the entropy is not read, so its NaN does not count; with the
    |logπ − logπ_old| KL, neither does the reference log-prob."""
    inputs, mask = _loss_inputs()
    cfg = SentKLConfig(cov_fraction=0.1)
    sets = select_tokens(inputs["entropy"], inputs["log_prob"], inputs["advantages"], mask, cfg)
    inputs["entropy"][0, 0] = math.nan
    inputs["ref_log_prob"][0, 0] = math.nan
    _, m = compute_policy_loss(
        inputs["old_log_prob"],
        inputs["log_prob"],
        inputs["advantages"],
        mask,
        cfg,
        token_set=sets,
        ref_log_prob=inputs["ref_log_prob"],
        entropy=inputs["entropy"],
    )
    assert m[NONFINITE_METRIC] == 0


def test_installed_loss_reports_nonfinite_inputs():
    """Through the worker-side loss veRL calls: a NaN old log-prob shows in its metrics."""
    from recipe.sent.worker_loss import make_actor_loss

    cfg = cached_cfg("sent_aer", "entropy_rl.token_kl.selection=micro")
    dp, t = make_micro_batch(B=4, seed=5)
    dp.batch["old_log_probs"][1, 0] = math.nan
    dp.batch["aer_entropy_coef"] = torch.full_like(t["ent"], 0.01) * t["mask"]
    td = to_engine_layout(dp, 4)
    lp_nested, _ = nested_full_sequence(t["logp"], t["plen"], t["rlen"], requires_grad=True)
    ent_nested, _ = nested_full_sequence(t["ent"], t["plen"], t["rlen"])
    _, metrics = make_actor_loss(cfg)(
        model_output={"log_probs": lp_nested, "entropy": ent_nested}, data=td, dp_group=None
    )
    assert scalar(metrics[NONFINITE_METRIC]) == 1


# ---------------------------------------------------------------- NaN / inf: rejected by the driver
def make_hooks(method="sent_aer"):
    return EntropyHooks(cached_cfg(method, "entropy_rl.aer.anchor_steps=1").entropy_rl)


def driver_batch(seed=30):
    ent, logp, old, adv, mask = make_batch(B=6, T=10, seed=seed, dtype=torch.float32)
    return {
        "entropy": ent * mask,
        "old_log_prob": logp * mask,
        "advantages": adv * mask,
        "response_mask": mask.long(),
        "correct": np.array([1, 0, 1, 1, 0, 0], dtype=float),
        "uids": ["a", "a", "b", "b", "c", "c"],
        "seq_logprobs": [-3.0] * 6,
    }


@pytest.mark.parametrize(
    "arg,field", [("entropy", "entropys"), ("old_log_prob", "old_log_probs"), ("advantages", "advantages")]
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["valid", "padding"])
def test_driver_rejects_nonfinite_token_fields(arg, field, value, where):
    hooks = make_hooks()
    batch = driver_batch()
    mask = batch["response_mask"]
    b, t = (2, 1) if where == "valid" else (int((mask == 0).nonzero()[0, 0]), int((mask == 0).nonzero()[0, 1]))
    assert bool(mask[b, t]) == (where == "valid")
    batch[arg][b, t] = value
    n_bad = 1 + ((b, t) != (5, 9))
    batch[arg][5, 9] = value  # the last cell: a later bad value is counted, the first one named
    before = hooks.state_dict()
    kind = "a valid response token" if where == "valid" else "padding"
    with pytest.raises(
        ValueError,
        match=rf"at step 7: field '{field}' holds {n_bad} non-finite .* row {b} "
        rf"\(dataset row {100 + b}\), token {t} \({kind}\)",
    ):
        hooks.on_batch(**batch, step=7, rows=list(range(100, 106)))
    assert hooks.state_dict() == before and hooks.aer.steps == 0, "a rejected batch changes no state"


@pytest.mark.parametrize("arg,field", [("correct", "acc"), ("seq_logprobs", "rollout_log_probs")])
def test_driver_rejects_nonfinite_response_fields(arg, field):
    hooks = make_hooks()
    batch = driver_batch()
    batch[arg] = list(batch[arg])
    batch[arg][3] = math.nan
    with pytest.raises(ValueError, match=rf"step 2: field '{field}.*' holds 1 non-finite .* at row 3\."):
        hooks.on_batch(**batch, step=2)


def test_driver_accepts_clean_batches_and_edge_cases():
    """A clean batch passes; so do the edge cases above at the driver (ties, zero advantages,
    an empty response) — only non-finite values are refused."""
    hooks = make_hooks()
    batch = driver_batch()
    fields, metrics = hooks.on_batch(**batch, step=1)
    assert set(fields) == {"sent_token_set", "aer_entropy_coef"} and all(np.isfinite(list(metrics.values())))
    batch["advantages"] = torch.zeros_like(batch["advantages"])
    batch["entropy"] = torch.full_like(batch["entropy"], 0.5) * batch["response_mask"]
    batch["response_mask"][0] = 0
    fields, metrics = hooks.on_batch(**batch, step=2)
    assert all(math.isfinite(v) for k, v in metrics.items() if k != "aer/target_entropy" and k != "aer/h0")
    assert torch.all(fields["sent_token_set"][0] == TOKEN_OUTSIDE)
    check_finite({"x": torch.tensor([[1.0, 2.0]]), "ids": torch.tensor([[1, 2]])}, torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"\(step unknown\): field 'x'"):
        check_finite({"x": torch.tensor([[1.0, math.nan]])}, torch.ones(1, 2))


# ---------------------------------------------------------------- still sync-free
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gbi", [{}, GLOBAL], ids=["local", "global"])
def test_new_paths_run_on_meta(mode, dtype, gbi):
    """The empty-batch guards (local counts), the non-finite count, bf16 and τ_H thresholds
    run on meta tensors: no host sync anywhere."""
    B, T = 4, 32
    meta = lambda: torch.empty(B, T, device="meta", dtype=dtype)  # noqa: E731
    mask = torch.empty(B, T, device="meta", dtype=torch.bool)
    for cfg in (SentKLConfig(kl="k1"), SentKLConfig(tau_h=0.3, mode="paper", min_selected=0)):
        sets = select_tokens(meta(), meta(), meta(), mask, cfg)
        loss, metrics = compute_policy_loss(
            meta(),
            meta().requires_grad_(),
            meta(),
            mask,
            cfg,
            token_set=sets,
            ref_log_prob=meta(),
            entropy=meta(),
            entropy_coef=meta(),
            rollout_is_weights=meta(),
            loss_agg_mode=mode,
            global_batch_info=gbi,
        )
        assert loss.device.type == "meta" and metrics[NONFINITE_METRIC].device.type == "meta"
        assert all(v.device.type == "meta" and v.dim() == 0 for v in metrics.values())
