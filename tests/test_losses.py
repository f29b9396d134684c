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
    cov_counts,
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
    for b, t in sorted(low, key=lambda bt: (-cov[bt], flat(bt)))[:k]:
        out[b][t] = TOKEN_HIGH_COV
    if cfg.mode == "release":  # the release's rule: bottom-k picked on its own, written last
        for b, t in sorted(low, key=lambda bt: (cov[bt], flat(bt)))[:k]:
            out[b][t] = TOKEN_LOW_COV
    return out, low, cov, k


def ref_loss(old, logp, adv, mask, sets, cfg, ent=None, ecoef=None, ref=None, eps=0.2, c=3.0):
    """Token-mean loss as a Python sum over tokens, float64 autograd scalars."""
    B, T = old.shape
    coef = {
        TOKEN_OUTSIDE: 0.0,
        TOKEN_HIGH_COV: cfg.beta_high,
        TOKEN_LOW_COV: cfg.beta_low,
        TOKEN_LOW: cfg.beta_low if cfg.mode == "paper" else 0.0,
    }
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
    cfg = OmegaConf.create(
        {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0, "global_batch_info": {}}
    )

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
        compute_policy_loss(
            old[s],
            logp[s],
            adv[s],
            mask[s],
            cfg,
            token_set=sets[s],
            entropy=ent[s],
            entropy_coef=0.01,
            global_batch_info=gbi,
        )[0]
        for s in (slice(0, 3), slice(3, 8))
    )
    torch.testing.assert_close(parts, whole)


@pytest.mark.parametrize(
    "mode", ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"]
)
@pytest.mark.parametrize(
    "gbi", [{}, {"dp_size": 2, "batch_num_tokens": 123, "global_batch_size": 16, "loss_scale_factor": 7}]
)
def test_term_metrics_equal_verl_agg_loss(mode, gbi):
    """Each term's metric (computed from per-row sums) is veRL's agg_loss of that term."""
    from verl.trainer.ppo.core_algos import agg_loss

    ent, logp, old, adv, mask = make_batch(B=6, T=30, seed=11)
    mask[2] = False  # an empty row: excluded by the seq-mean modes
    cfg = SentKLConfig(cov_fraction=0.1)
    sets = select_tokens(ent, logp, adv, mask, cfg)
    ecoef = torch.rand(6, 30, dtype=torch.float64) * 0.01
    loss, metrics = compute_policy_loss(
        old,
        logp,
        adv,
        mask,
        cfg,
        token_set=sets,
        entropy=ent,
        entropy_coef=ecoef,
        loss_agg_mode=mode,
        global_batch_info=gbi,
    )
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
    # one token is both the top-1 and the bottom-1: the release gives it β_low, paper mode β_high
    assert s[1, 2] == TOKEN_LOW_COV and int((s != 0).sum()) == 1
    s = select_tokens(z + 0.1, z, z, one, SentKLConfig(mode="paper"))
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


# ---------------------------------------------------------------- the release's tie rules
def release_reference(entropy, logp, adv, mask, frac=0.8, k_frac=2e-4, min_sel=1):
    """SENT's released per-micro-batch selection, re-written from its description: T_low =
    lowest 80% of valid tokens; k = max(1, int(|T_low|·k)); top-k by Cov → β_high, then
    bottom-k by Cov (picked on its own) → β_low, written last. Ties by position."""
    B, T = len(entropy), len(entropy[0])
    valid = [(b, t) for b in range(B) for t in range(T) if mask[b][t]]
    n_low = min(max(1, math.floor(len(valid) * frac)), len(valid))
    low = sorted(valid, key=lambda bt: (entropy[bt[0]][bt[1]], bt))[:n_low]
    mlp = sum(logp[b][t] for b, t in low) / len(low)
    madv = sum(adv[b][t] for b, t in low) / len(low)
    cov = {bt: (logp[bt[0]][bt[1]] - mlp) * (adv[bt[0]][bt[1]] - madv) for bt in low}
    k = min(max(min_sel, int(len(low) * k_frac)), len(low))
    coef = [[0.0] * T for _ in range(B)]
    for b, t in sorted(low, key=lambda bt: (-cov[bt], bt))[:k]:
        coef[b][t] = 0.2
    for b, t in sorted(low, key=lambda bt: (cov[bt], bt))[:k]:
        coef[b][t] = 0.05
    return coef


@pytest.mark.parametrize("seed", range(6))
def test_release_mode_matches_the_release_on_all_zero_advantage_micro_batches(seed):
    """A micro-batch whose groups all got the same reward (A ≡ 0, common under GRPO) has every
    Cov equal: the release's top-1 and bottom-1 are the same token, and it gets β_low. Our
    earlier rule gave it β_high and left β_low on no token."""
    ent, logp, old, adv, mask = make_batch(B=4, T=12, seed=100 + seed, dtype=torch.float32)
    zero = torch.zeros_like(adv)
    cfg = SentKLConfig()  # release mode, k = 2e-4: the floor decides, one token per set
    got = sent_kl_coefficients(ent, logp, zero, mask, cfg)
    want = torch.tensor(release_reference(ent.tolist(), logp.tolist(), zero.tolist(), mask.tolist()))
    assert torch.equal(got, want.to(got.dtype))
    assert int((got == cfg.beta_low).sum()) == 1, "β_low always reaches a token"
    assert int((got == cfg.beta_high).sum()) == 0
    # distinct Cov: both sets of one token each, as in the release
    got = sent_kl_coefficients(ent, logp, adv, mask, cfg)
    want = torch.tensor(release_reference(ent.tolist(), logp.tolist(), adv.tolist(), mask.tolist()))
    assert torch.equal(got, want.to(got.dtype))
    assert int((got == cfg.beta_low).sum()) == 1 and int((got == cfg.beta_high).sum()) == 1


