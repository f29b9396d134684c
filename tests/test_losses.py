"""SENT selective KL-Cov: exact sets, exact loss and gradients against an independent float64
reference written with plain Python loops, int64/float/bool masks, and no host sync (meta)."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_rl.losses import (
    NONFINITE_METRIC,
    TOKEN_HIGH_COV,
    TOKEN_LOW,
    TOKEN_LOW_COV,
    TOKEN_OUTSIDE,
    SentKLConfig,
    compute_policy_loss,
    select_tokens,
    sent_kl_coefficients,
)


# ---------------------------------------------------------------- independent reference
def ref_sets(entropy, logp, adv, mask, cfg):
    """Per-token set ids by sorting Python lists (no tensor tricks)."""
    return ref_detail(entropy, logp, adv, mask, cfg)[0]


def ref_detail(entropy, logp, adv, mask, cfg, cov_of=None):
    """:func:`ref_sets`, plus T_low (as (b, t) pairs), Cov per T_low token and k.

    ``cov_of(low)``: Cov per T_low token from elsewhere (e.g. float32), instead of float64.
    """
    B, T = len(entropy), len(entropy[0])
    valid = [(b, t) for b in range(B) for t in range(T) if mask[b][t]]
    if cfg.tau_h is None:
        n_low = min(max(1, math.floor(len(valid) * cfg.low_entropy_fraction)), len(valid))
        low = sorted(valid, key=lambda bt: (entropy[bt[0]][bt[1]], bt[0] * T + bt[1]))[:n_low]
    else:
        low = [bt for bt in valid if entropy[bt[0]][bt[1]] < cfg.tau_h]
    out = [[TOKEN_OUTSIDE] * T for _ in range(B)]
    if not low:
        return out, low, {}, 0
    for b, t in low:
        out[b][t] = TOKEN_LOW
    mlp = sum(logp[b][t] for b, t in low) / len(low)
    madv = sum(adv[b][t] for b, t in low) / len(low)
    cov = {bt: (logp[bt[0]][bt[1]] - mlp) * (adv[bt[0]][bt[1]] - madv) for bt in low}
    if cov_of is not None:
        cov = cov_of(low)
    k = min(max(cfg.min_selected, math.floor(len(low) * cfg.cov_fraction)), len(low))
    flat = lambda bt: bt[0] * T + bt[1]  # noqa: E731
    high = sorted(low, key=lambda bt: (-cov[bt], flat(bt)))[:k]
    if cfg.mode == "release":
        for b, t in sorted(low, key=lambda bt: (cov[bt], flat(bt)))[:k]:
            out[b][t] = TOKEN_LOW_COV
    for b, t in high:
        out[b][t] = TOKEN_HIGH_COV
    return out, low, cov, k


def ref_loss(old, logp, adv, mask, sets, cfg, ent=None, ecoef=None, ref=None, eps=0.2, c=3.0):
    """Token-mean loss as a Python sum over tokens, float64 autograd scalars."""
    B, T = old.shape
    coef = {TOKEN_OUTSIDE: 0.0, TOKEN_HIGH_COV: cfg.beta_high, TOKEN_LOW_COV: cfg.beta_low,
            TOKEN_LOW: cfg.beta_low if cfg.mode == "paper" else 0.0}
    total, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if not mask[b][t]:
                continue
            n += 1
            r = torch.exp(logp[b, t] - old[b, t])
            a = adv[b, t]
            if cfg.clip:
                s = torch.maximum(-a * r, -a * torch.clamp(r, 1 - eps, 1 + eps))
                if a < 0:
                    s = torch.minimum(-a * c, s)
            else:
                s = -a * r
            if cfg.kl == "abs":
                kl = torch.abs(logp[b, t] - old[b, t])
            else:  # k1
                kl = logp[b, t] - ref[b, t]
            s = s + coef[sets[b][t]] * kl
            if ecoef is not None:
                s = s - ecoef[b, t] * ent[b, t]
            total = total + s
    return total / n


def make_batch(B=6, T=40, seed=0, mask_dtype=torch.bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(mask_dtype)
    ent = torch.rand(B, T, generator=g, dtype=dtype) * 2
    logp = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=dtype)
    adv = torch.randn(B, 1, generator=g, dtype=dtype).expand(B, T).contiguous()
    return ent, logp, old, adv, mask


CFGS = [
    SentKLConfig(),
    SentKLConfig(cov_fraction=0.05),
    SentKLConfig(mode="paper", cov_fraction=0.05),
    SentKLConfig(cov_fraction=0.3, low_entropy_fraction=0.5),  # covariance sets overlap
    SentKLConfig(tau_h=0.7, cov_fraction=0.1, min_selected=2),
    SentKLConfig(clip=False, cov_fraction=0.1),
]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: f"{c.mode}-k{c.cov_fraction}-tau{c.tau_h}-clip{c.clip}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sets_match_reference(cfg, seed):
    ent, logp, old, adv, mask = make_batch(seed=seed)
    got = select_tokens(ent, logp, adv, mask, cfg).tolist()
    assert got == ref_sets(ent.tolist(), logp.tolist(), adv.tolist(), mask.tolist(), cfg)


def test_set_sizes_release_defaults():
    ent, logp, old, adv, mask = make_batch(B=64, T=200, seed=3)
    n = int(mask.sum())
    s = select_tokens(ent, logp, adv, mask, SentKLConfig())
    n_low = math.floor(0.8 * n)
    assert int((s != TOKEN_OUTSIDE).sum()) == n_low
    assert int((s == TOKEN_HIGH_COV).sum()) == max(1, math.floor(n_low * 2e-4))
    assert int((s == TOKEN_LOW_COV).sum()) == max(1, math.floor(n_low * 2e-4))
    assert int((s[~mask] != TOKEN_OUTSIDE).sum()) == 0, "padding must never be selected"
    # T_low really is the lowest-entropy share of valid tokens
    assert ent[(s != TOKEN_OUTSIDE)].max() <= ent[mask & (s == TOKEN_OUTSIDE)].min()


def test_coefficients_values():
    ent, logp, old, adv, mask = make_batch(seed=4)
    cfg = SentKLConfig(cov_fraction=0.1, beta_high=0.7, beta_low=0.3)
    s = select_tokens(ent, logp, adv, mask, cfg)
    c = sent_kl_coefficients(ent, logp, adv, mask, cfg)
    assert torch.equal(c == 0.7, s == TOKEN_HIGH_COV)
    assert torch.equal(c == 0.3, s == TOKEN_LOW_COV)
    assert torch.all(c[(s == TOKEN_LOW) | (s == TOKEN_OUTSIDE)] == 0)
    cp = sent_kl_coefficients(ent, logp, adv, mask, SentKLConfig(mode="paper", cov_fraction=0.1))
    sp = select_tokens(ent, logp, adv, mask, SentKLConfig(mode="paper", cov_fraction=0.1))
    assert torch.all(cp[sp == TOKEN_LOW] == 0.05) and torch.all(cp[sp == TOKEN_OUTSIDE] == 0)


@pytest.mark.parametrize("mask_dtype", [torch.int64, torch.float32, torch.int32])
def test_mask_dtypes_equal_bool(mask_dtype):
    """The release indexed with an int64 mask (adv[mask] gathered rows 0/1): here any dtype masks."""
    ent, logp, old, adv, mask = make_batch(seed=5)
    cfg = SentKLConfig(cov_fraction=0.1)
    want = select_tokens(ent, logp, adv, mask, cfg)
    got = select_tokens(ent, logp, adv, mask.to(mask_dtype), cfg)
    assert torch.equal(got, want)
    l1, _ = compute_policy_loss(old, logp, adv, mask, cfg, token_set=want)
    l2, _ = compute_policy_loss(old, logp, adv, mask.to(mask_dtype), cfg, token_set=got)
    torch.testing.assert_close(l1, l2)
    # the released bug really is different: int64 indexing gathers whole rows 0 and 1
    assert adv[mask.long()].shape != adv[mask].shape


@pytest.mark.parametrize("cfg", CFGS[:3] + CFGS[5:], ids=str)
def test_loss_and_grad_match_reference(cfg):
    ent, logp, old, adv, mask = make_batch(B=4, T=12, seed=6)
    ecoef = torch.rand(4, 12, dtype=torch.float64) * 0.1
    sets = select_tokens(ent, logp, adv, mask, cfg)

    lp1 = logp.clone().requires_grad_(True)
    e1 = ent.clone().requires_grad_(True)
    loss, metrics = compute_policy_loss(old, lp1, adv, mask, cfg, token_set=sets, entropy=e1, entropy_coef=ecoef)
    loss.backward()

    lp2 = logp.clone().requires_grad_(True)
    e2 = ent.clone().requires_grad_(True)
    want = ref_loss(old, lp2, adv, mask.tolist(), sets.tolist(), cfg, ent=e2, ecoef=ecoef)
    want.backward()

    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lp1.grad, lp2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-12, atol=1e-12)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())


def test_kl_to_reference_policy():
    ent, logp, old, adv, mask = make_batch(B=3, T=10, seed=7)
    ref = logp - 0.2
    cfg = SentKLConfig(kl="k1", mode="paper", cov_fraction=0.2)
    sets = select_tokens(ent, logp, adv, mask, cfg)
    lp1 = logp.clone().requires_grad_(True)
    loss, _ = compute_policy_loss(old, lp1, adv, mask, cfg, token_set=sets, ref_log_prob=ref)
    loss.backward()
    lp2 = logp.clone().requires_grad_(True)
    want = ref_loss(old, lp2, adv, mask.tolist(), sets.tolist(), cfg, ref=ref)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(lp1.grad, lp2.grad)
    with pytest.raises(ValueError, match="ref_log_prob"):
        compute_policy_loss(old, logp, adv, mask, cfg, token_set=sets)


def test_no_token_set_is_plain_ppo():
    """Without a token set the loss is veRL's vanilla clipped surrogate."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla

    ent, logp, old, adv, mask = make_batch(seed=8, dtype=torch.float32)
    ours, _ = compute_policy_loss(old, logp, adv, mask, SentKLConfig())
    cfg = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0,
                            "global_batch_info": {}})

    class C(dict):  # veRL reads attributes and .get and global_batch_info
        __getattr__ = dict.__getitem__

    theirs, _ = compute_policy_loss_vanilla(old, logp, adv, mask, "token-mean", C(OmegaConf.to_container(cfg)))
    torch.testing.assert_close(ours, theirs)


