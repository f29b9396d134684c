#!/usr/bin/env python3
"""Download the training / evaluation sets and write them in veRL's RL parquet schema.

    python launch/prepare_data.py                                # all sets -> $ENTROPY_RL_DATA
    python launch/prepare_data.py --datasets dapo_math_17k,aime24 --out ~/data/entropy_rl
    python launch/prepare_data.py --source-dir /nfs/raw          # offline: DIR/<name>.parquet|.jsonl|.json
    python -m launch.prepare_data --list                         # the dataset table

Output: ``<out>/<name>/train.parquet`` (training sets) or ``<out>/<name>/test.parquet``
(evaluation sets); ``--out`` defaults to ``$ENTROPY_RL_DATA``, else ``~/data/entropy_rl``
(the paths ``conf/entropy_rl.yaml`` reads). Every row is::

    data_source  str    our dataset name (``aime24``, ...)
    prompt       [{"role": "user", "content": <problem> + "\\n\\n" + INSTRUCTION}]
    ability      "math"
    reward_model {"style": "rule", "ground_truth": <str>}
    extra_info   {"index": int, "split": "train" | "test", "source_id": str | None}

All files share one Arrow schema (:data:`SCHEMA`), so veRL can concatenate several
``val_files``. Decisions:

- ``ground_truth`` is always a string: a gold wrapped in ``\\boxed{}`` is unwrapped, a
  gold wrapped whole in ``$...$`` loses the dollars, integral floats (``27.0``) become
  ``27``, and a list of golds (OlympiadBench ``final_answer``) is joined with ``", "``,
  because each item is a *required* part of the answer (``entropy_rl.reward`` would read a
  list as alternatives). A gold must survive ``extract_answer("\\boxed{<gold>}")``
  unchanged (balanced braces), so a model that boxes it scores 1.
- ``extra_info.index`` is the row's position among the rows written (0, 1, ...): for a
  given source it is the same on every run, and ``--limit N`` writes a prefix of it.
- DAPO-Math-17k repeats each of its ~17k problems about 100 times (1.79M rows): rows are
  de-duplicated on the problem text (after removing DAPO's "Answer:" prompt template,
  which our boxed instruction replaces); the first occurrence is kept and the number
  dropped is printed. A problem whose copies carry *different* golds (equal normal forms
  or equal plain numbers count as the same gold) cannot have them all right, and a wrong gold is a wrong reward on
  every step that samples it: such problems are dropped whole by default, each written to
  ``rejected.jsonl`` with all its golds and rows, and their count is printed
  (``--keep-conflicts`` keeps the first copy instead). ``--limit`` still reads such a set
  to the end, so its rows are a prefix of the full run's. Evaluation sets are never de-duplicated
  (benchmarks keep their official size).
- Golds lose inner math delimiters too (OlympiadBench stores ``'$69$,$84$'``):
  ``$a$,$b$`` -> ``a, b`` and every unescaped ``$`` goes (``\\$`` stays a dollar sign).
- Hub datasets are read at a fixed revision: ``DatasetSpec.revision`` (or ``--revision
  name=REV``) if set, else the repository's current commit, resolved once before loading.
  The revision asked for and the commit read are recorded in the written parquet's
  metadata (key ``entropy_rl``, with the source and row counts), so a rerun can pin it.
- Every row is validated: a problem must be a non-empty string (or chat list), a gold a
  non-empty string, a finite number (normalised to a string here, explicitly) or a list of
  those; None, NaN, inf, bools, dicts and other types are rejected. A bad row raises
  :class:`DataError` naming dataset, source file, row (0-based) and field.
  ``--skip-invalid`` instead writes each such row to ``<out>/<name>/rejected.jsonl``
  (dataset, file, row, field, reason, the record) and prints the count per field and
  every skipped row (the first 50; the file has all). A column missing from the whole
  source is a mapping error and always fatal.
- ``extra_info.index`` is assigned here (0..n-1), so it is unique by construction; the
  training side checks it again (``recipe.sent.scoring.check_rows``) for files from
  elsewhere.
- Existing outputs are kept unless ``--force``; files are written to a temporary name
  and moved into place with ``os.replace`` (never a half-written parquet).
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # `python launch/prepare_data.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_rl.answers import all_boxed, exact_number, extract_answer, normalize_answer  # noqa: E402
from entropy_rl.io import atomic_write_path  # noqa: E402
from entropy_rl.rows import gold_problem  # noqa: E402
from recipe.sent.config import DefaultsHelpFormatter  # noqa: E402

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm comes with veRL's dependencies
    tqdm = None

__all__ = [
    "DATASETS",
    "INSTRUCTION",
    "SCHEMA",
    "DataError",
    "DatasetSpec",
    "Result",
    "convert_rows",
    "main",
    "normalize_gold",
    "prepare",
    "prepare_dataset",
    "read_metadata",
]

#: Appended to every problem (train and eval alike): the reward reads the last \boxed{}.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# DAPO-Math-17k's prompt template (asks for an "Answer:" line); stripped before our
# instruction is added, and before de-duplication.
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should "
    "be of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset comes from and which source fields feed our schema.

    Field names are tried in order (the first present wins); a dotted name reads into a
    dict column (``reward_model.ground_truth``); a chat-list value (``[{"role", "content"}]``)
    yields its last user message.
    """

    repo: str  # Hugging Face Hub dataset id
    split: str  # Hub split to load
    out_split: str  # "train" | "test": our output file
    problem: tuple[str, ...]
    answer: tuple[str, ...]
    config: str | None = None  # Hub config (subset) name
    source_id: tuple[str, ...] = ("id",)  # optional
    context: tuple[str, ...] = ()  # optional text put before the problem
    dedupe: bool = False
    template: tuple[str, str] | None = None  # (prefix, suffix) removed from the problem
    checked: str = ""  # what we could verify about repo / split / columns
    # Hub revision (commit sha, tag or branch) to read. None: the current commit, resolved
    # when loading and recorded in the output's metadata; pin it here (or --revision)
    # once it has been read, so every rerun reads the same data.
    revision: str | None = None


