"""launch/prepare_data.py: source files shaped like each Hub dataset -> veRL parquet.

Checks the exact schema, stable indices, DAPO de-duplication, gold unwrapping, errors
that name dataset/row/field, --skip-invalid, atomic skip/force, the Hub code path (with
``datasets.load_dataset`` faked) and that every written gold scores 1.0 when boxed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from entropy_rl.reward import compute_score
from launch import prepare_data as pdata
from launch.prepare_data import DAPO_PREFIX, DAPO_SUFFIX, INSTRUCTION, DataError, prepare

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ source fixtures
# Columns mimic the Hub datasets named in DATASETS (see its `checked` notes).

DAPO_PROBLEMS = [
    ("Find $x$ if $2x = 10$.", "5"),
    ("Let $a, b$ be reals with $a+b=3$. Find the maximum of $ab$ times 4.", "9"),
    ("How many primes are below 20?", "8"),
    ("Compute $\\frac{1}{2}+\\frac{1}{3}$; give $m+n$ for $m/n$ in lowest terms.", "11"),
]


def dapo_rows(conflict: bool = False) -> list[dict]:
    """Each problem repeated (as on the Hub), interleaved; with ``conflict``, plus one copy
    of problem 0 with another gold."""
    rows = []
    for copy in range(3):
        for j, (q, a) in enumerate(DAPO_PROBLEMS):
            rows.append(
                {
                    "data_source": "math_dapo",
                    "prompt": [{"content": DAPO_PREFIX + q + DAPO_SUFFIX, "role": "user"}],
                    "ability": "MATH",
                    "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
                    "extra_info": {"index": f"uuid-{j}-{copy}"},
                }
            )
    if conflict:
        extra = json.loads(json.dumps(rows[0]))
        extra["reward_model"]["ground_truth"] = "6"  # same problem, different gold
        rows.append(extra)
    return rows


AIME24 = [
    {
        "id": 60 + i,
        "problem": f"AIME 2024 problem {i}: find N.",
        "solution": "...",
        "answer": a,
        "url": f"https://aops/{i}",
        "year": "2024",
    }
    for i, a in enumerate(["204", "025", "113", "104"])
]
AIME25 = [{"problem": f"AIME 2025 problem {i}?", "answer": a, "id": str(i)} for i, a in enumerate(["70", "588", "16"])]
AMC23 = [
    {"id": 0, "question": "AMC question zero?", "answer": 27.0, "url": "u0"},
    {"id": 1, "question": "AMC question one?", "answer": 3.5, "url": "u1"},
    {"id": 2, "question": "AMC question two?", "answer": 36.0, "url": "u2"},
]
MATH500 = [
    {
        "problem": "Convert $(0,3)$ to polar coordinates.",
        "solution": "s",
        "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
        "subject": "Precalculus",
        "level": 2,
        "unique_id": "test/precalculus/807.json",
    },
    {
        "problem": "What is $\\sqrt{25}$?",
        "solution": "s",
        "answer": "\\boxed{5}",
        "subject": "Algebra",
        "level": 1,
        "unique_id": "test/algebra/1.json",
    },
    {
        "problem": "Simplify $\\frac{28}{6}$.",
        "solution": "s",
        "answer": "\\dfrac{14}{3}",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/2.json",
    },
    {
        "problem": "Which day?",
        "solution": "s",
        "answer": "\\text{Monday}",
        "subject": "Counting",
        "level": 3,
        "unique_id": "test/counting/3.json",
    },
]
OLYMPIAD = [
    {
        "id": 2278,
        "question": "Find the probability.",
        "context": None,
        "final_answer": ["$\\frac{1}{2}$"],
        "is_multiple_answer": False,
        "unit": None,
        "answer_type": "Numerical",
        "subfield": "Combinatorics",
    },
    {
        "id": 2279,
        "question": "Find all $n$ with the property.",
        "context": "Let $P$ be a polygon.",
        "final_answer": ["$2$", "$3$"],
        "is_multiple_answer": True,
        "unit": None,
        "answer_type": "Numerical",
        "subfield": "Number Theory",
    },
    {
        "id": 2280,
        "question": "Solve for $x$.",
        "context": "",
        "final_answer": ["$x=4$"],
        "is_multiple_answer": False,
        "unit": None,
        "answer_type": "Expression",
        "subfield": "Algebra",
    },
]
MINERVA = [
    {"question": "Compute the wavelength in nm.", "answer": "4.5e-6"},
    {"question": "Find the speed in m/s.", "answer": "3 \\times 10^{8}"},
]


def write_parquet(path: Path, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    write_parquet(d / "dapo_math_17k.parquet", dapo_rows())
    write_parquet(d / "aime24.parquet", AIME24)
    write_jsonl(d / "aime25.jsonl", AIME25)
    write_parquet(d / "amc23.parquet", AMC23)
    write_jsonl(d / "math500.jsonl", MATH500)
    write_parquet(d / "olympiadbench.parquet", OLYMPIAD)
    (d / "minerva.json").write_text(json.dumps(MINERVA))  # a JSON list
    return d


def run(src: Path, out: Path, names="all", **kw):
    return prepare(names, out, source_dir=src, progress=False, **kw)


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


EXPECTED_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string()), ("source_id", pa.string())])),
    ]
)

# ------------------------------------------------------------------ tests


def test_table_matches_config_paths():
    # conf/entropy_rl.yaml reads dapo_math_17k/train.parquet, math500/test.parquet, aime24/test.parquet
    assert set(pdata.DATASETS) == {"dapo_math_17k", "aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva"}
    assert pdata.output_path("dapo_math_17k", "/d") == Path("/d/dapo_math_17k/train.parquet")
    assert pdata.output_path("math500", "/d") == Path("/d/math500/test.parquet")
    assert pdata.output_path("aime24", "/d") == Path("/d/aime24/test.parquet")
    for name, spec in pdata.DATASETS.items():
        assert spec.out_split == ("train" if name == "dapo_math_17k" else "test")
        assert spec.repo.count("/") == 1 and spec.split and spec.problem and spec.answer and spec.checked
    conf = (REPO / "conf" / "entropy_rl.yaml").read_text()
    for rel in ("dapo_math_17k/train.parquet", "math500/test.parquet", "aime24/test.parquet"):
        assert rel in conf


def test_all_datasets_schema_and_rows(src, tmp_path):
    out = tmp_path / "out"
    results = run(src, out)
    counts = {r.name: r.rows for r in results}
    assert counts == {
        "dapo_math_17k": 4,
        "aime24": 4,
        "aime25": 3,
        "amc23": 3,
        "math500": 4,
        "olympiadbench": 3,
        "minerva": 2,
    }
    sources = {
        "aime24": AIME24,
        "aime25": AIME25,
        "amc23": AMC23,
        "math500": MATH500,
        "olympiadbench": OLYMPIAD,
        "minerva": MINERVA,
    }
    for r in results:
        assert pq.read_schema(r.path).remove_metadata() == EXPECTED_SCHEMA, r.name
        rows = read(r.path)
        split = "train" if r.name == "dapo_math_17k" else "test"
        assert r.path == out / r.name / f"{split}.parquet"
        assert [x["extra_info"]["index"] for x in rows] == list(range(len(rows)))
        for x in rows:
            assert x["data_source"] == r.name and x["ability"] == "math"
            assert x["extra_info"]["split"] == split
            assert x["reward_model"]["style"] == "rule"
            gt = x["reward_model"]["ground_truth"]
            assert isinstance(gt, str) and gt.strip() == gt and gt
            assert len(x["prompt"]) == 1 and x["prompt"][0]["role"] == "user"
            content = x["prompt"][0]["content"]
            assert content.endswith("\n\n" + INSTRUCTION) and len(content) > len(INSTRUCTION) + 5
        if r.name in sources:  # eval sets: order, problems and ids kept 1:1
            src_rows = sources[r.name]
            key = "problem" if "problem" in src_rows[0] else "question"
            for x, s in zip(rows, src_rows, strict=True):
                assert s[key] in x["prompt"][0]["content"]
                sid = s.get("unique_id", s.get("id"))
                assert x["extra_info"]["source_id"] == (None if sid is None else str(sid))
    assert read(out / "aime24" / "test.parquet")[0]["prompt"][0]["content"] == (
        "AIME 2024 problem 0: find N.\n\n" + INSTRUCTION
    )
    oly = read(out / "olympiadbench" / "test.parquet")
    assert oly[1]["prompt"][0]["content"].startswith("Let $P$ be a polygon.\n\nFind all $n$")
    assert oly[2]["prompt"][0]["content"].startswith("Solve for $x$.")  # empty context: nothing added


def test_gold_normalization(src, tmp_path):
    out = tmp_path / "out"
    run(src, out, "math500,amc23,olympiadbench,aime24")
    gt = lambda name: [x["reward_model"]["ground_truth"] for x in read(out / name / "test.parquet")]  # noqa: E731
    assert gt("math500") == ["\\left( 3, \\frac{\\pi}{2} \\right)", "5", "\\dfrac{14}{3}", "\\text{Monday}"]
    assert gt("amc23") == ["27", "3.5", "36"]
    assert gt("olympiadbench") == ["\\frac{1}{2}", "2, 3", "x=4"]
    assert gt("aime24") == ["204", "025", "113", "104"]  # strings are kept verbatim
    g = pdata.normalize_gold
    assert g("  \\boxed{\\frac{3}{4}} ") == "\\frac{3}{4}"
    assert g("$\\boxed{1}\\boxed{2}$") == "1, 2"  # several boxes: one multi-valued gold
    assert g("$$7$$") == "7" and g("$a$ or $b$") == "a or b"
    # OlympiadBench keeps math delimiters inside its golds: the gold is the answer without them
    assert g("$69$,$84$") == "69, 84" and g(["$69$,$84$"]) == "69, 84"
    assert g("$x=1$, $y=2$") == "x=1, y=2" and g("\\$5") == "\\$5"  # an escaped dollar is a dollar sign
    assert g(12) == "12" and g(2.0) == "2" and g(["$1$", 2]) == "1, 2"
    for bad in ("", "   ", "\\boxed{}", "\\boxed{1", float("nan"), [], None, "{", True):
        with pytest.raises(pdata._RowError):
            g(bad)


@pytest.fixture
def conflict_src(tmp_path: Path) -> Path:
    d = tmp_path / "src_conflict"
    d.mkdir()
    write_parquet(d / "dapo_math_17k.parquet", dapo_rows(conflict=True))
    return d


def test_dapo_dedupe_template_and_conflicts(conflict_src, tmp_path, capsys):
    out = tmp_path / "out"
    (r,) = run(conflict_src, out, "dapo_math_17k")
    rows = read(out / "dapo_math_17k" / "train.parquet")
    # problem 0 has a copy with another gold: it cannot be trusted, so it is dropped whole
    assert (r.rows, r.duplicates, r.conflicts, r.conflict_problems) == (3, 9, 1, 1)
    assert [x["prompt"][0]["content"] for x in rows] == [q + "\n\n" + INSTRUCTION for q, _ in DAPO_PROBLEMS[1:]]
    assert [x["reward_model"]["ground_truth"] for x in rows] == [a for _, a in DAPO_PROBLEMS[1:]]
    assert [x["extra_info"]["source_id"] for x in rows] == [f"uuid-{j}-0" for j in range(1, 4)]
    assert [x["extra_info"]["index"] for x in rows] == [0, 1, 2]
    printed = capsys.readouterr().out
    assert "dropped 9 duplicate rows" in printed and "1 of those duplicates had a different gold" in printed
    assert "DROPPED 1 problems whose copies disagree on the gold" in printed
    (rej,) = [json.loads(line) for line in (out / "dapo_math_17k" / "rejected.jsonl").read_text().splitlines()]
    assert rej["kind"] == "conflict" and rej["golds"] == ["5", "6"] and rej["row"] == 0
    assert rej["rows"] == {"5": [0, 4, 8], "6": [12]} and rej["problem"] == DAPO_PROBLEMS[0][0]
    meta = pdata.read_metadata(out / "dapo_math_17k" / "train.parquet")
    assert meta["conflicting_problems"] == 1 and meta["conflicts_dropped"] is True and meta["rows"] == 3


def test_dapo_keep_conflicts_and_equal_golds(conflict_src, tmp_path, capsys):
    out = tmp_path / "out"
    (r,) = run(conflict_src, out, "dapo_math_17k", keep_conflicts=True)
    rows = read(out / "dapo_math_17k" / "train.parquet")
    assert (r.rows, r.conflict_problems) == (4, 1)
    assert [x["reward_model"]["ground_truth"] for x in rows] == [a for _, a in DAPO_PROBLEMS]  # first copy kept
    assert not (out / "dapo_math_17k" / "rejected.jsonl").exists()
    assert "kept the first copy of 1 problems" in capsys.readouterr().out
    # golds that are the same answer in another notation are not a conflict
    base = dapo_rows()[:4]
    same = json.loads(json.dumps(base[1]))
    same["reward_model"]["ground_truth"] = "9.0"
    stats = pdata.ConvertStats()
    recs = pdata.convert_rows("dapo_math_17k", base + [same], stats=stats)
    assert len(recs) == 4 and stats.conflict_problems == 0 and stats.duplicates == 1


def test_stable_indices_and_identical_files(src, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run(src, a)
    run(src, b)
    for f in sorted(a.rglob("*.parquet")):
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f
    run(src, c, "dapo_math_17k,math500", limit=2)  # --limit writes a prefix: same indices, same rows
    for name, split in (("dapo_math_17k", "train"), ("math500", "test")):
        assert read(c / name / f"{split}.parquet") == read(a / name / f"{split}.parquet")[:2]


def test_error_names_dataset_row_field(src, tmp_path):
    rows = [dict(r) for r in AIME24]
    rows[2]["problem"] = "   "
    write_parquet(src / "aime24.parquet", rows)
    with pytest.raises(DataError, match=r"^aime24 \(.*aime24\.parquet\) row 2: field 'problem' is empty$"):
        run(src, tmp_path / "out", "aime24")
    assert not (tmp_path / "out" / "aime24" / "test.parquet").exists()

    bad = [dict(r) for r in MATH500]
    bad[3]["answer"] = ""
    write_jsonl(src / "math500.jsonl", bad)
    with pytest.raises(DataError, match=r"math500 \(.*math500\.jsonl\) row 3: field 'answer' is empty"):
        run(src, tmp_path / "out", "math500")
    bad[3]["answer"] = "\\frac{1}{2"  # unbalanced: a boxed copy would not read back
    write_jsonl(src / "math500.jsonl", bad)
    with pytest.raises(DataError, match=r"row 3: field 'answer' cannot be boxed"):
        run(src, tmp_path / "out", "math500")


def test_error_missing_column(src, tmp_path):
    write_parquet(src / "aime24.parquet", [{k: v for k, v in r.items() if k != "answer"} for r in AIME24])
    with pytest.raises(DataError, match=r"aime24 \(.*aime24\.parquet\) row 0: field 'answer' is missing") as e:
        run(src, tmp_path / "out", "aime24", skip_invalid=True)  # a mapping error: fatal even here
    assert "problem" in str(e.value) and "DATASETS['aime24']" in str(e.value)
    rows = [dict(r) for r in AIME25]
    del rows[1]["problem"]  # JSON lines: one row lacks the field
    write_jsonl(src / "aime25.jsonl", rows)
    with pytest.raises(DataError, match=r"aime25 \(.*aime25\.jsonl\) row 1: field 'problem' is missing"):
        run(src, tmp_path / "out", "aime25")
    (src / "aime25.jsonl").write_text(json.dumps(AIME25[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"aime25 \(.*\) row 1: is not valid JSON"):
        run(src, tmp_path / "out", "aime25")


def test_skip_invalid_writes_rejected(src, tmp_path, capsys):
    rows = [dict(r) for r in MATH500]
    rows[0]["problem"] = ""
    rows[2]["answer"] = None
    write_jsonl(src / "math500.jsonl", rows)
    with open(src / "math500.jsonl", "a") as f:
        f.write("{broken\n")
    out = tmp_path / "out"
    (r,) = run(src, out, "math500", skip_invalid=True, max_invalid=1.0)  # 3 of 5: allowed explicitly
    written = read(out / "math500" / "test.parquet")
    assert r.rows == 2 and r.rejected == 3
    assert [x["reward_model"]["ground_truth"] for x in written] == ["5", "\\text{Monday}"]
    assert [x["extra_info"]["index"] for x in written] == [0, 1]
    rej = [json.loads(line) for line in (out / "math500" / "rejected.jsonl").read_text().splitlines()]
    assert [(x["row"], x["field"]) for x in rej] == [(0, "problem"), (2, "answer"), (4, None)]
    assert "is empty" in rej[0]["reason"] and "missing" in rej[1]["reason"] and "JSON" in rej[2]["reason"]
    assert rej[0]["record"]["unique_id"] == "test/precalculus/807.json"
    assert "REJECTED 3 invalid rows" in capsys.readouterr().out
    # a clean rebuild removes the stale list
    write_jsonl(src / "math500.jsonl", MATH500)
    run(src, out, "math500", force=True)
    assert not (out / "math500" / "rejected.jsonl").exists()
    # nothing valid at all is an error, not an empty file
    write_jsonl(src / "math500.jsonl", [dict(MATH500[0], answer="")])
    with pytest.raises(DataError, match="no rows to write"):
        run(src, out, "math500", skip_invalid=True, force=True, max_invalid=1.0)


def test_skip_invalid_refuses_a_mostly_invalid_source(src, tmp_path):
    """4 of 5 rows bad is the wrong file, not a few bad rows: nothing is written."""
    rows = [dict(MATH500[1], problem=f"What is {i} + 1?", answer=str(i + 1), unique_id=f"t/{i}.json") for i in range(5)]
    for r in rows[1:]:
        r["answer"] = ""
    write_jsonl(src / "math500.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(
        DataError,
        match=r"math500 \(.*\): 4 of 5 rows are invalid \(80%, above --max-invalid 5%\); "
        r"nothing written\. First: .*--max-invalid",
    ):
        run(src, out, "math500", skip_invalid=True)
    assert not (out / "math500" / "test.parquet").exists()
    (r,) = run(src, out, "math500", skip_invalid=True, max_invalid=0.8)
    assert r.rows == 1


def test_skip_existing_force_and_atomic(src, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    run(src, out, "aime24")
    path = out / "aime24" / "test.parquet"
    before = path.read_bytes()
    write_parquet(src / "aime24.parquet", AIME24[:2])
    (r,) = run(src, out, "aime24")
    assert r.skipped and path.read_bytes() == before and "exists, skipped" in capsys.readouterr().out
    (r,) = run(src, out, "aime24", force=True)
    assert r.rows == 2 and len(read(path)) == 2

    def boom(table, where, **k):  # a crash halfway through the write
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pdata.pq, "write_table", boom)
    with pytest.raises(OSError):
        run(src, out, "aime24", force=True)
    assert len(read(path)) == 2 and [p.name for p in path.parent.iterdir()] == ["test.parquet"]


def test_every_gold_scores_one_when_boxed(src, tmp_path):
    out = tmp_path / "out"
    run(src, out)
    n = 0
    for f in sorted(out.rglob("*.parquet")):
        for x in read(f):
            gt = x["reward_model"]["ground_truth"]
            sol = f"Some reasoning. The answer is $\\boxed{{{gt}}}$."
            assert compute_score(x["data_source"], sol, gt, x["extra_info"])["score"] == 1.0, (f, gt)
            n += 1
    assert n == 23
    assert compute_score("aime24", "\\boxed{205}", "204")["score"] == 0.0  # the check can fail


def test_verl_rlhf_dataset_reads_outputs(src, tmp_path):
    """veRL's own RLHFDataset (tiny local tokenizer) loads the files; several val_files
    are concatenated, which needs one schema across them."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from tests.tiny import make_tokenizer

    out = tmp_path / "out"
    run(src, out)
    cfg = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 1024,
            "filter_overlong_prompts": True,
            "truncation": "error",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    val_files = sorted(str(p) for p in out.rglob("test.parquet"))
    val = RLHFDataset(data_files=val_files, tokenizer=make_tokenizer(), config=cfg)
    assert len(val) == 19
    item = val[len(val) - 1]
    assert item["raw_prompt"][0]["content"].endswith(INSTRUCTION) and isinstance(item["index"], int)
    train = RLHFDataset(
        data_files=[str(out / "dapo_math_17k" / "train.parquet")], tokenizer=make_tokenizer(), config=cfg
    )
    assert [train[i]["index"] for i in range(len(train))] == [0, 1, 2, 3]
    assert train[1]["reward_model"]["ground_truth"] == "9"