def test_aggregation_respects_global_batch_info():
    """Two micro-batches aggregated with global token count equal the whole batch at once."""
    ent, logp, old, adv, mask = make_batch(B=8, T=20, seed=9)
    cfg = SentKLConfig(cov_fraction=0.1)
    sets = select_tokens(ent, logp, adv, mask, cfg)  # batch-wide selection
    whole, _ = compute_policy_loss(old, logp, adv, mask, cfg, token_set=sets, entropy=ent, entropy_coef=0.01)
    gbi = {"dp_size": 1, "batch_num_tokens": mask.sum(), "global_batch_size": 8}
    parts = sum(
        compute_policy_loss(old[s], logp[s], adv[s], mask[s], cfg, token_set=sets[s], entropy=ent[s],
                            entropy_coef=0.01, global_batch_info=gbi)[0]
        for s in (slice(0, 3), slice(3, 8))
    )
    torch.testing.assert_close(parts, whole)


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm",
                                  "seq-mean-token-mean"])
@pytest.mark.parametrize("gbi", [{}, {"dp_size": 2, "batch_num_tokens": 123, "global_batch_size": 16,
                                      "loss_scale_factor": 7}])
def test_term_metrics_equal_verl_agg_loss(mode, gbi):
    """Each term's metric (computed from per-row sums) is veRL's agg_loss of that term."""
    from verl.trainer.ppo.core_algos import agg_loss

    ent, logp, old, adv, mask = make_batch(B=6, T=30, seed=11)
    mask[2] = False  # an empty row: excluded by the seq-mean modes
    cfg = SentKLConfig(cov_fraction=0.1)
    sets = select_tokens(ent, logp, adv, mask, cfg)
    ecoef = torch.rand(6, 30, dtype=torch.float64) * 0.01
    loss, metrics = compute_policy_loss(old, logp, adv, mask, cfg, token_set=sets, entropy=ent, entropy_coef=ecoef,
                                        loss_agg_mode=mode, global_batch_info=gbi)
    kl = (logp - old).abs() * torch.tensor(cfg.coefficient_table(), dtype=torch.float64)[sets.long()]
    agg = lambda x: agg_loss(x, mask, mode, **gbi)  # noqa: E731
    torch.testing.assert_close(metrics["sent/kl_loss"], agg(kl))
    torch.testing.assert_close(metrics["aer/entropy_bonus"], agg(ecoef * ent))
    torch.testing.assert_close(metrics["actor/pg_loss"], loss - agg(kl) + agg(ecoef * ent))


