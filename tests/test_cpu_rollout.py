"""The ``hf`` rollout backend (entropy_rl.cpu.rollout): batched decoding that matches plain
forward passes, vLLM's sampling semantics, one decode for concurrent requests, weight sync,
and registration in veRL's two rollout registries.

Most tests drive :class:`HFRolloutServer` in-process (fast); one goes through Ray the way veRL
does (replica launches the server actor, the worker-side adapter finds it by name).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import torch

from entropy_rl.cpu import rollout
from tests.tiny import make_model, make_tokenizer


def varied_model(seed=0, path=None):
    """tests/tiny.py's Qwen2 with larger random weights: at the default init its greedy output
    just repeats the last prompt token, which would hide padding or stopping bugs."""
    tok = make_tokenizer()
    model = make_model(tok, seed=seed, hidden=32, layers=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    if path:
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hf_rollout_model"))
    varied_model(path=path)
    return path


@pytest.fixture(scope="module")
def configs(model_dir):
    from verl.workers.config import HFModelConfig, RolloutConfig

    rcfg = RolloutConfig(
        name="hf",
        tensor_model_parallel_size=1,
        prompt_length=64,
        response_length=16,
        max_num_seqs=256,
        engine_kwargs={"hf": {"batch_wait_ms": 5}},
    )
    mcfg = HFModelConfig(path=model_dir, override_config={"attn_implementation": "sdpa"})
    return rcfg, mcfg


@pytest.fixture(scope="module")
def server(configs):
    return rollout.HFRolloutServer(*configs)


@pytest.fixture()
def fresh_server(configs):
    return rollout.HFRolloutServer(*configs)


def prompts(lengths, seed=0, vocab=None):
    g = torch.Generator().manual_seed(seed)
    vocab = vocab or len(make_tokenizer())
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]  # 3+: no pad/eos/unk


def gen(server, prompt, request_id="r", **params):
    return server.generate(prompt_ids=prompt, sampling_params=params, request_id=request_id)


def run(coro):
    return asyncio.run(coro)


async def gather(*coros):
    """asyncio.gather inside a running loop (the requests arrive concurrently)."""
    return await asyncio.gather(*coros)


def reference_logits(model, prompt, tokens):
    """Logits that produced each generated token: one plain forward over prompt + tokens."""
    with torch.no_grad():
        out = model(torch.tensor([prompt + tokens])).logits[0].float()
    return out[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]


def gathered(logprobs, tokens):
    return logprobs.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)


def cut_at(tokens, stop):
    return tokens[: tokens.index(stop) + 1]


# --- registration ---------------------------------------------------------------------------


def test_register_puts_hf_in_both_registries():
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY, get_rollout_class
    from verl.workers.rollout.replica import RolloutReplicaRegistry, get_rollout_replica_class

    rollout.register()
    rollout.register()  # idempotent
    assert RolloutReplicaRegistry.get("hf") is rollout.HFReplica
    assert get_rollout_replica_class("hf") is rollout.HFReplica
    assert ("hf", "async") in _ROLLOUT_REGISTRY
    assert get_rollout_class("hf", "async") is rollout.HFServerAdapter


# --- batched decoding equals one-at-a-time and a plain forward --------------------------------


def test_greedy_batched_equals_single_and_reference(server):
    ps = prompts([2, 5, 9, 14])
    params = dict(temperature=0, top_k=-1, top_p=1.0, logprobs=True, max_tokens=12)
    before = len(server.decoder.prefill_sizes)

    async def go():
        batched = await asyncio.gather(*[gen(server, p, str(i), **params) for i, p in enumerate(ps)])
        single = [await gen(server, p, f"s{i}", **params) for i, p in enumerate(ps)]
        return batched, single

    batched, single = run(go())
    # one prefill of the 4 concurrent requests, then each single request alone
    assert server.decoder.prefill_sizes[before:] == [len(ps)] + [1] * len(ps)
    for p, b, s in zip(ps, batched, single):
        assert b.stop_reason == "completed" and len(b.token_ids) == 12
        assert b.token_ids == s.token_ids, "left padding changed greedy tokens"
        torch.testing.assert_close(torch.tensor(b.log_probs), torch.tensor(s.log_probs), atol=1e-5, rtol=0)
        ref = reference_logits(server.model, p, b.token_ids)
        assert ref.argmax(-1).tolist() == b.token_ids
        # greedy: vLLM's processed log-probs use temperature 1 and no truncation
        torch.testing.assert_close(
            torch.tensor(b.log_probs), gathered(ref.log_softmax(-1), b.token_ids), atol=1e-5, rtol=0
        )


def test_logprobs_off_returns_none(server):
    out = run(gen(server, prompts([4])[0], temperature=0, logprobs=False, max_tokens=3))
    assert out.log_probs is None and len(out.token_ids) == 3


# --- sampling parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [-1, 0])
def test_temperature_logprobs_are_log_softmax_of_scaled_logits(server, top_k):
    temp = 0.7
    ps = prompts([3, 8, 11], seed=1)

    async def go():
        return await asyncio.gather(
            *[
                gen(server, p, str(i), temperature=temp, top_k=top_k, top_p=1.0, logprobs=True, max_tokens=10)
                for i, p in enumerate(ps)
            ]
        )

    for p, out in zip(ps, run(go())):
        ref = reference_logits(server.model, p, out.token_ids)
        expect = gathered((ref / temp).log_softmax(-1), out.token_ids)  # no truncation at all
        torch.testing.assert_close(torch.tensor(out.log_probs), expect, atol=1e-4, rtol=0)


def test_top_k_truncates_and_renormalises(server):
    k = 3
    ps = prompts([4, 9], seed=2)
    outs = run(
        gather(
            *[gen(server, p, str(i), temperature=1.0, top_k=k, logprobs=True, max_tokens=10) for i, p in enumerate(ps)]
        )
    )
    for p, out in zip(ps, outs):
        ref = reference_logits(server.model, p, out.token_ids)
        kth = ref.topk(k, dim=-1).values[:, -1:]
        masked = ref.masked_fill(ref < kth, -float("inf"))
        assert torch.isfinite(gathered(masked, out.token_ids)).all(), "sampled outside the top-k"
        torch.testing.assert_close(
            torch.tensor(out.log_probs), gathered(masked.log_softmax(-1), out.token_ids), atol=1e-4, rtol=0
        )
    # top_k=1 is greedy, with log-prob 0 (all mass on one token)
    p = ps[0]
    one = run(gen(server, p, temperature=1.0, top_k=1, logprobs=True, max_tokens=8))
    greedy = run(gen(server, p, temperature=0, max_tokens=8))
    assert one.token_ids == greedy.token_ids
    assert max(abs(x) for x in one.log_probs) < 1e-6


def test_top_p_keeps_the_nucleus(server):
    top_p = 0.5
    ps = prompts([5, 7, 12], seed=3)
    outs = run(
        gather(
            *[
                gen(server, p, str(i), temperature=1.0, top_p=top_p, logprobs=True, max_tokens=12)
                for i, p in enumerate(ps)
            ]
        )
    )
    truncated = False
    for p, out in zip(ps, outs):
        ref = reference_logits(server.model, p, out.token_ids)
        probs = ref.softmax(-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
        keep_sorted = before < top_p  # smallest set reaching top_p
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        truncated |= bool((~keep).any())
        assert keep.gather(1, torch.tensor(out.token_ids).unsqueeze(1)).all(), "sampled outside the nucleus"
        expect = ref.masked_fill(~keep, -float("inf")).log_softmax(-1)
        torch.testing.assert_close(torch.tensor(out.log_probs), gathered(expect, out.token_ids), atol=1e-4, rtol=0)
    assert truncated, "top_p=0.5 should drop tokens"


def test_repetition_penalty_as_vllm(server):
    """vLLM's repetition penalty: logits of tokens seen in prompt or output are divided by the
    penalty when positive, multiplied when negative; greedy picks from the penalised logits."""
    pen = 1.5
    p = prompts([6], seed=12)[0]
    out = run(gen(server, p, temperature=0, repetition_penalty=pen, logprobs=True, max_tokens=10, ignore_eos=True))
    ref = reference_logits(server.model, p, out.token_ids)
    for t, tok in enumerate(out.token_ids):
        seen = torch.zeros(ref.shape[1], dtype=torch.bool)
        seen[p + out.token_ids[:t]] = True
        row = torch.where(seen, torch.where(ref[t] > 0, ref[t] / pen, ref[t] * pen), ref[t])
        assert int(row.argmax()) == tok
        assert abs(float(row.log_softmax(-1)[tok]) - out.log_probs[t]) < 1e-4


def test_max_tokens_and_eos_stop_each_sequence_separately(fresh_server):
    server = fresh_server
    server.decoder.eos_token_ids = frozenset()  # base: every sequence runs to max_tokens
    ps = prompts([3, 6, 10], seed=4)
    greedy = dict(temperature=0, logprobs=True)
    base = run(gather(*[gen(server, p, str(i), max_tokens=14, **greedy) for i, p in enumerate(ps)]))
    # Per-request max_tokens inside one batch.
    budgets = [2, 14, 5]
    outs = run(gather(*[gen(server, p, str(i), max_tokens=m, **greedy) for i, (p, m) in enumerate(zip(ps, budgets))]))
    assert [len(o.token_ids) for o in outs] == budgets
    assert [o.token_ids for o in outs] == [b.token_ids[:m] for b, m in zip(base, budgets)]

    # Make EOS a token that the sequences emit at different steps: each stops at its own first
    # occurrence (EOS kept, as vLLM does); one without it runs on to max_tokens.
    def first(tokens, t):
        return tokens.index(t) if t in tokens else None

    stop = max(
        sorted({t for b in base for t in b.token_ids}),
        key=lambda t: len({first(b.token_ids, t) for b in base}),
    )
    server.decoder.eos_token_ids = frozenset({stop})

    def cut(tokens):
        return tokens[: tokens.index(stop) + 1] if stop in tokens else tokens

    outs = run(gather(*[gen(server, p, str(i), max_tokens=14, **greedy) for i, p in enumerate(ps)]))
    expect = [cut(b.token_ids) for b in base]
    assert [o.token_ids for o in outs] == expect
    stopped = [len(e) for e in expect if len(e) < 14]
    assert len(set(stopped)) >= 2, f"the test needs sequences stopping at different steps: {expect}"
    for o, b in zip(outs, base):
        assert o.stop_reason == "completed"
        torch.testing.assert_close(torch.tensor(o.log_probs), torch.tensor(b.log_probs[: len(o.token_ids)]))
    # ignore_eos runs through; stop_token_ids stop a single request.
    through = run(gen(server, ps[0], max_tokens=14, ignore_eos=True, **greedy))
    assert through.token_ids == base[0].token_ids
    server.decoder.eos_token_ids = frozenset()
    own = run(gen(server, ps[1], max_tokens=14, stop_token_ids=[base[1].token_ids[1]], **greedy))
    assert own.token_ids == cut_at(base[1].token_ids, base[1].token_ids[1])


def test_default_budget_and_unsupported_options(server, configs):
    rcfg, _ = configs
    out = run(gen(server, prompts([4])[0], temperature=0, ignore_eos=True))
    assert len(out.token_ids) == rcfg.response_length  # vLLM server's default budget
    with pytest.raises(ValueError, match="presence_penalty"):
        run(gen(server, prompts([4])[0], presence_penalty=0.5))


# --- batching -------------------------------------------------------------------------------


def test_concurrent_requests_share_one_decode_and_m_samples_differ(fresh_server):
    server = fresh_server
    m = 4  # samples per prompt, as the semantic-entropy scorer repeats the batch M times
    ps = prompts([3, 5, 7, 9, 11, 13], seed=5)
    rows = [p for p in ps for _ in range(m)]
    outs = run(
        gather(
            *[
                gen(server, p, str(i), temperature=1.0, logprobs=True, max_tokens=10, ignore_eos=True)
                for i, p in enumerate(rows)
            ]
        )
    )
    assert server.decoder.prefill_sizes == [len(rows)], "concurrent requests must be one batched decode"
    assert server.decoder.batches == 1 and server.decoder.peak_rows == len(rows)
    assert all(len(o.token_ids) == 10 and len(o.log_probs) == 10 for o in outs)
    for j in range(len(ps)):
        samples = {tuple(o.token_ids) for o in outs[j * m : (j + 1) * m]}
        assert len(samples) > 1, "the M samples of a prompt should differ"


def test_max_num_seqs_caps_the_batch(fresh_server):
    server = fresh_server
    server.max_num_seqs = 8
    outs = run(
        gather(
            *[
                gen(server, p, str(i), temperature=0, max_tokens=3, ignore_eos=True)
                for i, p in enumerate(prompts([4] * 20))
            ]
        )
    )
    assert len(outs) == 20 and all(len(o.token_ids) == 3 for o in outs)
    assert server.decoder.peak_rows == 8  # the rest joined as rows finished


def test_late_requests_join_the_running_decode(fresh_server):
    """Requests arriving mid-decode are prefilled and merged into the running batch (shorter
    and longer than its cache), with the same tokens and log-probs as when decoded alone."""
    server = fresh_server
    early, late = prompts([3, 9], seed=10), prompts([2, 40], seed=11)
    params = dict(temperature=0, logprobs=True, ignore_eos=True)

    async def go():
        first = [asyncio.create_task(gen(server, p, f"e{i}", max_tokens=150, **params)) for i, p in enumerate(early)]
        while not server._running:  # wait until the first decode runs
            await asyncio.sleep(0.001)
        second = [gen(server, p, f"l{i}", max_tokens=20, **params) for i, p in enumerate(late)]
        return await asyncio.gather(*second, *first)

    outs = run(go())
    # futures resolve as rows finish; the decode thread counts the batch when it returns
    deadline = time.monotonic() + 10
    while server.decoder.batches < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.decoder.prefill_sizes == [2, 2] and server.decoder.batches == 1
    for p, o, m in zip(late + early, outs, [20, 20, 150, 150]):
        alone = run(gen(server, p, max_tokens=m, **params))
        assert o.token_ids == alone.token_ids
        torch.testing.assert_close(torch.tensor(o.log_probs), torch.tensor(alone.log_probs), atol=1e-5, rtol=0)


def test_seeded_requests_reproduce_regardless_of_batch(server):
    p = prompts([6], seed=6)[0]
    alone = run(gen(server, p, temperature=1.0, seed=123, max_tokens=10))
    others = [gen(server, q, str(i), temperature=1.0, max_tokens=10) for i, q in enumerate(prompts([3, 9], seed=7))]
    together = run(gather(gen(server, p, "x", temperature=1.0, seed=123, max_tokens=10), *others))
    assert together[0].token_ids == alone.token_ids


def test_samples_depend_on_seed_step_and_prompt_not_on_batching(fresh_server):
    """What makes a resumed run sample what the uninterrupted one did: each request draws from
    its own generator keyed by (seed, weights version, prompt, occurrence), so arrival order and
    batch boundaries do not matter; the n samples of a prompt stay distinct."""
    server = fresh_server
    ps = prompts([4, 7, 10], seed=13)
    rows = [p for p in ps for _ in range(3)]
    params = dict(temperature=1.0, logprobs=True, max_tokens=12, ignore_eos=True)

    def by_prompt(outs, order):
        groups = {}
        for i, o in zip(order, outs):
            groups.setdefault(tuple(rows[i]), []).append((tuple(o.token_ids), tuple(o.log_probs)))
        return {k: sorted(v) for k, v in groups.items()}

    async def together(step):
        await server.set_global_steps(step)
        order = list(range(len(rows)))
        return by_prompt(await asyncio.gather(*[gen(server, rows[i], str(i), **params) for i in order]), order)

    async def reversed_in_bursts(step):
        await server.set_global_steps(step)
        order = list(reversed(range(len(rows))))
        first = [asyncio.create_task(gen(server, rows[i], str(i), **params)) for i in order[:4]]
        while not server._running:
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(gen(server, rows[i], str(i), **params)) for i in order[4:]]
        return by_prompt(await asyncio.gather(*first, *rest), order)

    a, b, c = run(together(1)), run(reversed_in_bursts(1)), run(together(2))
    assert server.decoder.prefill_sizes[1:3] == [4, 5], "the second run should join a running decode"
    assert a.keys() == b.keys()
    for k in a:
        assert [t for t, _ in a[k]] == [t for t, _ in b[k]]
        for (_, la), (_, lb) in zip(a[k], b[k]):
            torch.testing.assert_close(torch.tensor(la), torch.tensor(lb), atol=1e-4, rtol=0)
        assert len({t for t, _ in a[k]}) == 3, "the samples of a prompt must differ"
    assert a != c, "new weights version, new samples"


def test_full_determinism_gives_each_row_its_sample(configs):
    """Under rollout.full_determinism veRL passes the row id (det-<row>) as request_id: each row
    then gets the same sample whatever the arrival order."""
    import dataclasses

    rcfg, mcfg = configs
    server = rollout.HFRolloutServer(dataclasses.replace(rcfg, full_determinism=True), mcfg)
    p = prompts([5], seed=14)[0]
    params = dict(temperature=1.0, max_tokens=10, ignore_eos=True)

    async def rows(order):
        await server.set_global_steps(3)
        outs = await asyncio.gather(*[gen(server, p, f"det-{i}", **params) for i in order])
        return {i: o.token_ids for i, o in zip(order, outs)}

    a, b = run(rows(list(range(6)))), run(rows(list(reversed(range(6)))))
    assert a == b and len({tuple(t) for t in a.values()}) == 6


def test_abort_pauses_then_resume(fresh_server):
    server = fresh_server

    async def go():
        long = [
            asyncio.create_task(gen(server, p, str(i), temperature=1.0, max_tokens=200, ignore_eos=True))
            for i, p in enumerate(prompts([4, 6]))
        ]
        await asyncio.sleep(0.1)
        info = await server.abort_all_requests()
        done = await asyncio.gather(*long)
        parked = asyncio.create_task(gen(server, [5, 6, 7], "late", temperature=0, max_tokens=3))
        await asyncio.sleep(0.05)
        assert not parked.done(), "requests wait while generation is paused"
        await server.resume_generation()
        late = await parked
        await server.abort_all_requests(reject_request=True)
        rejected = await gen(server, [5, 6, 7], "rejected", temperature=0, max_tokens=3)
        await server.resume_generation()
        return info, done, late, rejected

    info, done, late, rejected = run(go())
    assert info["aborted_count"] == 2
    assert all(o.stop_reason == "aborted" and len(o.token_ids) < 200 for o in done)
    assert late.stop_reason == "completed" and len(late.token_ids) == 3
    assert rejected.stop_reason == "aborted" and rejected.token_ids == []


# --- weights --------------------------------------------------------------------------------


def test_weight_update_changes_outputs(fresh_server):
    server = fresh_server
    ps = prompts([4, 8], seed=8)
    params = dict(temperature=0, logprobs=True, max_tokens=10)
    before = run(gather(*[gen(server, p, str(i), **params) for i, p in enumerate(ps)]))
    new = varied_model(seed=1)

    async def update():
        n = await server.update_weights(list(new.state_dict().items()))
        await server.set_global_steps(5)
        return n

    assert run(update()) == len(new.state_dict())
    after = run(gather(*[gen(server, p, str(i), **params) for i, p in enumerate(ps)]))
    # (a random tiny model may repeat one token either way: compare the log-probs too)
    assert [(a.token_ids, a.log_probs) for a in after] != [(b.token_ids, b.log_probs) for b in before]
    for p, a in zip(ps, after):
        assert a.extra_fields["global_steps"] == 5
        ref = reference_logits(new, p, a.token_ids)
        assert ref.argmax(-1).tolist() == a.token_ids
        expect = gathered(ref.log_softmax(-1), a.token_ids)
        torch.testing.assert_close(torch.tensor(a.log_probs), expect, atol=1e-5, rtol=0)
    with pytest.raises(KeyError):
        run(server.update_weights([("model.not_a_weight", torch.zeros(1))]))


# --- through Ray, as veRL runs it -------------------------------------------------------------


def test_replica_server_and_adapter_through_ray(configs, model_dir, monkeypatch):
    ray = pytest.importorskip("ray")
    from omegaconf import OmegaConf

    rcfg, mcfg = configs
    rollout.register()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        replica = rollout.HFReplica(
            replica_rank=0,
            config=rcfg,
            model_config=OmegaConf.create({"path": model_dir, "override_config": {"attn_implementation": "sdpa"}}),
            gpus_per_node=1,
        )
        replica.rollout_mode = rollout.RolloutMode.HYBRID
        run(replica.launch_servers())
        handle = replica.server_handle
        p = prompts([5], seed=9)[0]
        params = dict(temperature=0, logprobs=True, max_tokens=8)

        def remote_gen():
            return ray.get(handle.generate.remote(prompt_ids=p, sampling_params=dict(params), request_id="a"))

        before = remote_gen()
        run(replica.sleep())
        run(replica.wake_up())

        # Worker side: the adapter the hybrid worker builds finds the server by name and pushes
        # the actor's weights (every rank walks the generator; rank 0 of the replica sends).
        monkeypatch.setenv("RANK", "0")
        adapter = rollout.HFServerAdapter(config=rcfg, model_config=mcfg, device_mesh=None)
        new = varied_model(seed=2)
        run(adapter.resume(tags=["weights"]))
        run(adapter.update_weights(iter(new.state_dict().items()), global_steps=7))
        run(adapter.resume(tags=["kv_cache"]))
        after = remote_gen()
        assert after.extra_fields["global_steps"] == 7
        assert after.token_ids == reference_logits(new, p, after.token_ids).argmax(-1).tolist()
        assert (after.token_ids, after.log_probs) != (before.token_ids, before.log_probs)
        run(replica.abort_all_requests())
        run(replica.resume_generation())
        assert remote_gen().token_ids == after.token_ids
        stats = ray.get(handle.get_stats.remote())
        assert stats["prefill_sizes"] == [1, 1, 1] and stats["torch_threads"] == len(os.sched_getaffinity(0))
    finally:
        ray.shutdown()
