"""Pictures of runs, side by side: ``python -m entropy_rl.report RUN [RUN ...] --out report/``.

Reads what a run writes — veRL's ``file`` logger (one JSON line per step:
``{"step": s, "data": {metric: value}}``; our presets enable it beside console/wandb) and,
where present, the JSON of ``python -m recipe.sent.evaluate`` — and draws the figures the
papers argue with, every run on the same axes, labelled by its experiment name (the
preset) or by ``--labels``:

1. ``entropy.png``     token entropy vs step (the collapse picture), H₀ and H* of AER runs;
2. ``aer.png``         AER's α_t vs step, and the tracking error H − H*;
3. ``sent.png``        share of tokens in T_low / the high-Cov / low-Cov sets, mean KL on each;
4. ``curriculum.png``  batch semantic entropy, curriculum stage (staircase), training reward;
5. ``validation.png``  validation avg@k per benchmark vs step;
   ``pass_at_k.png``   final pass@k vs k per benchmark (log-x), from the evaluation JSON or,
                       without one, from the last validation's best@k (veRL's estimate);

and ``index.html``, one self-contained page (figures embedded) with a final table per
benchmark (avg@k, pass@k, best step). Opens without a server.

A RUN is a metrics ``.jsonl`` file or a directory: each ``*.jsonl`` directly in it is one run
(``runs/entropy_rl/`` holds one per experiment), its evaluation JSON is any ``*.json`` with a
``summary`` in ``<dir>/<experiment>/`` or named ``<experiment>*.json``. A torn last line (a
run that died mid-write) is skipped with a warning: partial runs plot up to their last step.
"""

from __future__ import annotations

import argparse
import base64
import glob
import html
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

FIGURES = ("entropy", "aer", "sent", "curriculum", "validation", "pass_at_k")

# metric names, as our recipe and veRL log them
ENTROPY = "actor/entropy"
AER_ALPHA, AER_H0, AER_TARGET, AER_ENTROPY = "aer/alpha", "aer/h0", "aer/target_entropy", "aer/entropy"
SENT_FRACS = {
    "T_low": "actor/sent/low_entropy_frac",
    "high-Cov": "actor/sent/high_cov_frac",
    "low-Cov": "actor/sent/low_cov_frac",
}
SENT_KLS = {
    "T_low": "actor/sent/kl_low_entropy",
    "high-Cov": "actor/sent/kl_high_cov",
    "low-Cov": "actor/sent/kl_low_cov",
}
BATCH_SE, STAGE, REWARD = "curriculum/batch_semantic_entropy", "curriculum/stage", "critic/score/mean"
# val-core/<benchmark>/<acc|reward|score>/mean@<k>  and  .../best@<k>/mean
_VAL_MEAN = re.compile(r"^val-(?:core|aux)/(?P<bench>.+)/(?P<var>acc|reward|score)/mean@(?P<k>\d+)$")
_VAL_BEST = re.compile(r"^val-(?:core|aux)/(?P<bench>.+)/(?P<var>acc|reward|score)/best@(?P<k>\d+)/mean$")


class ReportInputError(ValueError):
    """A run path without metrics, or metrics that cannot be read; the message names the file."""