# The one place to fix a Hub id, split or column. `checked` says what was verified. The Hub
# itself was not reachable when this was written: nothing was downloaded. Ids, splits and
# columns come from dataset cards / repo listings (DAPO via copies of its card, AIME24,
# AIME25, MATH-500, the OlympiadBench config list, the split/file names of amc23 and
# minervamath) and from other people's loaders (amc23, minerva and OlympiadBench column
# names). Run `--limit 5` once online to confirm them.
# Revisions: the four pinned below are each repository's default-branch commit as recorded
# by public dataset cards and loaders of 2026 (not read here: the Hub was unreachable); a
# wrong one fails the load with the Hub's "revision not found". amc23, olympiadbench and
# minerva are not pinned yet: their first run prints the commit it read, and the written
# metadata records it; pin that here.
DATASETS: dict[str, DatasetSpec] = {
    "dapo_math_17k": DatasetSpec(
        repo="BytedTsinghua-SIA/DAPO-Math-17k",
        revision="65877096c24ffa7abc4e4fa5edb95cf3413a5674",
        split="train",
        out_split="train",
        problem=("prompt",),
        answer=("reward_model.ground_truth",),
        source_id=("extra_info.index",),
        dedupe=True,
        template=(DAPO_PREFIX, DAPO_SUFFIX),
        checked="columns from card mirrors (prompt chat list, reward_model.ground_truth, "
        "extra_info.index str); 1.79M rows, ~17.4k unique; template from DAPO's prompt",
    ),
    "aime24": DatasetSpec(
        repo="HuggingFaceH4/aime_2024",
        revision="2fe88a2f1091d5048c0f36abc874fb997b3dd99a",
        split="train",
        out_split="test",
        problem=("problem",),
        answer=("answer",),
        checked="dataset card: id, problem, solution, answer (str), url, year; split train, 30 rows",
    ),
    "aime25": DatasetSpec(
        repo="math-ai/aime25",
        revision="563bb8404243c5f09de6ec262f2db674fe5bce9b",
        split="test",
        out_split="test",
        problem=("problem",),
        answer=("answer",),
        checked="card (test.jsonl: problem, answer, id; split test); alternative: "
        "opencompass/AIME2025 has two configs (AIME2025-I/-II, columns question/answer)",
    ),
    "amc23": DatasetSpec(
        repo="math-ai/amc23",
        split="test",
        out_split="test",
        problem=("question", "problem"),
        answer=("answer",),
        checked="split test (repo tree); columns question/answer/id/url from third-party "
        "loaders only, answer may be a float (27.0 -> '27')",
    ),
    "math500": DatasetSpec(
        repo="HuggingFaceH4/MATH-500",
        revision="6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be",
        split="test",
        out_split="test",
        problem=("problem",),
        answer=("answer",),
        source_id=("unique_id",),
        checked="card: problem, solution, answer, subject, level, unique_id; split test, 500 rows",
    ),
    "olympiadbench": DatasetSpec(
        repo="Hothan/OlympiadBench",
        config="OE_TO_maths_en_COMP",
        split="train",
        out_split="test",
        problem=("question",),
        answer=("final_answer",),
        context=("context",),
        checked="config OE_TO_maths_en_COMP (674 rows), split train (viewer); columns "
        "question/context/final_answer (list) from third-party loaders",
    ),
    "minerva": DatasetSpec(
        repo="math-ai/minervamath",
        split="test",
        out_split="test",
        problem=("question", "problem"),
        answer=("answer",),
        checked="repo tree (test.jsonl, 272 rows); columns question/answer from third-party loaders",
    ),
}