def test_paper_mode_keeps_the_partition_of_t_low():
    """Paper mode: the top k get β_high and every other T_low token β_low, ties or not."""
    ent, logp, old, adv, mask = make_batch(B=4, T=12, seed=7, dtype=torch.float32)
    cfg = SentKLConfig(mode="paper")
    sets = select_tokens(ent, logp, torch.zeros_like(adv), mask, cfg)
    assert int((sets == TOKEN_HIGH_COV).sum()) == 1 and not (sets == TOKEN_LOW_COV).any()
    n_valid = int(mask.sum())
    assert int((sets == TOKEN_LOW).sum()) == math.floor(0.8 * n_valid) - 1


# ---------------------------------------------------------------- how many tokens (cov_count)
def ref_release_count(mask, groups, frac=0.8, k=2e-4, min_sel=1):
    """Σ over micro-batches of max(min_sel, ⌊k·⌊frac·n_valid,m⌋⌋), from plain Python."""
    per = {}
    for r, g in enumerate(groups):
        per[g] = per.get(g, 0) + int(sum(mask[r]))
    total = 0
    for n in per.values():
        if n:
            t = min(max(1, math.floor(n * frac)), n)
            total += min(max(min_sel, math.floor(t * k)), t)
    return total


@pytest.mark.parametrize("k_frac,micro", [(2e-4, 4), (2e-4, 1), (0.02, 8), (0.3, 3)])
def test_release_count_over_a_batch_equals_the_releases_micro_batch_counts(k_frac, micro):
    g = torch.Generator().manual_seed(5)
    B, T = 24, 40
    lens = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lens[:, None]
    ent, logp, adv = (torch.randn(B, T, generator=g) for _ in range(3))
    groups = torch.arange(B) // micro
    M = -(-B // micro)
    cfg = SentKLConfig(cov_fraction=k_frac)
    n_low, k_fraction, k_release = cov_counts(ent, mask, cfg, groups, M)
    want_release = ref_release_count(mask.tolist(), groups.tolist(), k=k_frac)
    assert int(k_release) == want_release
    assert int(k_fraction) == max(1, math.floor(int(n_low) * k_frac))
    # the batch-wide selection takes exactly that many tokens for each covariance set
    sets = select_tokens(ent, logp, adv, mask, cfg, micro_batch=groups, num_micro_batches=M)
    assert int((sets == TOKEN_LOW_COV).sum()) == want_release
    assert int((sets == TOKEN_HIGH_COV).sum()) == want_release  # distinct Cov: no overlap
    frac_sets = select_tokens(
        ent,
        logp,
        adv,
        mask,
        SentKLConfig(cov_fraction=k_frac, cov_count="fraction"),
        micro_batch=groups,
        num_micro_batches=M,
    )
    assert int((frac_sets == TOKEN_HIGH_COV).sum()) == int(k_fraction)
    # one micro-batch: the two rules agree (the release's own case)
    _, kf, kr = cov_counts(ent, mask, cfg)
    assert int(kf) == int(kr)


def test_release_count_is_one_per_micro_batch_at_the_releases_k():
    """k = 0.0002 and 4 responses of ≤ 2048 tokens per micro-batch: the floor decides, one
    β_high token per micro-batch; the plain fraction of the whole batch grows with length."""
    B, T, micro = 64, 2048, 4
    mask = torch.ones(B, T, dtype=torch.bool)
    ent = torch.empty(B, T, device="meta")
    groups = torch.arange(B) // micro
    cfg = SentKLConfig()
    cpu_counts = cov_counts(torch.zeros(B, T), mask, cfg, groups, B // micro)
    assert [int(x) for x in cpu_counts] == [
        math.floor(0.8 * B * T),
        math.floor(2e-4 * math.floor(0.8 * B * T)),
        B // micro,
    ]
    meta = cov_counts(ent, mask.to("meta"), cfg, groups.to("meta"), B // micro)
    assert all(x.device.type == "meta" and x.shape == () for x in meta)


@pytest.mark.parametrize(
    "cfg",
    [SentKLConfig(), SentKLConfig(cov_count="fraction"), SentKLConfig(tau_h=0.5), SentKLConfig(mode="paper")],
    ids=str,
)
def test_selection_with_a_micro_batch_layout_runs_on_meta(cfg):
    B, T = 8, 16
    meta = lambda: torch.empty(B, T, device="meta")  # noqa: E731
    groups = torch.empty(B, dtype=torch.int64, device="meta")
    sets = select_tokens(
        meta(),
        meta(),
        meta(),
        torch.empty(B, T, device="meta", dtype=torch.bool),
        cfg,
        micro_batch=groups,
        num_micro_batches=4,
    )
    assert sets.device.type == "meta" and sets.shape == (B, T)


def test_cov_count_is_validated():
    with pytest.raises(ValueError, match="cov_count"):
        SentKLConfig(cov_count="per_step")
