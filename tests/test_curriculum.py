"""SENT curriculum sampler: low→high stages, seeded shuffles, missing scores, adaptive
update on a live iterator, and exact StatefulDataLoader resume (mid-epoch, across epochs,
after updates)."""

from __future__ import annotations

import io
import math
import random
from collections import Counter

import datasets
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torchdata.stateful_dataloader import StatefulDataLoader

from entropy_rl.curriculum import (
    CurriculumConfig,
    SemanticEntropyCurriculumSampler,
    read_scores,
    sampler_state_from_dataloader_state,
)


def make_scores(n: int, seed: int = 0, ties: bool = True) -> list[float]:
    rng = random.Random(seed)
    # few distinct values → many ties, so tie-breaking by row index is exercised
    return [float(rng.randint(0, 6)) / 3 if ties else rng.random() for _ in range(n)]


class IdxDataset(torch.utils.data.Dataset):
    """Stand-in for veRL's RLHFDataset: a ``.dataframe`` and rows fetched by index."""

    def __init__(self, scores):
        self.dataframe = pd.DataFrame({"row": range(len(scores)), "semantic_entropy": scores})

    def __len__(self):
        return len(self.dataframe)

    def __getitem__(self, i):
        return int(self.dataframe["row"].iloc[i])


def cfg(**cur):
    return {"seed": None, "curriculum": cur}


def sampler_for(scores, **cur):
    return SemanticEntropyCurriculumSampler(IdxDataset(scores), cfg(**cur))


def stage_blocks(sampler, order):
    b = sampler.stage_boundaries
    return [order[b[s] : b[s + 1]] for s in range(len(b) - 1)]


# ---------------------------------------------------------------- static curriculum
@pytest.mark.parametrize("num_stages", [1, 2, 3, 5])
def test_stages_low_to_high_each_index_once(num_stages):
    scores = make_scores(37)
    s = sampler_for(scores, num_stages=num_stages)
    order = list(s)
    assert sorted(order) == list(range(37)) and len(s) == 37
    blocks = stage_blocks(s, order)
    assert [len(b) for b in blocks] == list(s.stage_sizes)
    assert max(s.stage_sizes) - min(s.stage_sizes) <= 1
    for lo, hi in zip(blocks, blocks[1:]):
        assert max(scores[i] for i in lo) <= min(scores[i] for i in hi)
    for st, block in enumerate(blocks):
        assert all(s.stage_of(i) == st for i in block)
    # exact split: sort by (score, row), cut at equal counts
    ranked = sorted(range(37), key=lambda i: (scores[i], i))
    cuts = [0]
    for size in s.stage_sizes:
        cuts.append(cuts[-1] + size)
    assert [sorted(b) for b in blocks] == [sorted(ranked[a:b]) for a, b in zip(cuts, cuts[1:])]


def test_ties_broken_by_row_index_and_no_shuffle_is_sorted():
    s = sampler_for([1.0] * 10, num_stages=2)
    assert sorted(list(s)[:5]) == [0, 1, 2, 3, 4]
    scores = make_scores(20)
    s = sampler_for(scores, shuffle_within_stage=False)
    assert list(s) == sorted(range(20), key=lambda i: (scores[i], i))


def test_within_stage_shuffle_is_seeded():
    scores = make_scores(40)
    a = list(sampler_for(scores, seed=3))
    b = list(sampler_for(scores, seed=3))
    c = list(sampler_for(scores, seed=4))
    assert a == b and a != c
    s3 = sampler_for(scores, seed=3)
    assert [set(x) for x in stage_blocks(s3, a)] == [set(x) for x in stage_blocks(s3, c)]
    # seed precedence: curriculum.seed > data.seed > 1
    via_data = SemanticEntropyCurriculumSampler(IdxDataset(scores), {"seed": 3})
    assert list(via_data) == a
    assert list(SemanticEntropyCurriculumSampler(IdxDataset(scores), {})) == list(sampler_for(scores, seed=1))