#: The Arrow schema of every output file.
SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct([("index", pa.int64()), ("split", pa.string()), ("source_id", pa.string())]),
        ),
    ]
)

SOURCE_SUFFIXES = (".parquet", ".jsonl", ".json")
_PRINT_REJECTED = 50  # --skip-invalid prints this many skipped rows; rejected.jsonl has all
_MISSING = object()


class DataError(ValueError):
    """Bad source data or mapping; the message names dataset, source, row and field."""


class _RowError(Exception):
    def __init__(self, field_name: str | None, reason: str):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason

    def describe(self) -> str:
        return f"field '{self.field}' {self.reason}" if self.field else self.reason


@dataclass
class _BadRecord:
    """A source record that could not even be parsed (e.g. a malformed JSON line)."""

    reason: str
    raw: str


@dataclass
class ConvertStats:
    """Counts from :func:`convert_rows` (nothing is dropped without being counted)."""

    seen: int = 0  # source rows read
    duplicates: int = 0  # dropped as duplicates of an earlier problem
    conflicts: int = 0  # duplicates whose gold differed from the kept row's
    conflict_problems: int = 0  # problems dropped because their copies' golds disagree
    untemplated: int = 0  # rows of a templated dataset without the expected template
    rejected: list[dict] = field(default_factory=list)  # with skip_invalid


@dataclass
class Result:
    """What :func:`prepare_dataset` did for one dataset."""

    name: str
    path: Path
    rows: int = 0
    skipped: bool = False  # output existed and --force was not given
    duplicates: int = 0
    conflicts: int = 0
    conflict_problems: int = 0
    rejected: int = 0
    rejected_path: Path | None = None
    source: str = ""
    revision: str | None = None  # the Hub commit read (None: a local source)


# --------------------------------------------------------------------------- conversion