def test_empty_and_degenerate_batches_stay_finite():
    cfg = SentKLConfig()
    z = torch.zeros(2, 5)
    s = select_tokens(z, z, z, torch.zeros(2, 5, dtype=torch.bool), cfg)
    assert torch.all(s == TOKEN_OUTSIDE)
    s = select_tokens(z, z, z, torch.ones(2, 5), SentKLConfig(tau_h=-1.0))  # T_low empty
    assert torch.all(s == TOKEN_OUTSIDE)
    one = torch.zeros(2, 5, dtype=torch.bool)
    one[1, 2] = True
    s = select_tokens(z + 0.1, z, z, one, cfg)
    assert s[1, 2] == TOKEN_HIGH_COV and int((s != 0).sum()) == 1
    loss, m = compute_policy_loss(z, z, z, one, cfg, token_set=s)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in m.values())


# ---------------------------------------------------------------- no host synchronisation
@pytest.mark.parametrize("cfg", CFGS + [SentKLConfig(kl="low_var_kl")], ids=str)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
def test_runs_on_meta_tensors(cfg, mask_dtype):
    """On meta tensors any .item()/.cpu()/.tolist()/nonzero/boolean indexing raises."""
    B, T = 8, 64
    meta = lambda: torch.empty(B, T, device="meta")  # noqa: E731
    mask = torch.empty(B, T, device="meta", dtype=mask_dtype)
    sets = select_tokens(meta(), meta(), meta(), mask, cfg)
    assert sets.device.type == "meta" and sets.shape == (B, T) and sets.dtype == torch.int8
    coef = sent_kl_coefficients(meta(), meta(), meta(), mask, cfg)
    assert coef.device.type == "meta"
    loss, metrics = compute_policy_loss(
        meta(), meta().requires_grad_(), meta(), mask, cfg, token_set=sets, ref_log_prob=meta(),
        entropy=meta(), entropy_coef=meta(), rollout_is_weights=meta(),
        global_batch_info={"dp_size": 2, "batch_num_tokens": 1000, "global_batch_size": 16},
    )
    assert loss.device.type == "meta"
    assert all(v.device.type == "meta" for v in metrics.values())
    assert metrics[NONFINITE_METRIC].device.type == "meta"  # the non-finite count needs no sync either


def test_meta_would_catch_a_sync():
    """Guard: the meta check is real — a host sync on meta raises."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.empty(3, device="meta").sum().item()
    with pytest.raises((RuntimeError, NotImplementedError)):
        x = torch.empty(3, device="meta")
        x[x > 0]


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        SentKLConfig(mode="nope")
    with pytest.raises(ValueError, match="low_entropy_fraction"):
        SentKLConfig(low_entropy_fraction=0.0)
    with pytest.raises(ValueError, match="cov_fraction"):
        SentKLConfig(cov_fraction=2.0)