def test_epochs_reshuffle_with_seed_plus_epoch():
    scores = make_scores(30)
    s = sampler_for(scores, seed=7)
    e0, e1 = list(s), list(s)  # the second iteration starts epoch 1
    assert s.epoch == 1 and e0 != e1
    assert [set(x) for x in stage_blocks(s, e0)] == [set(x) for x in stage_blocks(s, e1)]
    assert e0 == list(sampler_for(scores, seed=7))  # epoch 0 with seed 7
    assert e1 == list(sampler_for(scores, seed=8))  # epoch 1 draws from seed 7 + 1
    t = sampler_for(scores, seed=7)
    t.set_epoch(1)
    assert list(t) == e1


def test_stage_epochs_repeat_each_stage_reshuffled():
    scores = make_scores(21)
    s = sampler_for(scores, num_stages=3, stage_epochs=3)
    order = list(s)
    assert len(s) == len(order) == 63
    assert Counter(order) == {i: 3 for i in range(21)}
    for st, block in enumerate(stage_blocks(s, order)):
        size = s.stage_sizes[st]
        reps = [block[r * size : (r + 1) * size] for r in range(3)]
        assert all(sorted(r) == sorted(reps[0]) for r in reps)  # each index once per repetition
        assert len({tuple(r) for r in reps}) > 1  # repetitions reshuffled
    assert s.current_stage == 2


def test_current_stage_tracks_the_last_yielded_index():
    s = sampler_for(make_scores(10), num_stages=2)
    it = iter(s)
    seen = [s.current_stage]
    for _ in range(10):
        i = next(it)
        assert s.current_stage == s.stage_of(i)
        seen.append(s.current_stage)
    assert seen == [0] * 6 + [1] * 5
    assert s.metrics()["curriculum/progress"] == 1.0


# ---------------------------------------------------------------- inputs and config
def test_missing_score_error_names_row_and_key():
    scores = make_scores(12)
    scores[5] = math.nan
    scores[9] = math.nan
    with pytest.raises(ValueError, match=r"row 5 .*'semantic_entropy'.*rows 5, 9"):
        sampler_for(scores)
    rows = [{"semantic_entropy": 1.0}, {"semantic_entropy": None}, {"other": 2.0}]
    with pytest.raises(ValueError, match="row 1 "):
        SemanticEntropyCurriculumSampler(rows, {})
    with pytest.raises(ValueError, match="row 0 .*'extra_info.se'"):
        SemanticEntropyCurriculumSampler([{"extra_info": {}}], cfg(score_key="extra_info.se"))
    with pytest.raises(ValueError, match="row 1 has a non-numeric"):
        SemanticEntropyCurriculumSampler([{"semantic_entropy": 1}, {"semantic_entropy": "x"}], {})


@pytest.mark.parametrize("policy", ["last_stage", "first_stage"])
def test_missing_policy_places_rows(policy):
    scores = make_scores(20)
    missing = [2, 11, 17]
    for i in missing:
        scores[i] = math.nan
    s = sampler_for(scores, num_stages=3, missing_policy=policy)
    order = list(s)
    assert sorted(order) == list(range(20))
    target = 2 if policy == "last_stage" else 0
    assert all(s.stage_of(i) == target for i in missing)
    # the 17 scored rows keep an equal-count split (6, 6, 5); missing rows are added on top
    assert s.stage_sizes == ((6, 6, 8) if policy == "last_stage" else (9, 6, 5))
    where = [order.index(i) for i in missing]
    b = s.stage_boundaries
    assert all(b[target] <= p < b[target + 1] for p in where)
    blocks = stage_blocks(s, order)
    for lo, hi in zip(blocks, blocks[1:]):
        assert max(scores[i] for i in lo if i not in missing) <= min(scores[i] for i in hi if i not in missing)


def test_accessors_and_nested_keys():
    scores = make_scores(15)
    rows = [{"i": i, "extra_info": {"semantic_entropy": v}} for i, v in enumerate(scores)]
    key = cfg(score_key="extra_info.semantic_entropy", seed=5)
    ref = list(sampler_for(scores, seed=5))
    hf = datasets.Dataset.from_list(rows)

    class RLHFLike:
        dataframe = hf

        def __len__(self):
            return len(self.dataframe)

    for source in (rows, pd.DataFrame(rows), hf, RLHFLike()):
        assert list(SemanticEntropyCurriculumSampler(source, key)) == ref
    flat = pd.DataFrame({"extra_info.semantic_entropy": scores})  # a flat dotted column wins
    assert list(SemanticEntropyCurriculumSampler(flat, key)) == ref
    assert read_scores({"semantic_entropy": scores}, "semantic_entropy") == scores