def test_hub_path_uses_table(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(repo, config=None, *, split, revision=None):
        calls.append((repo, config, split))
        revs.append(revision)
        data = {
            "Hothan/OlympiadBench": OLYMPIAD,
            "HuggingFaceH4/MATH-500": MATH500,
            "BytedTsinghua-SIA/DAPO-Math-17k": dapo_rows(),
        }[repo]
        return datasets.Dataset.from_list(data)

    revs = []
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    # the Hub says which commit a revision is now; the load reads that commit
    monkeypatch.setattr(pdata, "_resolve_revision", lambda repo, rev: (rev or "main") + "-sha-" + repo[:3])
    res = prepare("olympiadbench,math500,dapo_math_17k", tmp_path / "out", progress=False, revisions={"math500": "v1"})
    assert calls == [
        ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
        ("HuggingFaceH4/MATH-500", None, "test"),
        ("BytedTsinghua-SIA/DAPO-Math-17k", None, "train"),
    ]
    assert [r.rows for r in res] == [3, 4, 4] and res[0].source.startswith("hub:Hothan/OlympiadBench")
    assert res[2].duplicates == 8
    assert read(tmp_path / "out" / "olympiadbench" / "test.parquet")[1]["reward_model"]["ground_truth"] == "2, 3"
    # olympiadbench is not pinned (current commit), --revision overrides math500's pin, and
    # dapo_math_17k reads the commit its spec pins
    dapo_pin = pdata.DATASETS["dapo_math_17k"].revision
    assert dapo_pin and len(dapo_pin) == 40
    assert revs == ["main-sha-Hot", "v1-sha-Hug", f"{dapo_pin}-sha-Byt"]
    meta = pdata.read_metadata(tmp_path / "out" / "math500" / "test.parquet")
    assert (meta["revision_requested"], meta["revision"]) == ("v1", "v1-sha-Hug")
    assert meta["source"] == "hub:HuggingFaceH4/MATH-500[test]" and meta["rows"] == 4
    meta = pdata.read_metadata(tmp_path / "out" / "dapo_math_17k" / "train.parquet")
    assert (meta["revision_requested"], meta["revision"]) == (dapo_pin, f"{dapo_pin}-sha-Byt")
    assert pdata.read_metadata(tmp_path / "out" / "olympiadbench" / "test.parquet")["revision_requested"] is None

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"(?s)aime24: could not load hub:HuggingFaceH4/aime_2024\[train\].*--source-dir"
    ):
        prepare("aime24", tmp_path / "out2", progress=False)