def _get(row: dict, path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _pick(row: dict, names: Sequence[str]) -> tuple[str, Any]:
    for name in names:
        value = _get(row, name)
        if value is not _MISSING:
            return name, value
    return names[0], _MISSING


def _text(value: Any, name: str) -> str:
    """A problem from a string or a chat list (its last user message)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, dict) for m in value):
        users = [m for m in value if m.get("role", "user") == "user"]
        if not users:
            raise _RowError(name, "is a chat list without a user message")
        value = users[-1].get("content")
    if value is None:
        raise _RowError(name, "is missing (null)")
    if not isinstance(value, str):
        raise _RowError(name, f"must be a string, got {type(value).__name__}")
    return value.strip()


def _unwrap_dollars(s: str) -> str:
    for d in ("$$", "$"):
        if len(s) > 2 * len(d) and s.startswith(d) and s.endswith(d) and "$" not in s[len(d) : -len(d)]:
            return s[len(d) : -len(d)].strip()
    return s


_DOLLAR_SEP_RE = re.compile(r"(?<!\\)\$\s*([,;])\s*\$")
_DOLLAR_RE = re.compile(r"(?<!\\)\$")


def _strip_inner_dollars(s: str) -> str:
    """``$69$,$84$`` -> ``69, 84``: math delimiters inside a gold are not part of it."""
    if "$" not in s.replace("\\$", ""):
        return s
    s = _DOLLAR_SEP_RE.sub(lambda m: m.group(1) + " ", s)
    return _DOLLAR_RE.sub("", s).strip()


def normalize_gold(value: Any, name: str = "answer") -> str:
    """The gold answer as a clean string (see module doc); raises on unusable golds (the
    rules every reader of the rows applies: :func:`entropy_rl.rows.gold_problem`)."""
    why = gold_problem(None if value is _MISSING else value)
    if why is not None:
        raise _RowError(name, why)
    return _gold_text(value, name)


def _gold_text(value: Any, name: str) -> str:
    """:func:`normalize_gold` of a gold that ``gold_problem`` accepted (items of a list included)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy scalar / array
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(value, (list, tuple)):
        return ", ".join(_gold_text(v, name) for v in value)
    s = value.strip()
    if "\\boxed" in s or "\\fbox" in s:
        # several boxes are one multi-valued gold, as the reward reads them (gold_answers)
        boxes = all_boxed(s)
        if not boxes:
            raise _RowError(name, f"has an empty or unclosed \\boxed{{}}: {s[:80]!r}")
        s = ", ".join(boxes).strip()
    s = _strip_inner_dollars(_unwrap_dollars(s))
    if not s:
        raise _RowError(name, "is empty")
    if extract_answer("\\boxed{" + s + "}") != s:
        raise _RowError(name, f"cannot be boxed and read back (unbalanced braces?): {s[:80]!r}")
    return s


def _gold_key(gold: str) -> str:
    """Two golds with the same key are the same answer (``9`` and ``9.0``, ``\\frac12`` and
    ``1/2``): the normal form, or the exact value of a plain number."""
    key = normalize_answer(gold)
    v = exact_number(key)
    return key if v is None else f"={v}"


def _strip_template(text: str, template: tuple[str, str]) -> tuple[str, bool]:
    prefix, suffix = template
    found = text.startswith(prefix.strip()) or text.endswith(suffix.strip())
    if text.startswith(prefix.strip()):
        text = text[len(prefix.strip()) :]
    if text.endswith(suffix.strip()):
        text = text[: -len(suffix.strip())]
    return text.strip(), found


def _convert_one(name: str, spec: DatasetSpec, row: Any) -> tuple[str, str, str | None, bool]:
    """(problem, gold, source_id, had_template) of one source row; raises _RowError."""
    if isinstance(row, _BadRecord):
        raise _RowError(None, row.reason)
    if not isinstance(row, dict):
        raise _RowError(None, f"is not an object/record (got {type(row).__name__})")
    pname, value = _pick(row, spec.problem)
    if value is _MISSING:
        raise _RowError(pname, f"is missing (row has fields: {sorted(row)})")
    problem = _text(value, pname)
    had_template = True
    if spec.template is not None:
        problem, had_template = _strip_template(problem, spec.template)
    if not problem:
        raise _RowError(pname, "is empty")
    if spec.context:
        cname, ctx = _pick(row, spec.context)
        if ctx is not _MISSING and ctx is not None:
            if not isinstance(ctx, str):
                raise _RowError(cname, f"must be a string, got {type(ctx).__name__}")
            if ctx.strip():
                problem = ctx.strip() + "\n\n" + problem
    aname, value = _pick(row, spec.answer)
    if value is _MISSING:
        raise _RowError(aname, f"is missing (row has fields: {sorted(row)})")
    gold = normalize_gold(value, aname)
    _, sid = _pick(row, spec.source_id) if spec.source_id else (None, _MISSING)
    source_id = None if sid is _MISSING or sid is None else str(sid)
    return problem, gold, source_id, had_template


def _record(name: str, spec: DatasetSpec, problem: str, gold: str, source_id: str | None, index: int) -> dict:
    return {
        "data_source": name,
        "prompt": [{"role": "user", "content": f"{problem}\n\n{INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": gold},
        "extra_info": {"index": index, "split": spec.out_split, "source_id": source_id},
    }


def _json_safe(row: Any) -> Any:
    if isinstance(row, _BadRecord):
        return row.raw[:2000]
    return json.loads(json.dumps(row, default=repr, ensure_ascii=False))


def convert_rows(
    name: str,
    rows: Iterable[Any],
    *,
    origin: str = "rows",
    skip_invalid: bool = False,
    limit: int | None = None,
    stats: ConvertStats | None = None,
    keep_conflicts: bool = False,
) -> list[dict]:
    """Source rows of dataset ``name`` (dicts with the columns of ``DATASETS[name]``) ->
    records in veRL's schema, validated, de-duplicated where the spec says so.

    A bad row raises :class:`DataError` (``"<name> (<origin>) row <i>: field '<f>' ..."``,
    ``i`` 0-based), or with ``skip_invalid`` is appended to ``stats.rejected``.
    ``limit`` stops after that many written rows; a de-duplicated set is still read to the
    end first, since a later copy can show that a gold conflicts. A de-duplicated problem whose copies disagree on the
    gold is dropped and added to ``stats.rejected`` (with every gold and row), unless
    ``keep_conflicts``: then its first copy is kept.
    """
    spec = _spec(name)
    stats = stats if stats is not None else ConvertStats()
    out: list[dict] = []
    seen: dict[str, str] = {}
    # problem -> (first row, its gold, source id) and every distinct gold with its rows
    golds: dict[str, dict[str, tuple[str, list[int]]]] = {}  # normal form -> (gold, rows)
    kept: list[tuple[str, str, str | None, int]] = []
    for i, row in enumerate(rows):
        if limit is not None and not spec.dedupe and len(out) >= limit:
            break
        stats.seen += 1
        try:
            problem, gold, source_id, had_template = _convert_one(name, spec, row)
        except _RowError as e:
            msg = f"{name} ({origin}) row {i}: {e.describe()}"
            if not skip_invalid:
                raise DataError(msg) from None
            stats.rejected.append(
                {
                    "dataset": name,
                    "file": origin,
                    "row": i,
                    "field": e.field,
                    "reason": e.describe(),
                    "error": msg,
                    "record": _json_safe(row),
                }
            )
            continue
        if spec.dedupe:
            key = _gold_key(gold)
            by_gold = golds.setdefault(problem, {})
            by_gold.setdefault(key, (gold, []))[1].append(i)
            if problem in seen:
                stats.duplicates += 1
                stats.conflicts += _gold_key(seen[problem]) != key
                continue
            seen[problem] = gold
            stats.untemplated += not had_template
            kept.append((problem, gold, source_id, i))
            continue
        stats.untemplated += not had_template
        out.append(_record(name, spec, problem, gold, source_id, len(out)))
    for problem, gold, source_id, i in kept:
        by_gold = golds[problem]
        if len(by_gold) > 1:
            stats.conflict_problems += 1
            if not keep_conflicts:
                all_golds = [g for g, _ in by_gold.values()]  # as the source wrote them
                stats.rejected.append(
                    {
                        "dataset": name,
                        "file": origin,
                        "row": i,
                        "field": spec.answer[0],
                        "kind": "conflict",
                        "reason": f"copies of this problem carry {len(all_golds)} different golds: {all_golds}",
                        "error": f"{name} ({origin}) row {i}: field '{spec.answer[0]}' differs between "
                        f"copies of the same problem: {all_golds}",
                        "golds": all_golds,
                        "rows": {g: rows[:20] for g, rows in by_gold.values()},  # first 20 rows of each
                        "problem": problem[:2000],
                    }
                )
                continue
        if limit is not None and len(out) >= limit:
            break
        out.append(_record(name, spec, problem, gold, source_id, len(out)))
    return out


# --------------------------------------------------------------------------- sources


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def _top_level(spec: DatasetSpec) -> set[str]:
    names = (*spec.problem, *spec.answer, *spec.source_id, *spec.context)
    return {n.split(".")[0] for n in names}


def _check_columns(name: str, spec: DatasetSpec, columns: Sequence[str], origin: str) -> None:
    """A required column absent from the whole source: a mapping error (always fatal)."""
    for label, names in (("problem", spec.problem), ("answer", spec.answer)):
        if not any(n.split(".")[0] in columns for n in names):
            tried = " or ".join(f"'{n}'" for n in names)
            raise DataError(
                f"{name} ({origin}) row 0: field '{names[0]}' is missing: the source has no "
                f"{label} column {tried} (columns: {', '.join(columns)}); fix DATASETS['{name}']"
            )


def _read_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                yield _BadRecord(f"is not valid JSON ({e.msg} at column {e.colno})", line)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


@dataclass
class _Source:
    origin: str
    rows: Iterable[Any]
    total: int | None
    columns: list[str] | None  # known for tabular sources
    revision: str | None = None  # the Hub commit read
    revision_requested: str | None = None


def _local_source(name: str, spec: DatasetSpec, source_dir: Path) -> _Source:
    found = [source_dir / f"{name}{s}" for s in SOURCE_SUFFIXES if (source_dir / f"{name}{s}").is_file()]
    if not found:
        tried = ", ".join(str(source_dir / f"{name}{s}") for s in SOURCE_SUFFIXES)
        raise DataError(f"{name}: no source file in --source-dir (tried {tried})")
    if len(found) > 1:
        raise DataError(f"{name}: several source files, keep one: {', '.join(map(str, found))}")
    path = found[0]
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
        use = [c for c in columns if c in _top_level(spec)]

        def rows() -> Iterator[dict]:
            for batch in pf.iter_batches(batch_size=8192, columns=use):
                yield from batch.to_pylist()

        return _Source(str(path), rows(), pf.metadata.num_rows, columns)
    if path.suffix == ".jsonl":
        return _Source(str(path), _read_jsonl(path), _count_lines(path), None)
    # .json: a list of objects, or JSON lines (what `datasets.Dataset.to_json` writes)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _Source(str(path), _read_jsonl(path), _count_lines(path), None)
    if isinstance(data, dict):  # a single object is one row (JSON lines with one line)
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{name} ({path}): expected a list of objects, got {type(data).__name__}")
    return _Source(str(path), data, len(data), None)


def _resolve_revision(repo: str, revision: str | None) -> str | None:
    """The commit sha that ``revision`` (None: the default branch) of a Hub dataset points
    to now, or None when the Hub cannot say (offline; ``datasets`` may still have a cache)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo, revision=revision).sha
    except Exception:
        return None


def _hub_source(name: str, spec: DatasetSpec, revision: str | None = None) -> _Source:
    import datasets  # slow import; only needed for the Hub

    origin = f"hub:{spec.repo}" + (f"/{spec.config}" if spec.config else "") + f"[{spec.split}]"
    # Read one fixed commit: the one asked for, else the current one, so that the data read
    # and the revision recorded are the same even if the repository changes meanwhile.
    sha = _resolve_revision(spec.repo, revision)
    use_rev = sha or revision
    if revision is None:
        print(
            f"[{name}] note: no revision pinned for {spec.repo}; reading commit {sha or 'unknown (offline)'} "
            f"(pin it with DatasetSpec.revision or --revision {name}=<sha>)"
        )
    try:
        ds = datasets.load_dataset(spec.repo, spec.config, split=spec.split, revision=use_rev)
    except Exception as e:  # network, auth, renamed repo / split
        raise DataError(
            f"{name}: could not load {origin}: {type(e).__name__}: {e}\n"
            f"  check the network / HF_TOKEN, fix the id in DATASETS['{name}'] "
            f"(launch/prepare_data.py), or save the data as DIR/{name}.parquet and pass --source-dir DIR"
        ) from e
    columns = list(ds.column_names)
    use = [c for c in columns if c in _top_level(spec)]
    if use and len(use) < len(columns):
        ds = ds.select_columns(use)

    def rows() -> Iterator[dict]:  # Arrow batches: ~6x faster than row-by-row iteration
        for batch in ds.with_format("arrow").iter(batch_size=8192):
            yield from batch.to_pylist()

    return _Source(origin, rows(), len(ds), columns, revision=sha or revision, revision_requested=revision)


# --------------------------------------------------------------------------- writing


def _write_atomic(path: Path, write) -> None:
    atomic_write_path(path, lambda tmp: write(Path(tmp)))


def _write_parquet(path: Path, records: list[dict], meta: dict | None = None) -> None:
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    if meta is not None:  # where the rows came from, read back by read_metadata()
        table = table.replace_schema_metadata({b"entropy_rl": json.dumps(meta, sort_keys=True).encode()})
    _write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def _write_jsonl(path: Path, records: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    _write_atomic(path, write)


def read_metadata(path: str | os.PathLike) -> dict:
    """The provenance a written file records: source, Hub revision asked for and read,
    row counts (see the module doc); ``{}`` for a file without it."""
    raw = (pq.read_schema(path).metadata or {}).get(b"entropy_rl")
    return json.loads(raw) if raw else {}


def output_path(name: str, out: str | os.PathLike) -> Path:
    """``<out>/<name>/train.parquet`` or ``.../test.parquet``."""
    return Path(out).expanduser() / name / f"{_spec(name).out_split}.parquet"


def prepare_dataset(
    name: str,
    out: str | os.PathLike,
    *,
    source_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    force: bool = False,
    skip_invalid: bool = False,
    progress: bool = True,
    keep_conflicts: bool = False,
    revision: str | None = None,
    max_invalid: float = 0.05,
) -> Result:
    """Convert one dataset (from the Hub, or ``source_dir/<name>.*``) and write it.
    ``revision`` overrides the spec's Hub revision."""
    spec = _spec(name)
    path = output_path(name, out)
    result = Result(name=name, path=path)
    if path.exists() and not force:
        print(f"[{name}] {path} exists, skipped (--force rebuilds it)")
        result.skipped = True
        return result
    src = (
        _local_source(name, spec, Path(source_dir).expanduser())
        if source_dir
        else _hub_source(name, spec, revision or spec.revision)
    )
    result.source = src.origin
    result.revision = src.revision
    if src.columns is not None:
        _check_columns(name, spec, src.columns, src.origin)
    print(f"[{name}] reading {src.origin}" + (f" ({src.total} rows)" if src.total is not None else ""))
    rows: Iterable[Any] = src.rows
    bar = None
    if progress and tqdm is not None:
        bar = tqdm(rows, total=src.total, desc=name, unit="row", mininterval=0.5, dynamic_ncols=True)
        rows = bar
    stats = ConvertStats()
    try:
        records = convert_rows(
            name,
            rows,
            origin=src.origin,
            skip_invalid=skip_invalid,
            limit=limit,
            stats=stats,
            keep_conflicts=keep_conflicts,
        )
    finally:
        if bar is not None:
            bar.close()
    if not records:
        raise DataError(
            f"{name} ({src.origin}): no rows to write ({stats.seen} read, "
            f"{len(stats.rejected)} rejected, {stats.duplicates} duplicates)"
        )
    invalid_rows = [r for r in stats.rejected if r.get("kind") != "conflict"]
    if skip_invalid and stats.seen and len(invalid_rows) > max_invalid * stats.seen:
        # a source this broken is the wrong file or a changed schema, not a few bad rows
        raise DataError(
            f"{name} ({src.origin}): {len(invalid_rows)} of {stats.seen} rows are invalid "
            f"({len(invalid_rows) / stats.seen:.0%}, above --max-invalid {max_invalid:.0%}); nothing written. "
            f"First: {invalid_rows[0]['error']}. Check the source, or allow more with --max-invalid"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": name,
        "source": src.origin,
        "revision_requested": src.revision_requested,
        "revision": src.revision,
        "rows": len(records),
        "source_rows_read": stats.seen,
        "duplicates_dropped": stats.duplicates,
        "conflicting_problems": stats.conflict_problems,
        "conflicts_dropped": not keep_conflicts,
        "rejected": len(stats.rejected),
    }
    _write_parquet(path, records, meta)
    rejected_path = path.parent / "rejected.jsonl"
    if stats.rejected:
        _write_jsonl(rejected_path, stats.rejected)
        result.rejected_path = rejected_path
    invalid = [r for r in stats.rejected if r.get("kind") != "conflict"]
    if invalid:
        by_field: dict[str, int] = {}
        for r in invalid:
            label = f"field '{r['field']}'" if r["field"] else "unparsed record"
            by_field[label] = by_field.get(label, 0) + 1
        counts = ", ".join(f"{k}: {v}" for k, v in by_field.items())
        print(f"[{name}] REJECTED {len(invalid)} invalid rows ({counts}) -> {rejected_path}")
        for r in invalid[:_PRINT_REJECTED]:
            print(f"[{name}]   skipped {r['error']}")
        if len(invalid) > _PRINT_REJECTED:
            print(f"[{name}]   ... {len(invalid) - _PRINT_REJECTED} more, all in {rejected_path}")
    if not stats.rejected:
        rejected_path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    if stats.duplicates:
        print(f"[{name}] dropped {stats.duplicates} duplicate rows (same problem text; first kept)")
    if stats.conflicts:
        print(f"[{name}] WARNING: {stats.conflicts} of those duplicates had a different gold answer")
    if stats.conflict_problems:
        if keep_conflicts:
            print(
                f"[{name}] WARNING: kept the first copy of {stats.conflict_problems} problems whose "
                f"copies disagree on the gold (--keep-conflicts)"
            )
        else:
            print(
                f"[{name}] DROPPED {stats.conflict_problems} problems whose copies disagree on the gold "
                f"-> {rejected_path} (each with all its golds)"
            )
    if spec.template is not None and stats.untemplated:
        print(f"[{name}] note: {stats.untemplated} rows lacked the expected prompt template (kept as is)")
    if limit is not None and len(records) >= limit:
        print(f"[{name}] --limit {limit}: stopped after {stats.seen} source rows")
    result.rows = len(records)
    result.duplicates = stats.duplicates
    result.conflicts = stats.conflicts
    result.conflict_problems = stats.conflict_problems
    result.rejected = len(stats.rejected)
    print(f"[{name}] wrote {result.rows} rows -> {path}")
    return result


def prepare(
    names: Iterable[str] | str = "all",
    out: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    force: bool = False,
    skip_invalid: bool = False,
    progress: bool = True,
    keep_going: bool = False,
    keep_conflicts: bool = False,
    revisions: dict[str, str] | None = None,
    max_invalid: float = 0.05,
) -> list[Result]:
    """Prepare several datasets (``"all"``, a comma list or names); returns one
    :class:`Result` each. The first error is raised, or with ``keep_going`` every dataset
    is tried and one :class:`DataError` listing all failures is raised at the end."""
    names = _parse_names(names)
    out = default_out() if out is None else out
    results, errors = [], []
    for name in names:
        try:
            results.append(
                prepare_dataset(
                    name,
                    out,
                    source_dir=source_dir,
                    limit=limit,
                    force=force,
                    skip_invalid=skip_invalid,
                    progress=progress,
                    keep_conflicts=keep_conflicts,
                    revision=(revisions or {}).get(name),
                    max_invalid=max_invalid,
                )
            )
        except DataError as e:
            if not keep_going:
                raise
            print(f"[{name}] FAILED: {e}", file=sys.stderr)
            errors.append(str(e))
    _print_summary(results)
    if errors:
        raise DataError(f"{len(errors)} of {len(names)} datasets failed:\n" + "\n".join(errors))
    return results


def _parse_names(names: Iterable[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [n for n in (s.strip() for s in names.split(",")) if n]
    names = list(names)
    if not names or names == ["all"]:
        return list(DATASETS)
    for n in names:
        _spec(n)
    return list(dict.fromkeys(names))


def default_out() -> Path:
    return Path(os.environ.get("ENTROPY_RL_DATA") or "~/data/entropy_rl").expanduser()


def _print_summary(results: list[Result]) -> None:
    if not results:
        return
    print("\nprepared:")
    width = max(len(r.name) for r in results)
    for r in results:
        if r.skipped:
            note = "existing, not rebuilt"
        else:
            notes = [f"{r.rows} rows"]
            if r.duplicates:
                notes.append(f"{r.duplicates} duplicates dropped")
            if r.conflict_problems:
                notes.append(f"{r.conflict_problems} problems with conflicting golds")
            if r.revision:
                notes.append(f"revision {r.revision}")
            if r.rejected:
                notes.append(f"{r.rejected} rejected -> {r.rejected_path}")
            note = ", ".join(notes)
        print(f"  {r.name:<{width}}  {r.path}  ({note})")


def _print_table() -> None:
    for name, s in DATASETS.items():
        cfg = f" config={s.config}" if s.config else ""
        print(f"{name}: {s.repo}{cfg} split={s.split} -> {s.out_split}.parquet")
        fields = f"problem={'|'.join(s.problem)} answer={'|'.join(s.answer)} id={'|'.join(s.source_id) or '-'}"
        fields += (f" context={'|'.join(s.context)}" if s.context else "") + (" dedupe" if s.dedupe else "")
        print(f"    {fields}")
        print(f"    checked: {s.checked}")
        print(f"    revision: {s.revision or 'not pinned (the current commit is read and recorded)'}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Write DAPO-Math-17k and the math eval sets as veRL RL parquet files.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--out", default=None, help="output root (default: $ENTROPY_RL_DATA or ~/data/entropy_rl)")
    p.add_argument("--datasets", default="all", help=f"comma list or 'all' (default); known: {','.join(DATASETS)}")
    p.add_argument(
        "--source-dir", default=None, help="read DIR/<name>.parquet|.jsonl|.json instead of the Hugging Face Hub"
    )
    p.add_argument("--limit", type=int, default=None, help="write at most N rows per dataset")
    p.add_argument("--force", action="store_true", help="rebuild outputs that already exist")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write invalid rows to <out>/<name>/rejected.jsonl instead of failing",
    )
    p.add_argument(
        "--max-invalid",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="with --skip-invalid, fail (write nothing) when more than this share of a dataset's rows is invalid",
    )
    p.add_argument(
        "--keep-conflicts",
        action="store_true",
        help="keep the first copy of a duplicated problem whose copies disagree on the gold "
        "(default: drop it and write it to rejected.jsonl)",
    )
    p.add_argument(
        "--revision",
        action="append",
        default=[],
        metavar="NAME=REV",
        help="read Hub dataset NAME at revision REV (commit sha, tag, branch); repeatable",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="print the dataset table and exit")
    args = p.parse_args(argv)
    if args.list:
        _print_table()
        return 0
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if not 0.0 <= args.max_invalid <= 1.0:
        p.error(f"--max-invalid must be a fraction in [0, 1], got {args.max_invalid}")
    revisions = {}
    for item in args.revision:
        name, sep, rev = item.partition("=")
        if not sep or not rev or name not in DATASETS:
            p.error(f"--revision {item!r}: expected NAME=REV with NAME one of {','.join(DATASETS)}")
        revisions[name] = rev
    try:
        prepare(
            args.datasets,
            args.out,
            source_dir=args.source_dir,
            limit=args.limit,
            force=args.force,
            skip_invalid=args.skip_invalid,
            progress=not args.no_progress,
            keep_going=True,
            keep_conflicts=args.keep_conflicts,
            revisions=revisions,
            max_invalid=args.max_invalid,
        )
    except DataError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