def test_omegaconf_struct_config_and_validation():
    scores = make_scores(15)
    dc = OmegaConf.create({"seed": 5, "shuffle": True, "curriculum": {"num_stages": 3, "stage_epochs": 2}})
    OmegaConf.set_struct(dc, True)
    s = SemanticEntropyCurriculumSampler(IdxDataset(scores), dc)
    assert s.config == CurriculumConfig(num_stages=3, stage_epochs=2, seed=5)
    plain = OmegaConf.create({"seed": None})
    OmegaConf.set_struct(plain, True)
    assert SemanticEntropyCurriculumSampler(IdxDataset(scores), plain).config == CurriculumConfig()
    with pytest.raises(ValueError, match="unknown curriculum config keys"):
        sampler_for(scores, num_stage=3)
    with pytest.raises(ValueError, match="missing_policy"):
        sampler_for(scores, missing_policy="drop")


# ---------------------------------------------------------------- adaptive update
def test_update_reorders_only_unyielded():
    n, k = 24, 7
    scores = make_scores(n, ties=False)
    s = sampler_for(scores, num_stages=3)
    before = list(s.state_dict()["order"].tolist())
    it = iter(s)
    head = [next(it) for _ in range(k)]
    new = {i: 10.0 - scores[i] for i in range(n)}  # reversed difficulty
    s.update(list(new), semantic_entropy=torch.tensor(list(new.values()), dtype=torch.float64))
    tail = list(it)  # the live iterator sees the new order
    order = head + tail
    assert head == before[:k] and sorted(order) == list(range(n))
    assert tail != before[k:]
    # the free slots of stage 0 (8 - 7 = 1) get the lowest new score among the rest,
    # then stages 1 and 2 are cut from the remaining by new score
    rest = sorted(tail, key=lambda i: (new[i], i))
    assert tail[0] == rest[0]
    b = s.stage_boundaries
    later = [order[b[1] : b[2]], order[b[2] : b[3]]]
    assert sorted(later[0]) == sorted(rest[1:9]) and sorted(later[1]) == sorted(rest[9:])
    assert max(new[i] for i in later[0]) <= min(new[i] for i in later[1])
    assert s.scores[3].item() == new[3]


def test_update_with_stage_repetitions_keeps_once_per_repetition():
    n = 20
    scores = make_scores(n, ties=False)
    for k in (3, 13, 27):  # in repetition 0 of stage 0, repetition 1 of stage 0, stage 1
        s = sampler_for(scores, num_stages=2, stage_epochs=2)
        it = iter(s)
        head = [next(it) for _ in range(k)]
        s.update(range(n), semantic_entropy=[1.0 - v for v in scores])  # reversed, still >= 0
        order = head + list(it)
        assert Counter(order) == {i: 2 for i in range(n)}
        for st, block in enumerate(stage_blocks(s, order)):
            assert sorted(block[:10]) == sorted(block[10:]) == sorted(i for i in range(n) if s.stage_of(i) == st)
        if k >= 20:  # stage 0 fully yielded: stage 1 keeps its members, only re-drawn
            assert set(order[20:]) == {i for i in range(n) if s.stage_of(i) == 1}