def test_unknown_and_ambiguous_sources(src, tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'gsm8k'"):
        run(src, tmp_path / "out", "aime24,gsm8k")
    write_jsonl(src / "aime24.jsonl", AIME24)
    with pytest.raises(DataError, match="several source files"):
        run(src, tmp_path / "out", "aime24")
    with pytest.raises(DataError, match="no source file"):
        run(tmp_path, tmp_path / "out", "aime24")


def test_cli_script_and_module(src, tmp_path):
    out = tmp_path / "out"
    common = ["--source-dir", str(src), "--out", str(out), "--no-progress"]
    script = subprocess.run(
        [sys.executable, str(REPO / "launch" / "prepare_data.py"), "--datasets", "aime24,minerva", *common],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0, script.stderr
    assert f"{out / 'aime24' / 'test.parquet'}  (4 rows)" in script.stdout
    assert f"{out / 'minerva' / 'test.parquet'}  (2 rows)" in script.stdout
    (src / "amc23.parquet").unlink()
    mod = subprocess.run(
        [sys.executable, "-m", "launch.prepare_data", "--datasets", "aime24,amc23,aime25", *common],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mod.returncode == 1  # amc23 has no source: reported, the others still done
    assert "exists, skipped" in mod.stdout and (out / "aime25" / "test.parquet").exists()
    assert "1 of 3 datasets failed" in mod.stderr and "amc23: no source file" in mod.stderr


def test_main_in_process(src, tmp_path, capsys):
    assert pdata.main(["--list"]) == 0
    assert "BytedTsinghua-SIA/DAPO-Math-17k" in capsys.readouterr().out
    out = tmp_path / "out"
    rc = pdata.main(
        ["--source-dir", str(src), "--out", str(out), "--datasets", "dapo_math_17k", "--limit", "3", "--no-progress"]
    )
    assert rc == 0 and len(read(out / "dapo_math_17k" / "train.parquet")) == 3
    assert "--limit 3" in capsys.readouterr().out


# ------------------------------------------------------------------ bad values, named
def test_bad_value_types_are_named(src, tmp_path):
    """Numbers in a gold are normalised to strings; NaN / inf / dict / bool / None are refused,
    each error naming dataset, file, row and field."""
    amc = [dict(r) for r in AMC23]
    amc[1]["answer"] = float("nan")  # a float column with a hole, as parquet gives it
    write_parquet(src / "amc23.parquet", amc)
    with pytest.raises(
        DataError, match=r"^amc23 \(.*amc23\.parquet\) row 1: field 'answer' is not a finite number \(nan\)$"
    ):
        run(src, tmp_path / "out", "amc23")
    cases = [  # (row edit, expected message tail)
        ({"answer": {"value": 5}}, "field 'answer' must be a string, number or list of them, got dict"),
        ({"answer": float("inf")}, "field 'answer' is not a finite number (inf)"),
        ({"answer": False}, "field 'answer' must be a string or number, got bool False"),
        ({"answer": ["1", None]}, "field 'answer' item 1 is missing (null)"),
        ({"problem": 17}, "field 'problem' must be a string, got int"),
        ({"problem": None}, "field 'problem' is missing (null)"),
    ]
    for edit, tail in cases:
        rows = [dict(r) for r in MATH500]
        rows[2].update(edit)
        (src / "math500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # inf -> Infinity
        with pytest.raises(DataError) as e:
            run(src, tmp_path / "out", "math500")
        assert str(e.value) == f"math500 ({src / 'math500.jsonl'}) row 2: {tail}", edit
    rows = [dict(r) for r in MATH500]
    rows[1]["answer"] = 12
    rows[3]["answer"] = 0.25
    write_jsonl(src / "math500.jsonl", rows)
    run(src, tmp_path / "num", "math500")
    gts = [x["reward_model"]["ground_truth"] for x in read(tmp_path / "num" / "math500" / "test.parquet")]
    assert gts[1] == "12" and gts[3] == "0.25" and all(isinstance(g, str) for g in gts)


def test_skip_invalid_reports_every_skipped_row(src, tmp_path, capsys):
    rows = [dict(r) for r in MATH500 + MATH500]  # 8 rows
    bad = {1: ("answer", {"a": 1}), 4: ("problem", ""), 6: ("answer", float("nan"))}
    for i, (f, v) in bad.items():
        rows[i][f] = v
    write_jsonl(src / "math500.jsonl", rows)  # JSON lines hold a dict / NaN where parquet could not
    out = tmp_path / "out"
    (r,) = run(src, out, "math500", skip_invalid=True, max_invalid=0.5)
    assert (r.rows, r.rejected) == (5, 3)
    printed = capsys.readouterr().out
    origin = str(src / "math500.jsonl")
    assert "REJECTED 3 invalid rows (field 'answer': 2, field 'problem': 1)" in printed
    rej = [json.loads(line) for line in (out / "math500" / "rejected.jsonl").read_text().splitlines()]
    assert [(x["dataset"], x["file"], x["row"], x["field"]) for x in rej] == [
        ("math500", origin, 1, "answer"),
        ("math500", origin, 4, "problem"),
        ("math500", origin, 6, "answer"),
    ]
    assert [x["reason"] for x in rej] == [
        "field 'answer' must be a string, number or list of them, got dict",
        "field 'problem' is empty",
        "field 'answer' is not a finite number (nan)",
    ]
    for x in rej:  # every skipped row is printed with its file, row, field and reason
        assert f"skipped math500 ({origin}) row {x['row']}: {x['reason']}" in printed
    written = read(out / "math500" / "test.parquet")
    assert [x["extra_info"]["index"] for x in written] == list(range(5))  # indices stay dense and unique


# ------------------------------------------------------------------ training side: rows and score cache
def _loader(tmp_path, train_files, model="model-a"):
    """An EntropyRLTrainer with only what its data path reads (no Ray, no workers)."""
    from omegaconf import OmegaConf

    from recipe.sent.ray_trainer import EntropyRLTrainer

    cfg = OmegaConf.create(
        {
            "data": {"train_files": train_files},
            "actor_rollout_ref": {"model": {"path": model}},
            "entropy_rl": {
                "scoring": {
                    "enable": False,
                    "n_samples": 4,
                    "temperature": 1.0,
                    "top_p": 1.0,
                    "max_response_length": 64,
                    "seed": 1,
                    "cache_dir": str(tmp_path / "cache"),
                }
            },
        }
    )
    trainer = object.__new__(EntropyRLTrainer)
    trainer.config, trainer.entropy_rl = cfg, cfg.entropy_rl
    return trainer


def _score_table(indices, se=None):
    import pandas as pd

    n = len(indices)
    se = [0.1 * i for i in range(n)] if se is None else se
    return pd.DataFrame(
        {
            "row": range(n),
            "index": indices,
            "semantic_entropy": se,
            "pass_rate": [0.5] * n,
            "n_classes": [2.0] * n,
            "no_answer_frac": [0.0] * n,
        }
    )


def test_training_rows_checked_with_file_row_field(src, tmp_path):
    from recipe.sent.scoring import check_rows

    out = tmp_path / "out"
    run(src, out, "dapo_math_17k,math500")
    good = read(out / "dapo_math_17k" / "train.parquet")
    assert check_rows(good) == {0: 0, 1: 1, 2: 2, 3: 3}
    ok = [
        dict(good[0], reward_model={"style": "rule", "ground_truth": g}, extra_info={"index": i})
        for i, g in enumerate([5, 2.5, ["1", 2], "x"])
    ]  # numbers: gold_answers reads them
    assert list(check_rows(ok)) == [0, 1, 2, 3]
    bad_cases = [
        ({"prompt": None}, "field 'prompt' is missing"),
        ({"prompt": []}, "field 'prompt' is an empty list of messages"),
        ({"prompt": [{"role": "user", "content": "  "}]}, "field 'prompt' has only empty messages"),
        ({"prompt": [{"role": "user", "content": 3}]}, "field 'prompt' message 0 has no string 'content'"),
        ({"prompt": {"text": "hi"}}, "field 'prompt' must be a string or a list of chat messages, got dict"),
        ({"reward_model": {"style": "rule"}}, "field 'reward_model.ground_truth' is missing"),
        ({"reward_model": None}, "field 'reward_model.ground_truth' is missing"),
        ({"reward_model": {"ground_truth": " "}}, "field 'reward_model.ground_truth' is empty"),
        (
            {"reward_model": {"ground_truth": float("nan")}},
            "field 'reward_model.ground_truth' is not a finite number (nan)",
        ),
        (
            {"reward_model": {"ground_truth": {"v": 1}}},
            "field 'reward_model.ground_truth' must be a string, number or list of them, got dict",
        ),
        (
            {"reward_model": {"ground_truth": True}},
            "field 'reward_model.ground_truth' must be a string or number, got bool",
        ),
        ({"reward_model": {"ground_truth": ["1", None]}}, "field 'reward_model.ground_truth' item 1 is missing"),
        ({"extra_info": {}}, "field 'extra_info.index' is missing"),
        ({"extra_info": {"index": 0.5}}, "field 'extra_info.index' must be an int or string, got float"),
        ({"extra_info": {"index": 0}}, "field 'extra_info.index' = 0 repeats f.parquet row 0"),
    ]
    for edit, msg in bad_cases:
        rows = [dict(r) for r in good]
        rows[2] = dict(good[2], **edit)
        with pytest.raises(ValueError) as e:
            check_rows(rows, lambda r: f"f.parquet row {r}")
        assert f"f.parquet row 2: {msg}" in str(e.value), (edit, str(e.value))
        assert str(e.value).startswith("1 bad training row field(s):")

    # through the trainer's loading path: the file and the row in it are named, across files
    rows = [dict(r) for r in read(out / "math500" / "test.parquet")]
    rows[1]["prompt"] = [{"role": "user", "content": ""}]
    rows[3]["reward_model"] = {"style": "rule", "ground_truth": None}
    rows[2]["extra_info"] = dict(rows[2]["extra_info"], index=100)  # repeats a row of the first file
    second = tmp_path / "second.parquet"
    pq.write_table(pa.Table.from_pylist(rows), second)
    first = tmp_path / "first.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [dict(r, extra_info=dict(r["extra_info"], index=100 + r["extra_info"]["index"])) for r in good]
        ),
        first,
    )
    trainer = _loader(tmp_path, [str(first), str(second)])
    loaded = read(first) + read(second)
    with pytest.raises(ValueError) as e:
        trainer.semantic_entropy_table(loaded)
    assert str(e.value).splitlines()[1:] == [
        f"  {second} row 1: field 'prompt' has only empty messages",
        f"  {second} row 2: field 'extra_info.index' = 100 repeats {first} row 0",
        f"  {second} row 3: field 'reward_model.ground_truth' is missing (null)",
    ]
    # rows veRL filtered out (e.g. overlong prompts): the dataset position is named instead
    assert "row 1 after veRL's filtering" in trainer.train_row_names(3)(1)


def test_score_cache_refused_unless_it_matches(src, tmp_path):
    import pandas as pd

    from recipe.sent import scoring

    out = tmp_path / "out"
    run(src, out, "dapo_math_17k")
    path = str(out / "dapo_math_17k" / "train.parquet")
    rows = read(path)
    trainer = _loader(tmp_path, path, model="model-a")
    cache = trainer.score_cache(rows)
    with pytest.raises(FileNotFoundError, match="no cache at"):  # no cache, scoring off: nothing applied
        trainer.semantic_entropy_table(rows)
    cache.save(_score_table([0, 1, 2, 3]))
    table = trainer.semantic_entropy_table(rows)
    assert table["semantic_entropy"].tolist() == [0.0, 0.1, 0.2, 0.30000000000000004]

    # a cache for another model or other prompts has another name, so it is not found ...
    other_model = _loader(tmp_path, path, model="model-b")
    assert other_model.score_cache(rows).path != cache.path
    edited = [dict(r) for r in rows]
    edited[2] = dict(edited[2], prompt=[{"role": "user", "content": "another problem"}])
    assert trainer.score_cache(edited).path != cache.path
    # ... and copied / renamed onto this run's name it is refused, naming what differs
    other_model.score_cache(rows).save(_score_table([0, 1, 2, 3]))
    os.replace(other_model.score_cache(rows).path, cache.path)
    with pytest.raises(
        ValueError, match=r"it was built for key .*differing: model: cache 'model-b' vs this run 'model-a'"
    ):
        trainer.semantic_entropy_table(rows)
    trainer.score_cache(edited).save(_score_table([0, 1, 2, 3]))
    os.replace(trainer.score_cache(edited).path, cache.path)
    with pytest.raises(
        ValueError, match=r"differing: data: cache '[0-9a-f]{24}-4' vs this run '[0-9a-f]{24}-4'.*not applied"
    ):
        trainer.semantic_entropy_table(rows)
    t = _loader(tmp_path, path)
    t.entropy_rl.scoring.temperature = 0.6
    t.score_cache(rows).save(_score_table([0, 1, 2, 3]))
    os.replace(t.score_cache(rows).path, cache.path)
    with pytest.raises(ValueError, match=r"differing: T: cache 0.6 vs this run 1.0"):
        trainer.semantic_entropy_table(rows)

    # right name and record, wrong content: rows, indices, values
    bad_tables = [
        (_score_table([0, 1, 2]), r"has 3 rows \(column 'row' must be 0..3\), the dataset 4"),
        (_score_table([0, 1, 7, 3]), r"row 2: field 'index' is 7, the dataset's extra_info.index is 2"),
        (
            _score_table([0, 1, 2, 3], se=[0.1, float("nan"), 0.2, 0.3]),
            r"row 1: field 'semantic_entropy' is nan, must be finite and >= 0",
        ),
        (_score_table([0, 1, 2, 3], se=[0.1, 0.2, -0.5, 0.3]), r"row 2: field 'semantic_entropy' is -0.5"),
        (_score_table([0, 1, 2, 3], se=[0.1, 0.2, 0.3, float("inf")]), r"row 3: field 'semantic_entropy' is inf"),
        (
            _score_table([0, 1, 2, 3]).assign(pass_rate=[0.5, 1.5, 0, 0]),
            r"row 1: field 'pass_rate' is 1.5, must be in \[0, 1\]",
        ),
    ]
    for table, msg in bad_tables:
        cache.save(table)
        with pytest.raises(ValueError, match=f"score cache {re.escape(cache.path)}: {msg}.*; it is not applied"):
            trainer.semantic_entropy_table(rows)
    # a parquet without the key record (hand-made) is not trusted
    _score_table([0, 1, 2, 3]).to_parquet(cache.path, index=False)
    with pytest.raises(ValueError, match="no key record"):
        trainer.semantic_entropy_table(rows)
    with open(cache.path, "r+b") as f:  # half a file
        f.truncate(100)
    with pytest.raises(ValueError, match="unreadable"):
        trainer.semantic_entropy_table(rows)
    with pytest.raises(ValueError, match="needs the cache spec"):
        scoring.ScoreCache(str(tmp_path), "k").save(pd.DataFrame())
