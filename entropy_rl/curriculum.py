"""SENT's semantic-entropy curriculum as a resumable, optionally adaptive, veRL sampler.

SENT (arXiv 2512.04359) trains on a "curriculum from low to high semantic entropy, N
stages": the training prompts are sorted by the semantic entropy H_SE of the initial
policy's answers, split into N stages (2 in the released scripts, each stage trained for 5
epochs, each a separate run). Here the whole curriculum is one sampler, so it is one run
with one optimizer state:

* stages: the prompts with a score, sorted ascending by (score, row index), split into
  ``num_stages`` equal-count quantile stages (sizes differ by at most one, earlier stages
  take the extra rows); rows without a score (None / NaN) join the last or first stage
  (``missing_policy``) or raise ``ValueError`` naming the row (default); a negative,
  infinite or non-numeric score always raises ``ValueError`` naming the row;
* one sampler epoch holds ``stage_epochs`` passes over every stage (``__len__ = num_rows *
  stage_epochs``), ordered by ``schedule``:

  - ``staged`` (SENT's release): stage 0 repeated ``stage_epochs`` times, then stage 1
    repeated ``stage_epochs`` times, ... — the stage index never decreases. The release ran
    each stage as its own job with ``trainer.total_epochs=5``; here that is ``stage_epochs=5``
    with ``trainer.total_epochs=1`` (a larger ``total_epochs`` repeats the whole curriculum);
  - ``interleaved``: stage 0, stage 1, ..., then again, ``stage_epochs`` times — low → high
    inside every pass over the data, a different curriculum kept for comparison;

  each repetition is a fresh within-stage shuffle (``shuffle_within_stage``, else ascending
  score);
* epoch e draws its shuffles from ``torch.Generator().manual_seed(seed + e)``; a new epoch
  starts when an iterator begins after the previous epoch was fully yielded (veRL calls
  no ``set_epoch``), or by ``set_epoch(e)``; it re-splits the stages from the current
  scores, updated ones included;
* ``update(indices, semantic_entropy=...)`` (adaptive variant, not in the paper) stores fresh
  scores and re-assigns only the prompts not yet yielded in this epoch, by their new score,
  into the remaining stage slots (stage sizes kept); yielded positions never change;
* ``state_dict``/``load_state_dict`` hold scores, stage assignment, order, position and the
  generator, so a ``StatefulDataLoader`` resumed mid-epoch yields exactly the remaining
  order (it restores the sampler instead of skipping batches).

Config, under ``data_config.curriculum`` (:class:`CurriculumConfig`)::

    score_key: semantic_entropy   # column, or dotted path into a dict column: extra_info.semantic_entropy
    num_stages: 2
    stage_epochs: 1               # passes over each stage per sampler epoch (SENT: 5)
    schedule: staged              # staged (all passes of a stage, then the next) | interleaved
    seed: null                    # null: data_config.seed, else 1
    shuffle_within_stage: true
    missing_policy: error         # error | last_stage | first_stage

Resume notes: with ``dataloader_num_workers > 0`` the loader saves the sampler state
captured when a batch was *prefetched*, so ``update()`` calls made after that moment are
lost on resume (exact only with ``num_workers=0``; a static curriculum is exact either way).
veRL skips the dataloader restore when a checkpoint sits exactly at an epoch boundary; a
recipe that wants the next epoch exact calls
``sampler.load_state_dict(sampler_state_from_dataloader_state(torch.load("data.pt")))``
and then ``sampler.set_epoch(sampler.epoch + 1)``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from entropy_rl.config import CurriculumConfig, MissingPolicy, Schedule, _to_dict  # noqa: F401  (re-exported)

_STATE_VERSION = 1


def read_scores(data_source: Any, key: str) -> list[Any]:
    """Per-row raw values of ``key`` (dotted path into dict columns); None where absent.

    Accepts an object with ``.dataframe`` (veRL's RLHFDataset), a pandas DataFrame, a
    Hugging Face ``datasets.Dataset``, a mapping of columns, or a sequence of row dicts.
    """
    src = getattr(data_source, "dataframe", data_source)
    parts = key.split(".")
    if hasattr(src, "iloc") and hasattr(src, "columns"):  # pandas
        cols = set(src.columns)
        get_col = lambda name: src[name].tolist()  # noqa: E731
    elif hasattr(src, "column_names") and hasattr(src, "features"):  # HF datasets
        cols = set(src.column_names)
        get_col = lambda name: list(src[name])  # noqa: E731
    elif isinstance(src, Mapping):  # columns
        cols = set(src)
        get_col = lambda name: list(src[name])  # noqa: E731
    else:  # rows
        rows = [src[i] for i in range(len(src))]
        return [_walk(row, parts) for row in rows]
    if key in cols:  # a flat column literally named "a.b" wins
        return get_col(key)
    if parts[0] not in cols:
        return [None] * len(src)
    return [_walk(v, parts[1:]) for v in get_col(parts[0])]


def _walk(value: Any, parts: Sequence[str]) -> Any:
    for p in parts:
        if isinstance(value, Mapping):
            value = value.get(p)
        else:
            return None
    return value


def _as_float(value: Any, row: int, key: str) -> float:
    """float(value); NaN for None/NaN (missing); ValueError naming the row otherwise.

    H_SE = −Σ_c p(c) log p(c) is finite and ≥ 0: a negative or infinite score is corrupt
    data (a wrong column, a sign error), not a difficulty, and would put its row first/last.
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError(f"curriculum: row {row} has a non-numeric {key!r} value {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"curriculum: row {row} has a non-numeric {key!r} value {value!r}") from None
    _check_entropy(f, row, key)
    return f


def _check_entropy(f: float, row: int, key: str) -> None:
    if f < 0 or f == math.inf:
        raise ValueError(f"curriculum: row {row} has {key!r} = {f!r}; a semantic entropy is finite and >= 0")


def sampler_state_from_dataloader_state(state: Mapping) -> dict | None:
    """Find this sampler's state inside a ``StatefulDataLoader.state_dict()`` (any worker count)."""
    if not isinstance(state, Mapping):
        return None
    if state.get("kind") == SemanticEntropyCurriculumSampler.STATE_KIND:
        return dict(state)
    for v in state.values():
        found = sampler_state_from_dataloader_state(v)
        if found is not None:
            return found
    return None


class SemanticEntropyCurriculumSampler(Sampler[int]):
    """SENT curriculum sampler: low→high semantic entropy in ``num_stages`` stages.

    Built as veRL builds samplers, ``SemanticEntropyCurriculumSampler(dataset, config.data)``,
    and passed as ``RayPPOTrainer(train_sampler=...)``. See the module docstring for the
    epoch structure, ``update`` semantics and resume.
    """

    STATE_KIND = "entropy_rl.SemanticEntropyCurriculumSampler"

    def __init__(self, data_source: Any, data_config: Any = None) -> None:
        self.config = (
            data_config if isinstance(data_config, CurriculumConfig) else CurriculumConfig.from_data_config(data_config)
        )
        cfg = self.config
        raw = read_scores(data_source, cfg.score_key)
        self.num_rows = len(raw)
        self.scores = torch.tensor([_as_float(v, i, cfg.score_key) for i, v in enumerate(raw)], dtype=torch.float64)
        self.accuracy = torch.full((self.num_rows,), math.nan, dtype=torch.float64)
        missing = torch.isnan(self.scores).nonzero().flatten().tolist()
        if missing and cfg.missing_policy == "error":
            rows = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ValueError(
                f"curriculum: row {missing[0]} has no {cfg.score_key!r} score (missing or NaN); "
                f"{len(missing)} of {self.num_rows} rows lack it (rows {rows}). Score them, or set "
                "data.curriculum.missing_policy to 'last_stage' or 'first_stage'."
            )
        self.num_updates = 0
        self._gen = torch.Generator()
        self._start_epoch(0)

    # ------------------------------------------------------------------ structure
    def _keys(self) -> list[tuple]:
        """Sort key of every row: (missing flag, score, row); missing rows sort last/first."""
        flag = 1 if self.config.missing_policy == "last_stage" else -1
        return [(flag, 0.0, i) if math.isnan(s) else (0, s, i) for i, s in enumerate(self.scores.tolist())]

    def _assign_stages(self) -> None:
        """Equal-count split of the scored rows by (score, index); missing rows join last/first stage."""
        keys = self._keys()
        scored = sorted((i for i in range(self.num_rows) if keys[i][0] == 0), key=keys.__getitem__)
        missing = [i for i in range(self.num_rows) if keys[i][0] != 0]
        base, extra = divmod(len(scored), self.config.num_stages)
        sizes = [base + (s < extra) for s in range(self.config.num_stages)]
        sizes[-1 if self.config.missing_policy == "last_stage" else 0] += len(missing)
        self._stage_sizes = sizes
        self._stage = [0] * self.num_rows
        ranked = (missing + scored) if self.config.missing_policy == "first_stage" else (scored + missing)
        self._fill_stages(ranked, 0, sizes)

    def _fill_stages(self, ranked: list[int], first_stage: int, capacities: list[int]) -> None:
        pos = 0
        for k, cap in enumerate(capacities):
            for i in ranked[pos : pos + cap]:
                self._stage[i] = first_stage + k
            pos += cap

    def _stage_sequence(self) -> list[int]:
        """The stage of every pass in the epoch order (``schedule``)."""
        n, reps = self.config.num_stages, self.config.stage_epochs
        if self.config.schedule == "staged":
            return [s for s in range(n) for _ in range(reps)]
        return [s for _ in range(reps) for s in range(n)]

    def _blocks(self) -> list[tuple[int, int]]:
        """(stage, start position) of every stage repetition in the epoch order."""
        out, start = [], 0
        for s in self._stage_sequence():
            out.append((s, start))
            start += self._stage_sizes[s]
        return out

    def _arrange(self, rows: list[int], keys: list[tuple]) -> list[int]:
        """One stage repetition: seeded shuffle, or ascending score when shuffling is off."""
        if not self.config.shuffle_within_stage:
            return sorted(rows, key=keys.__getitem__)
        rows = sorted(rows)  # canonical input, so the draw depends on the set only
        perm = torch.randperm(len(rows), generator=self._gen).tolist()
        return [rows[p] for p in perm]

    def _members(self, stage: int) -> list[int]:
        return [i for i in range(self.num_rows) if self._stage[i] == stage]

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._assign_stages()
        self._gen.manual_seed(self.config.seed + epoch)
        keys, order = self._keys(), []
        members = {s: self._members(s) for s in range(self.config.num_stages)}
        for s in self._stage_sequence():
            order += self._arrange(members[s], keys)
        self._order = order
        self._yielded = 0
        self._restored = False

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (stages re-split from current scores)."""
        self._start_epoch(int(epoch))

    # ------------------------------------------------------------------ Sampler API
    def __len__(self) -> int:
        return self.num_rows * self.config.stage_epochs

    def __iter__(self) -> Iterator[int]:
        # A new iterator after a fully yielded epoch starts the next epoch, except the first
        # one after load_state_dict: it finishes the restored epoch (maybe with nothing left),
        # as StatefulDataLoader expects. Repeated iter() calls with nothing yielded between
        # them (the loader makes several while it builds or restores) are idempotent.
        if self._restored:
            self._restored = False
        elif self._order and self._yielded >= len(self._order):
            self._start_epoch(self.epoch + 1)
        return self._positions()

    def _positions(self) -> Iterator[int]:
        # Reads the mutable order by position: update() / load_state_dict() made while this
        # iterator is live take effect at the next index.
        while self._yielded < len(self._order):
            i = self._order[self._yielded]
            self._yielded += 1
            yield i

    # ------------------------------------------------------------------ metrics
    @property
    def stage_boundaries(self) -> tuple[int, ...]:
        """Positions in the epoch order where each stage starts, plus the end: stage s is [b[s], b[s+1]).

        Only the ``staged`` schedule has one contiguous range per stage; see :attr:`pass_boundaries`.
        """
        if self.config.schedule != "staged":
            raise ValueError(
                "stage_boundaries: the interleaved schedule visits each stage several times; use pass_boundaries"
            )
        b = [0]
        for size in self._stage_sizes:
            b.append(b[-1] + size * self.config.stage_epochs)
        return tuple(b)

    @property
    def pass_boundaries(self) -> tuple[tuple[int, int, int], ...]:
        """(stage, start, end) of every pass over a stage, in the epoch order."""
        return tuple((s, start, start + self._stage_sizes[s]) for s, start in self._blocks())

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return tuple(self._stage_sizes)

    @property
    def current_stage(self) -> int:
        """Stage of the most recently yielded index (of the next one before any is yielded)."""
        if not self._order:
            return 0
        pos = max(self._yielded - 1, 0)
        blocks = self._blocks()
        return blocks[bisect.bisect_right([start for _, start in blocks], pos) - 1][0]

    def stage_of(self, index: int) -> int:
        """Stage the prompt ``index`` belongs to in the current epoch."""
        return self._stage[int(index)]

    def metrics(self, prefix: str = "curriculum/") -> dict[str, float]:
        """Scalars to log: epoch, current stage, share of the epoch yielded, updates so far."""
        return {
            f"{prefix}epoch": float(self.epoch),
            f"{prefix}stage": float(self.current_stage),
            f"{prefix}progress": self._yielded / max(len(self._order), 1),
            f"{prefix}num_updates": float(self.num_updates),
        }

    # ------------------------------------------------------------------ adaptive update
    def update(self, indices: Any, semantic_entropy: Any = None, accuracy: Any = None) -> None:
        """Store fresh per-prompt scores; re-assign the prompts not yet yielded this epoch.

        ``indices`` are dataset rows; values are tensors / arrays / lists of the same length
        (e.g. EMAs the trainer keeps). NaN values are ignored (the old score stays); a
        negative or infinite semantic entropy raises ``ValueError`` naming the row.
        ``accuracy`` is stored (``self.accuracy``) but does not affect the order.

        With y indices yielded and the current stage c: the prompts not yet yielded this
        epoch, sorted by (new score, index), fill first the free slots of stage c (its size
        minus its members already yielded), then stages c+1, ... at their sizes. Every
        position from y on is re-drawn from the new membership; positions < y never change,
        and each prompt still appears once per repetition of its stage.
        """
        idx = torch.as_tensor(indices).detach().cpu().to(torch.int64).flatten().tolist()
        for i in idx:
            if not 0 <= i < self.num_rows:
                raise IndexError(f"curriculum.update: index {i} out of range [0, {self.num_rows})")
        vals = None
        if semantic_entropy is not None:
            vals = torch.as_tensor(semantic_entropy, dtype=torch.float64).detach().cpu().flatten().tolist()
            for i, v in zip(idx, vals):  # checked before anything is stored: a bad update changes nothing
                _check_entropy(v, i, "semantic_entropy")
        if accuracy is not None:
            self._store(self.accuracy, idx, accuracy, "accuracy")
        if vals is None:
            return
        changed = self._store(self.scores, idx, vals, "semantic_entropy")
        self.num_updates += 1
        if changed and self._yielded < len(self._order):
            self._reassign_remaining()

    @staticmethod
    def _store(target: torch.Tensor, idx: list[int], values: Any, name: str) -> bool:
        vals = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten().tolist()
        if len(vals) != len(idx):
            raise ValueError(f"curriculum.update: {len(idx)} indices but {len(vals)} {name} values")
        changed = False
        for i, v in zip(idx, vals):  # in order: the last duplicate wins
            if not math.isnan(v) and target[i].item() != v:
                target[i] = v
                changed = True
        return changed

    def _reassign_remaining(self) -> None:
        y = self._yielded
        blocks = self._blocks()
        b = bisect.bisect_right([start for _, start in blocks], y) - 1
        cur_stage, block_start = blocks[b]
        done = set(self._order[:y])
        done_in_stage = sum(1 for i in done if self._stage[i] == cur_stage)
        keys = self._keys()
        movable = sorted((i for i in range(self.num_rows) if i not in done), key=keys.__getitem__)
        caps = [self._stage_sizes[cur_stage] - done_in_stage] + self._stage_sizes[cur_stage + 1 :]
        self._fill_stages(movable, cur_stage, caps)
        # current repetition: its stage's members not yet yielded in this repetition
        in_block = set(self._order[block_start:y])
        members = self._members(cur_stage)
        tail = self._arrange([i for i in members if i not in in_block], keys)
        for s, _ in blocks[b + 1 :]:
            if s != cur_stage:
                cur_stage, members = s, self._members(s)
            tail += self._arrange(members, keys)
        self._order = self._order[:y] + tail

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies): StatefulDataLoader keeps it while iteration goes on."""
        return {
            "kind": self.STATE_KIND,
            "version": _STATE_VERSION,
            "num_rows": self.num_rows,
            "num_stages": self.config.num_stages,
            "stage_epochs": self.config.stage_epochs,
            "schedule": self.config.schedule,
            "epoch": self.epoch,
            "yielded": self._yielded,
            "order": torch.tensor(self._order, dtype=torch.int64),
            "stage": torch.tensor(self._stage, dtype=torch.int64),
            "stage_sizes": list(self._stage_sizes),
            "scores": self.scores.clone(),
            "accuracy": self.accuracy.clone(),
            "num_updates": self.num_updates,
            "generator": self._gen.get_state().clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next ``iter()`` continues the restored epoch."""
        if state.get("kind") != self.STATE_KIND or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a v{_STATE_VERSION} {self.STATE_KIND} state: {sorted(state)}")
        cfg = self.config
        mine = {
            "num_rows": self.num_rows,
            "num_stages": cfg.num_stages,
            "stage_epochs": cfg.stage_epochs,
            "schedule": cfg.schedule,
        }
        for k, v in mine.items():
            # states written before `schedule` existed were all staged
            if state.get(k, "staged" if k == "schedule" else None) != v:
                raise ValueError(f"curriculum state has {k}={state.get(k)}, this sampler has {v}")
        self.epoch = int(state["epoch"])
        self._yielded = int(state["yielded"])
        self._order = torch.as_tensor(state["order"]).tolist()
        self._stage = torch.as_tensor(state["stage"]).tolist()
        self._stage_sizes = list(state["stage_sizes"])
        self.scores = torch.as_tensor(state["scores"], dtype=torch.float64).clone()
        self.accuracy = torch.as_tensor(state["accuracy"], dtype=torch.float64).clone()
        self.num_updates = int(state["num_updates"])
        self._gen.set_state(state["generator"].clone())
        self._restored = True