def test_update_details():
    s = sampler_for(make_scores(8, ties=False))
    snap = s.state_dict()
    s.update([1, 2], semantic_entropy=[math.nan, math.nan], accuracy=[0.5, 1.0])
    assert torch.equal(s.state_dict()["order"], snap["order"])  # NaN = no new score
    assert s.accuracy[1].item() == 0.5 and math.isnan(s.accuracy[0].item())
    s.update([1, 1], semantic_entropy=[5.0, 6.0])
    assert s.scores[1].item() == 6.0  # the last duplicate wins
    with pytest.raises(IndexError):
        s.update([8], semantic_entropy=[1.0])
    with pytest.raises(ValueError, match="2 indices but 1"):
        s.update([0, 1], semantic_entropy=[1.0])
    # an update after the epoch is fully yielded shapes the next epoch's stages
    t = sampler_for([0.0, 1.0, 2.0, 3.0], shuffle_within_stage=False)
    assert list(t) == [0, 1, 2, 3]
    t.update([0, 1], semantic_entropy=[9.0, 8.0])
    assert list(t) == [2, 3, 1, 0]


# ---------------------------------------------------------------- StatefulDataLoader resume
def scores_at(step, idx):
    return [((step * 31 + i * 17) % 13) / 4.0 for i in idx]


def build(scores, **cur):
    ds = IdxDataset(scores)
    sampler = SemanticEntropyCurriculumSampler(ds, cfg(**cur))
    return sampler, StatefulDataLoader(ds, batch_size=4, num_workers=0, drop_last=True, sampler=sampler)


def run(dl, sampler, epochs, start_step=0, stop_after=None, adaptive=False):
    """veRL's loop: ``for epoch: for batch in dl``; optionally update() after every step."""
    out, step = [], start_step
    for _ in range(epochs):
        for batch in dl:
            idx = batch.tolist()
            out.append(idx)
            step += 1
            if adaptive:
                sampler.update(idx, semantic_entropy=scores_at(step, idx))
            if stop_after is not None and step == stop_after:
                return out, step
    return out, step


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize(
    "n,stage_epochs,k,adaptive",
    [
        (24, 1, 2, False),  # mid-epoch 0
        (24, 1, 9, False),  # mid-epoch 1 (6 batches per epoch)
        (30, 2, 19, False),  # drop_last remainder, stage repetitions, epoch 1
        (30, 1, 7, True),  # update() before the save and after the resume
        (26, 2, 15, True),
        (24, 1, 6, True),  # saved right after an epoch's last batch
    ],
)
def test_resume_matches_uninterrupted(n, stage_epochs, k, adaptive):
    scores = make_scores(n)
    epochs = 3
    s, dl = build(scores, num_stages=3, stage_epochs=stage_epochs)
    full, _ = run(dl, s, epochs, adaptive=adaptive)
    per_epoch = len(dl)
    assert len(full) == epochs * per_epoch

    s1, dl1 = build(scores, num_stages=3, stage_epochs=stage_epochs)
    head, step = run(dl1, s1, epochs, stop_after=k, adaptive=adaptive)
    state = roundtrip(dl1.state_dict())
    del s1, dl1

    s2, dl2 = build(scores, num_stages=3, stage_epochs=stage_epochs)
    dl2.load_state_dict(state)
    epoch_now = k // per_epoch if k % per_epoch else k // per_epoch - 1  # epoch of batch k
    rest, _ = run(dl2, s2, epochs - epoch_now, start_step=step, adaptive=adaptive)
    assert head + rest == full
    for e in range(epochs):  # each index at most stage_epochs times per epoch (drop_last)
        got = Counter(i for b in full[e * per_epoch : (e + 1) * per_epoch] for i in b)
        assert max(got.values()) <= stage_epochs


def test_resume_after_a_finished_epoch_loop():
    """Saved after the loop of epoch 0 ended (iterator finished): the restore starts epoch 1."""
    scores = make_scores(22)
    s, dl = build(scores, stage_epochs=2)
    full, _ = run(dl, s, 3, adaptive=True)
    s1, dl1 = build(scores, stage_epochs=2)
    head, step = run(dl1, s1, 1, adaptive=True)
    state = roundtrip(dl1.state_dict())
    s2, dl2 = build(scores, stage_epochs=2)
    dl2.load_state_dict(state)
    rest, _ = run(dl2, s2, 2, start_step=step, adaptive=True)
    assert head + rest == full