@dataclass
class Run:
    label: str
    path: str
    steps: dict[int, dict[str, float]]
    skipped_lines: list[int] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    evaluation_path: str | None = None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) where ``key`` was logged with a finite number, in step order."""
        xs, ys = [], []
        for s in sorted(self.steps):
            v = self.steps[s].get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                xs.append(s)
                ys.append(float(v))
        return xs, ys

    def keys(self) -> set[str]:
        return {k for d in self.steps.values() for k in d}

    @property
    def last_step(self) -> int:
        return max(self.steps)


# --------------------------------------------------------------------------- reading
def read_metrics(path: str) -> tuple[dict[int, dict[str, float]], list[int]]:
    """veRL file-logger JSON lines → ({step: metrics}, numbers of the lines skipped).

    Records of the same step are merged (veRL logs validation and training separately).
    Only a torn *last* line is tolerated; a bad line elsewhere is an error naming it.
    """
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    steps: dict[int, dict[str, float]] = {}
    skipped = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            step, data = int(rec["step"]), rec["data"]
            if not isinstance(data, dict):
                raise TypeError("'data' is not an object")
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines):  # died mid-write: plot up to the last complete step
                skipped.append(i)
                continue
            raise ReportInputError(f"{path} line {i}: not a veRL metrics record ({type(e).__name__}: {e})") from None
        steps.setdefault(step, {}).update(data)
    if not steps:
        raise ReportInputError(f"{path}: no metrics records (is it veRL's `file` logger output?)")
    return steps, skipped


def _find_evaluation(metrics_path: str) -> str | None:
    stem = os.path.splitext(metrics_path)[0]
    candidates = sorted(glob.glob(os.path.join(stem, "**", "*.json"), recursive=True)) + sorted(
        glob.glob(stem + "*.json")
    )
    for c in candidates:
        try:
            with open(c) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("summary"), dict) and "benchmarks" in doc["summary"]:
            return c
    return None


def load_runs(paths: Sequence[str], labels: Sequence[str] | None = None) -> list[Run]:
    """Every run named by ``paths`` (files, or directories of ``*.jsonl``)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "*.jsonl")))
            if not found:
                raise ReportInputError(
                    f"{p}: no metrics file (*.jsonl) in this directory; enable veRL's "
                    "`file` logger (trainer.logger=[console,file]) and set VERL_FILE_LOGGER_ROOT"
                )
            files.extend(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise ReportInputError(f"{p}: no such file or directory")
    if labels and len(labels) != len(files):
        raise ReportInputError(f"--labels has {len(labels)} names for {len(files)} runs ({', '.join(files)})")
    runs = []
    for i, path in enumerate(files):
        steps, skipped = read_metrics(path)
        label = labels[i] if labels else os.path.splitext(os.path.basename(path))[0]
        run = Run(label, path, steps, skipped)
        run.evaluation_path = _find_evaluation(path)
        if run.evaluation_path:
            with open(run.evaluation_path) as f:
                run.evaluation = json.load(f)
        runs.append(run)
    seen: dict[str, int] = {}
    for run in runs:  # two runs with one experiment name (from two directories): keep both apart
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({os.path.basename(os.path.dirname(os.path.abspath(run.path)))})"
    return runs


# --------------------------------------------------------------------------- validation metrics
def validation_curves(run: Run) -> dict[str, dict[int, tuple[list[int], list[float]]]]:
    """benchmark → k → (steps, avg@k) from ``val-*/<bench>/acc/mean@k`` (reward/score if no acc)."""
    found: dict[tuple[str, int], dict[str, str]] = {}
    for key in run.keys():
        m = _VAL_MEAN.match(key)
        if m:
            found.setdefault((m["bench"], int(m["k"])), {})[m["var"]] = key
    out: dict[str, dict[int, tuple[list[int], list[float]]]] = {}
    for (bench, k), by_var in sorted(found.items()):
        key = by_var.get("acc") or by_var.get("score") or by_var["reward"]
        xs, ys = run.series(key)
        if xs:
            out.setdefault(bench, {})[k] = (xs, ys)
    return out


def final_pass_at_k(run: Run) -> tuple[str, dict[str, dict[int, float]]]:
    """(source, benchmark → k → pass@k): the evaluation JSON, else the last validation's best@k."""
    if run.evaluation:
        summary = run.evaluation["summary"]
        out = {}
        for bench, entry in summary["benchmarks"].items():
            out[bench] = {int(k.split("@")[1]): float(v) for k, v in entry.items() if k.startswith("pass@")}
        return f"evaluation {os.path.basename(run.evaluation_path or '')}", out
    best: dict[str, dict[int, tuple[int, float]]] = {}
    for key in run.keys():
        m = _VAL_BEST.match(key)
        if m and m["var"] in ("acc", "score"):
            xs, ys = run.series(key)
            if xs:
                prev = best.setdefault(m["bench"], {}).get(int(m["k"]))
                if prev is None or m["var"] == "acc":
                    best[m["bench"]][int(m["k"])] = (xs[-1], ys[-1])
    out = {b: {k: v for k, (_, v) in sorted(ks.items())} for b, ks in best.items()}
    # a run validated with n samples also has pass@1 = mean@1 only if n == 1; mean@n is avg@n
    return "last validation (best@k)", out


# --------------------------------------------------------------------------- figures
def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no run logged {what}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _colors(runs: Sequence[Run]) -> dict[str, Any]:
    """A distinct colour per run: tab10, tab20 for up to 20 runs, then samples of turbo."""
    n = len(runs)
    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return {r.label: cmap(i) for i, r in enumerate(runs)}
    cmap = plt.get_cmap("turbo")
    return {r.label: cmap(i / (n - 1)) for i, r in enumerate(runs)}


def _style(ax, title: str, ylabel: str, xlabel: str = "step") -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _legend(ax) -> None:
    handles = ax.get_legend_handles_labels()[0]
    if len(handles) > 8:  # a grid of runs: beside the axes, where it hides no data
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(handles) // 24)
    elif handles:
        ax.legend(fontsize=8, frameon=False)


def _plot(ax, run: Run, key: str, **style) -> bool:
    """Draw ``key`` of ``run`` on ``ax``; False (nothing drawn) when the run did not log it."""
    xs, ys = run.series(key)
    if xs:
        ax.plot(xs, ys, **style)
    return bool(xs)


def _finish(ax, drew: bool, missing: str, title: str, ylabel: str) -> None:
    """Title, labels, grid and legend of one panel; a note where no run logged its metric."""
    if not drew:
        _no_data(ax, missing)
    _style(ax, title, ylabel)
    _legend(ax)


def fig_entropy(runs: Sequence[Run]):
    c = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drew = False
    for r in runs:
        drew |= _plot(ax, r, ENTROPY, color=c[r.label], lw=1.8, label=r.label)
        hx, hy = r.series(AER_H0)
        if hx:
            ax.axhline(hy[-1], color=c[r.label], ls=":", lw=1.2, label=f"{r.label}: H₀")
        _plot(ax, r, AER_TARGET, color=c[r.label], ls="--", lw=1.2, label=f"{r.label}: H*")
    _finish(ax, drew, ENTROPY, "Token entropy of the policy", "mean token entropy (nats)")
    return fig


def fig_aer(runs: Sequence[Run]):
    c = _colors(runs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    d1 = d2 = False
    for r in runs:
        d1 |= _plot(a1, r, AER_ALPHA, color=c[r.label], lw=1.8, label=r.label)
        ex, ey = r.series(AER_ENTROPY)
        tx, ty = r.series(AER_TARGET)
        target = dict(zip(tx, ty))
        pts = [(s, h - target[s]) for s, h in zip(ex, ey) if s in target]
        if pts:
            a2.plot([p[0] for p in pts], [p[1] for p in pts], color=c[r.label], lw=1.8, label=r.label)
            d2 = True
    if d2:
        a2.axhline(0.0, color="0.3", lw=0.8)
    _finish(a1, d1, AER_ALPHA, "AER coefficient α_t", "α_t")
    _finish(a2, d2, f"{AER_ENTROPY} and {AER_TARGET}", "Tracking error H − H*", "entropy − target (nats)")
    fig.tight_layout()
    return fig


def fig_sent(runs: Sequence[Run]):
    c = _colors(runs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"T_low": "-", "high-Cov": "--", "low-Cov": ":"}
    d1 = d2 = False
    for r in runs:
        for name in styles:
            style = {"color": c[r.label], "ls": styles[name], "lw": 1.6, "label": f"{r.label}: {name}"}
            d1 |= _plot(a1, r, SENT_FRACS[name], **style)
            d2 |= _plot(a2, r, SENT_KLS[name], **style)
    if d1:  # T_low ≈ 0.8, the covariance sets ≈ 1e-4, an empty set 0: symlog shows all three
        a1.set_yscale("symlog", linthresh=1e-5)
        a1.set_ylim(bottom=0)
    _finish(
        a1,
        d1,
        "SENT token-set fractions (actor/sent/*_frac)",
        "SENT token sets: share of valid tokens",
        "fraction (symlog)",
    )
    _finish(a2, d2, "SENT KL per set (actor/sent/kl_*)", "SENT: mean KL on each set", "mean KL")
    fig.tight_layout()
    return fig


def fig_curriculum(runs: Sequence[Run]):
    c = _colors(runs)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    d = [False, False, False]
    for r in runs:
        for i, (ax, key, drawstyle) in enumerate(
            ((a1, BATCH_SE, "default"), (a2, STAGE, "steps-post"), (a3, REWARD, "default"))
        ):
            d[i] |= _plot(ax, r, key, color=c[r.label], lw=1.7, drawstyle=drawstyle, label=r.label)
    _finish(a1, d[0], BATCH_SE, "Semantic entropy of the batch", "H_SE (nats)")
    _finish(a2, d[1], STAGE, "Curriculum stage", "stage (low → high H_SE)")
    a2.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _finish(a3, d[2], REWARD, "Training reward", "mean score")
    fig.tight_layout()
    return fig


def _per_benchmark(benches: Sequence[str], missing: str):
    """A figure with one panel per benchmark (one panel saying what is missing when none)."""
    n = max(1, len(benches))
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
    if not benches:
        _no_data(axes[0][0], missing)
    return fig, axes[0]


def fig_validation(runs: Sequence[Run]):
    c = _colors(runs)
    curves = {r.label: validation_curves(r) for r in runs}
    benches = sorted({b for cv in curves.values() for b in cv})
    fig, axes = _per_benchmark(benches, "validation metrics (val-core/<benchmark>/acc/mean@k)")
    for ax, bench in zip(axes, benches):
        for r in runs:
            by_k = curves[r.label].get(bench, {})
            for k, (xs, ys) in sorted(by_k.items()):
                ax.plot(
                    xs,
                    ys,
                    color=c[r.label],
                    marker="o",
                    ms=3,
                    lw=1.6,
                    ls="-" if k == max(by_k) else "--",
                    label=f"{r.label}: avg@{k}",
                )
        _style(ax, f"Validation: {bench}", "avg@k")
        _legend(ax)
    fig.tight_layout()
    return fig


def fig_pass_at_k(runs: Sequence[Run]):
    c = _colors(runs)
    finals = {r.label: final_pass_at_k(r) for r in runs}
    benches = sorted({b for _, f in finals.values() for b in f})
    fig, axes = _per_benchmark(benches, "an evaluation JSON or validation best@k")
    for ax, bench in zip(axes, benches):
        for r in runs:
            src, f = finals[r.label]
            pts = sorted(f.get(bench, {}).items())
            if pts:
                ax.plot(
                    [k for k, _ in pts],
                    [v for _, v in pts],
                    color=c[r.label],
                    marker="o",
                    lw=1.8,
                    label=f"{r.label} ({src})",
                )
        ax.set_xscale("log", base=2)
        ks = sorted({k for _, f in finals.values() for k in f.get(bench, {})})
        if ks:  # ticks at the k values themselves, written as numbers
            ax.set_xticks(ks)
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        _style(ax, f"Final pass@k: {bench}", "pass@k", xlabel="k")
        _legend(ax)
    fig.tight_layout()
    return fig


BUILDERS = {
    "entropy": fig_entropy,
    "aer": fig_aer,
    "sent": fig_sent,
    "curriculum": fig_curriculum,
    "validation": fig_validation,
    "pass_at_k": fig_pass_at_k,
}


# --------------------------------------------------------------------------- table + page
def final_table(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (run, benchmark): final avg@k (largest k), best avg@k and its step, pass@k."""
    rows = []
    for r in runs:
        curves = validation_curves(r)
        src, finals = final_pass_at_k(r)
        for bench in sorted(set(curves) | set(finals)):
            row: dict[str, Any] = {"run": r.label, "benchmark": bench, "last_step": r.last_step}
            by_k = curves.get(bench)
            if by_k:
                k = max(by_k)
                xs, ys = by_k[k]
                best = max(range(len(ys)), key=lambda i: (ys[i], -xs[i]))
                row.update({"k": k, "final_avg": ys[-1], "best_avg": ys[best], "best_step": xs[best]})
            if finals.get(bench):
                kmax = max(finals[bench])
                row.update({"pass_k": kmax, "pass": finals[bench][kmax], "pass_source": src})
            rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v)) if v is not None else "–"


def write_html(out_dir: str, runs: Sequence[Run], images: dict[str, str], rows: list[dict[str, Any]]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>entropy-rl report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}"
        "td:first-child,td:nth-child(2){text-align:left}.warn{color:#a40}</style></head><body>",
        "<h1>entropy-rl: runs side by side</h1><ul>",
    ]
    for r in runs:
        note = (
            f" <span class='warn'>(last line torn, skipped: plotted to step {r.last_step})</span>"
            if r.skipped_lines
            else ""
        )
        ev = f"; evaluation: {html.escape(r.evaluation_path)}" if r.evaluation_path else ""
        parts.append(
            f"<li><b>{html.escape(r.label)}</b>: {html.escape(r.path)}, "
            f"steps {min(r.steps)}–{r.last_step}{ev}{note}</li>"
        )
    parts.append("</ul><h2>Final table</h2>")
    if rows:
        parts.append(
            "<table><tr><th>run</th><th>benchmark</th><th>k</th><th>final avg@k</th><th>best avg@k</th>"
            "<th>best step</th><th>pass@k (k)</th><th>pass@k from</th></tr>"
        )
        for row in rows:
            pk = f"{_fmt(row.get('pass'))} ({row['pass_k']})" if "pass" in row else "–"
            parts.append(
                "<tr>"
                + "".join(
                    f"<td>{x}</td>"
                    for x in (
                        _fmt(row["run"]),
                        _fmt(row["benchmark"]),
                        _fmt(row.get("k")),
                        _fmt(row.get("final_avg")),
                        _fmt(row.get("best_avg")),
                        _fmt(row.get("best_step")),
                        pk,
                        _fmt(row.get("pass_source")),
                    )
                )
                + "</tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No validation or evaluation metrics in these runs.</p>")
    titles = {
        "entropy": "1. Token entropy",
        "aer": "2. AER control",
        "sent": "3. SENT token sets",
        "curriculum": "4. Curriculum and reward",
        "validation": "5a. Validation avg@k",
        "pass_at_k": "5b. Final pass@k",
    }
    for name in FIGURES:
        with open(images[name], "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(
            f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>"
            f"<p><a href='{name}.png'>{name}.png</a></p>"
        )
    parts.append("</body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def build_report(paths: Sequence[str], out_dir: str, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Read the runs, write every figure and ``index.html`` under ``out_dir``; returns what was written."""
    runs = load_runs(paths, labels)
    os.makedirs(out_dir, exist_ok=True)
    images, figures = {}, {}
    for name in FIGURES:
        fig = BUILDERS[name](runs)
        images[name] = os.path.join(out_dir, f"{name}.png")
        fig.savefig(images[name], dpi=120, bbox_inches="tight")
        figures[name] = fig
        plt.close(fig)
    rows = final_table(runs)
    page = write_html(out_dir, runs, images, rows)
    with open(os.path.join(out_dir, "table.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return {"runs": runs, "images": images, "figures": figures, "html": page, "table": rows}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m entropy_rl.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="metrics .jsonl files, or directories holding them")
    ap.add_argument("--out", default="report", help="output directory (default: report/)")
    ap.add_argument("--labels", nargs="+", help="one label per run, in order (default: experiment names)")
    args = ap.parse_args(argv)
    try:
        out = build_report(args.runs, args.out, args.labels)
    except ReportInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in out["runs"]:
        if r.skipped_lines:
            print(
                f"[report] {r.path}: last line {r.skipped_lines[0]} is torn (run died mid-write); "
                f"plotted up to step {r.last_step}",
                file=sys.stderr,
            )
    print(f"[report] {len(out['runs'])} run(s): {', '.join(r.label for r in out['runs'])}")
    print(f"[report] figures: {', '.join(out['images'][n] for n in FIGURES)}")
    print(f"[report] page: {out['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