def test_resume_with_worker_processes_static():
    scores = make_scores(32)
    ds = IdxDataset(scores)

    def make():
        s = SemanticEntropyCurriculumSampler(ds, cfg(num_stages=2))
        return s, StatefulDataLoader(ds, batch_size=4, num_workers=2, drop_last=True, sampler=s)

    s, dl = make()
    full, _ = run(dl, s, 2)
    s1, dl1 = make()
    head, _ = run(dl1, s1, 2, stop_after=11)
    state = roundtrip(dl1.state_dict())
    del dl1
    s2, dl2 = make()
    dl2.load_state_dict(state)
    rest, _ = run(dl2, s2, 1)
    assert head + rest == full


def test_epoch_boundary_restore_by_hand():
    """veRL skips the dataloader restore at an epoch boundary: restore the sampler alone."""
    scores = make_scores(26)
    s, dl = build(scores, num_stages=2)
    full, _ = run(dl, s, 2, adaptive=True)
    s1, dl1 = build(scores, num_stages=2)
    head, step = run(dl1, s1, 1, adaptive=True)  # one whole epoch (6 batches, 2 rows dropped)
    state = sampler_state_from_dataloader_state(roundtrip(dl1.state_dict()))
    assert state is not None and state["epoch"] == 0
    s2, dl2 = build(scores, num_stages=2)
    s2.load_state_dict(state)
    s2.set_epoch(s2.epoch + 1)
    rest, _ = run(dl2, s2, 1, start_step=step, adaptive=True)
    assert head + rest == full


def test_state_dict_is_a_snapshot_and_safe_to_load():
    s = sampler_for(make_scores(12, ties=False))
    it = iter(s)
    [next(it) for _ in range(3)]
    snap = s.state_dict()
    s.update(range(12), semantic_entropy=list(range(12, 0, -1)))
    assert not torch.equal(snap["order"], s.state_dict()["order"])  # snapshot untouched
    assert snap["scores"].tolist() == make_scores(12, ties=False)
    buf = io.BytesIO()
    torch.save(snap, buf)
    buf.seek(0)
    t = sampler_for(make_scores(12, ties=False))
    t.load_state_dict(torch.load(buf, weights_only=True))
    assert list(t) == snap["order"].tolist()[3:]
    with pytest.raises(ValueError, match="num_rows"):
        sampler_for(make_scores(13)).load_state_dict(snap)


# ---------------------------------------------------------------- corrupt scores
def test_negative_infinite_or_bool_scores_are_refused_naming_the_row():
    for bad, shown in ((-0.5, "-0.5"), (math.inf, "inf"), (-math.inf, "-inf")):
        scores = make_scores(10)
        scores[4] = bad
        for policy in ("error", "last_stage"):  # not "missing": refused under every policy
            with pytest.raises(
                ValueError, match=rf"row 4 has 'semantic_entropy' = {shown}; a semantic entropy is finite and >= 0"
            ):
                sampler_for(scores, missing_policy=policy)
    with pytest.raises(ValueError, match="row 1 has a non-numeric 'semantic_entropy' value True"):
        SemanticEntropyCurriculumSampler([{"semantic_entropy": 1.0}, {"semantic_entropy": True}], {})
    assert list(sampler_for([0.0, -0.0, 1.0], shuffle_within_stage=False)) == [0, 1, 2]  # zero is a valid H_SE


def test_update_with_a_corrupt_score_changes_nothing():
    s = sampler_for(make_scores(12, ties=False), num_stages=3)
    it = iter(s)
    [next(it) for _ in range(3)]
    before = s.state_dict()
    for bad in (-1e-9, math.inf):
        with pytest.raises(ValueError, match=rf"row 7 has 'semantic_entropy' = {bad!r}"):
            s.update([5, 7], semantic_entropy=[0.3, bad], accuracy=[0.5, 0.5])
        after = s.state_dict()
        for k in ("order", "stage", "scores", "accuracy"):
            assert torch.equal(after[k].nan_to_num(-1), before[k].nan_to_num(-1)), k
        assert after["num_updates"] == before["num_updates"]
    s.update([5, 7], semantic_entropy=[0.1234567890123456789, math.nan])  # NaN: keep the old score
    assert s.scores[5].item() == 0.1234567890123456789  # stored in float64, not rounded via float32
    assert s.scores[7].item() == before["scores"][7].item()
