"""Verifiable final answers: extraction, a cheap canonical form, bounded equivalence.

Model output is untrusted and can be megabytes long, so everything here is built to be
linear-time in the parent process and *time-bounded* for the symbolic part:

- :func:`extract_answer` — the last final-answer marker: the last balanced ``\\boxed{...}``
  / ``\\fbox{...}`` group (adjacent boxes are one multi-valued answer), or an ``Answer:``
  marker after it, anywhere in a line; one linear brace scan, no regex recursion.
- :func:`normalize_answer` — a cheap canonical string. Two answers with the same
  normal form are equivalent without symbolic work; it is also the clustering key.
- :func:`is_equivalent` / :func:`equivalent_pairs` / :func:`check_pairs` (which also
  says which verdicts come from a timeout) — mathematical equivalence via
  math-verify (which uses sympy). The symbolic check never runs in the caller's
  process: it runs in a warm, long-lived worker subprocess that is killed and replaced
  when it overruns ``timeout``. math-verify's own timeouts use ``signal.alarm``, which
  raises outside the main thread, so inside the worker they are disabled
  (``parsing_timeout=None`` / ``timeout_seconds=None``) and the parent enforces the
  deadline. This makes every call safe from threads, asyncio loops and Ray workers.
  Workers are ``python -c`` subprocesses (fork+exec, like multiprocessing's "spawn",
  never a bare fork of a threaded parent) that load this file by path and speak JSON
  lines: unlike multiprocessing they never re-import the caller's ``__main__`` and never
  unpickle anything. Up to :data:`MAX_WORKERS` (env ``ENTROPY_RL_VERIFY_WORKERS``)
  start on demand, one per concurrent caller; each is capped at
  :data:`WORKER_MEMORY_LIMIT` bytes, exits when its parent dies, and is killed at exit.

Nothing here calls ``eval``/``exec``/``sympify`` on the text; math-verify parses LaTeX
with its ANTLR grammar and hands only digit/operator strings to sympy's ``parse_expr``.

Decisions (documented because they change rewards):

- Percent: ``\\%``/``%`` is stripped, so ``50\\%`` == ``50`` and ``50\\%`` != ``0.5``.
  Accepting both would make equivalence non-transitive (``50`` != ``0.5``), which breaks
  clustering; datasets (MATH, DAPO) state percentages as the number before ``%``.
- Degrees (``^\\circ``), ``\\text{...}`` wrappers, ``$``, spacing macros and a short list
  of trailing unit words after a number (``5 cm`` -> ``5``) are stripped.
- Values joined by ``\\text{ or }`` / ``\\text{ and }`` / `` and `` are a list
  (``x=2 \\text{ or } x=-3`` -> ``2,-3``), and ``x=`` is dropped when every value of the
  answer assigns the same single-letter variable that does not occur on the right.
- A unit in a text wrapper after any expression goes (``8\\pi \\text{ cm}^2`` -> ``8\\pi``);
  ``pct`` / ``percentage`` are percent words. ``32, 349`` (comma, space, three digits) is a
  list of two values, while ``32,349`` is a thousands group.
- Several boxes in a gold (:func:`entropy_rl.reward.gold_answers`) or adjacent boxes in a
  response are one multi-valued answer: all of it must be given.
- Pure-letter answers are compared case-insensitively (``\\text{Monday}`` == ``monday``;
  single letters too: ``(A)`` == ``a``).
- Tuples are ordered (``(1,2)`` != ``(2,1)``); sets ``\\{..\\}`` and bare lists ``1,2``
  are unordered, as in math-verify.
- Answers whose normal form is longer than :data:`MAX_SYMBOLIC_CHARS` (1000) are
  compared by normal form only; longer than :data:`MAX_NORMALIZE_CHARS` (100k) by the
  stripped raw string only. Real final answers are far shorter.
- A check that times out (or hits the worker's memory/recursion bound, or crashes it)
  counts as *not equivalent*, is cached as such, and is reported by :func:`check_pairs`
  (``compute_score``'s ``verify_timeouts``). The string it spent its time on (known from
  the worker's progress marks, or by a short probe against ``"0"``) is blamed for the rest
  of the call, so a hostile answer in a cluster costs one timeout, not one per pair.
- ``is_equivalent(pred, gold)`` passes ``gold`` as math-verify's gold side; math-verify is
  asymmetric only in rare cases (equations and relations vs intervals).

Exact fast paths (no worker, no sympy) decide: equal normal forms; plain numbers (integers
exactly, other values when equal or more than 1e-5 apart); ``q*sqrt(n)`` radicals and
multiples of ``\\pi``; sets and bare lists, tuples and two-ended intervals of those; and
words (letters only). Each rule gives math-verify's verdict (tested on every labelled
corpus item and on bench_answers' mix) and leaves everything it cannot settle to it.
Plain-number answers are clustered by exact value (:mod:`entropy_rl.semantic_entropy`).

Timing (measured on a 2-core CPU box, warm worker): pairs decided by the fast paths take
~10-20 us (no worker round-trip); a worker round-trip is ~0.3 ms
including a trivial math-verify check, and math-verify itself takes ~1-100 ms on a new
symbolic pair (results are cached); 2016 pairs of 64 mostly symbolic distinct answers
took ~6 s in one :func:`equivalent_pairs` call. A cold worker start (python + sympy +
math-verify import + warm-up) takes ~0.5 s and is not counted against ``timeout``; a
killed worker is replaced at once and warms up in the background. Hostile inputs:
``3^{3^{3^{3^3}}}`` and ``10^{10^{10}}`` overrun and return ``False`` at 2.01 s; a
10 MB string, 100k nested braces, ``\\boxed{`` x 100k or a 400-deep ``\\frac`` nest
return in under 15 ms (length bounds).

Linux/POSIX only (``select.poll`` on pipes, ``resource`` limits in the worker).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "MAX_NORMALIZE_CHARS",
    "MAX_SYMBOLIC_CHARS",
    "PairChecks",
    "all_boxed",
    "check_pairs",
    "equivalent_pairs",
    "exact_number",
    "extract_answer",
    "is_equivalent",
    "normalize_answer",
    "shutdown_workers",
    "warm_up",
]

#: Normal forms longer than this are compared as strings only (no symbolic check).
MAX_SYMBOLIC_CHARS = 1000
#: Raw answers longer than this are not even normalized (``strip()`` equality only).
MAX_NORMALIZE_CHARS = 100_000
#: Extraction looks only at this many trailing characters of a response: the final
#: answer sits at the end, and the bound keeps a 10 MB output at a few milliseconds.
EXTRACT_WINDOW_CHARS = 200_000

DEFAULT_TIMEOUT = 2.0
#: Seconds a fresh worker may take to import sympy/math-verify and warm up.
STARTUP_TIMEOUT = float(os.environ.get("ENTROPY_RL_VERIFY_STARTUP_TIMEOUT", "60"))
#: Upper bound on concurrent worker processes (spawned on demand, one per busy caller).
MAX_WORKERS = int(os.environ.get("ENTROPY_RL_VERIFY_WORKERS", str(max(1, min(4, (os.cpu_count() or 2) // 2)))))
#: Address-space cap for a worker (bytes); stops ``10**10**10``-style blow-ups from
#: eating the node's memory before the deadline kills it. 0 disables.
WORKER_MEMORY_LIMIT = int(os.environ.get("ENTROPY_RL_VERIFY_MEMORY_LIMIT", str(3 << 30)))

#: Keep one extra worker started and warm, so a worker killed at a deadline is replaced
#: at once: without it the next check waits ~0.7 s (2 cores) for sympy to import.
KEEP_SPARE = os.environ.get("ENTROPY_RL_VERIFY_SPARE", "1") == "1"
#: A pair is abandoned this long before its timeout, leaving time to kill the worker and
#: swap in the spare, so one check returns within ``timeout`` seconds in all.
_KILL_MARGIN = 0.1

_BATCH_CHUNK = 256  # pairs per request line: keeps one pipe write bounded

# --------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"[{}]")
# A final-answer marker anywhere in the text: "Answer:", "**Answer:**", "Final Answer:",
# "**Final Answer**:". `[ \t]` (not `\s`) keeps a match on one line, so a flood of blank
# lines cannot make the scan quadratic.
_MARKER_RE = re.compile(
    r"(?<![A-Za-z])(?:final[ \t]+)?answer[ \t]*(?:\*\*[ \t]*)?:[ \t]*(?:\*\*)?",
    re.IGNORECASE,
)
_HOPE_RE = re.compile(r"\.?[ \t]*I hope it is correct[ \t.!]*$", re.IGNORECASE)  # Minerva format
_ANSWER_PREFIX_RE = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
# The end of the answer sentence: a full stop followed by whitespace (a decimal point never is).
_SENTENCE_END_RE = re.compile(r"\.(?=\s)")
# What may stand between two boxes that together form one multi-valued final answer
# (`\boxed{2}, \boxed{3}`, `$x=\boxed{2}$ or $x=\boxed{-3}$`, `\boxed{a} \quad\text{and}\quad
# \boxed{b}`). Any other word in between (`\boxed{1} hmm no, \boxed{2}`) means the earlier
# box was an intermediate result.
_BOX_JOIN_RE = re.compile(
    r"(?:\s|\$|\\[\[\]()]|[,;&.]|\\\\|~|\\(?:quad|qquad|,|;|:|!|hspace\s*\{[^{}]{0,12}\})(?![A-Za-z])"
    r"|\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?:and|or|,)?\s*\}|(?<![A-Za-z])(?:and|or)(?![A-Za-z])"
    r"|(?<![A-Za-z\\])[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=)*"
)
_BOX_JOIN_MAX = 80  # longer gaps are prose, not a separator


def _match_braces(s: str, start: int = 0) -> dict[int, int]:
    """Map each balanced ``{`` position (at or after ``start``) to its ``}``: one linear
    pass with a stack. Braces before ``start`` cannot change how later ones pair up."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for m in _BRACE_RE.finditer(s, start):
        i = m.start()
        if s[i] == "{":
            # an escaped brace (\{) is a literal set brace; it still nests, so count it
            stack.append(i)
        elif stack:
            match[stack.pop()] = i
    return match


def _box_spans(s: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every closed, non-empty box in ``s``, in order.
    Unbalanced boxes are skipped. Linear time (one brace pass)."""
    starts = [(m.start(), m.end()) for m in _BOX_RE.finditer(s)]
    if not starts:
        return []
    match = _match_braces(s, starts[0][0])
    n = len(s)
    out = []
    for b, j in starts:
        k = j
        while k < n and s[k] in " \t":
            k += 1
        if k < n and s[k] == "{":
            close = match.get(k)
            if close is None:
                continue
            content, end = s[k + 1 : close].strip(), close + 1
        elif k > j:  # `\boxed 5` style: one token after whitespace
            m = re.match(r"[^\s$]+", s[k : k + 1000])
            content = m.group(0) if m else ""
            end = k + len(content)
        else:
            continue
        if content:
            out.append((b, end, content))
    return out


def _last_box_group(s: str) -> tuple[int, int, str] | None:
    """The final answer given in boxes: the last closed box, joined with the boxes right
    before it when only separators stand between them (one multi-valued answer, contents
    joined by ``", "``). ``(start, end, answer)`` or ``None``."""
    spans = _box_spans(s)
    if not spans:
        return None
    # drop boxes nested in a later-closing box: `\boxed{\boxed{9}}` keeps the inner one only
    last = len(spans) - 1
    group = [spans[last]]
    for i in range(last - 1, -1, -1):
        b, e, c = spans[i]
        nb = group[0][0]
        if e > nb:  # nested in / overlapping the group: not a separate answer
            break
        gap = s[e:nb]
        if len(gap) > _BOX_JOIN_MAX or not _BOX_JOIN_RE.fullmatch(gap):
            break
        group.insert(0, spans[i])
    return group[0][0], group[-1][1], ", ".join(c for _, _, c in group)


def all_boxed(s: str) -> list[str]:
    """Contents of every closed, non-empty box in ``s`` (outermost boxes only), in order."""
    out: list[tuple[int, int, str]] = []
    for b, e, c in _box_spans(s):
        if out and b < out[-1][1]:  # nested inside the previous (outer) box
            continue
        out.append((b, e, c))
    return [c for _, _, c in out]


def _marker_answer(text: str, start: int) -> str | None:
    """The answer written after a final-answer marker that ends at ``start``."""
    n = len(text)
    end = text.find("\n", start, start + 2000)
    line = text[start : end if end >= 0 else min(n, start + 2000)]
    if not line.strip(" \t*$"):  # "**Answer:**" alone on its line: the answer is on the next
        pos = end
        for _ in range(4):
            if pos < 0:
                return None
            nxt = text.find("\n", pos + 1, pos + 2001)
            line = text[pos + 1 : nxt if nxt >= 0 else min(n, pos + 2001)]
            if line.strip():
                break
            pos = nxt
    ans = line.strip().strip("*").strip()
    m = _ANSWER_PREFIX_RE.match(ans)  # "Final Answer: The final answer is 3"
    if m:
        ans = ans[m.end() :]
    group = _last_box_group(ans)
    if group is not None:
        return group[2]
    ans = ans.strip()
    # a leading math span is the answer: "Answer: $42$ (from the first case)"
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(left):
            close = ans.find(right, len(left))
            while close > 0 and ans[close - 1] == "\\":  # `\$` is a dollar sign, not a delimiter
                close = ans.find(right, close + 1)
            if close > len(left):
                ans = ans[len(left) : close]
                break
    else:
        ans = _HOPE_RE.sub("", ans)
        m = _SENTENCE_END_RE.search(ans)  # "Answer: 7.78. I hope it is correct."
        if m:
            ans = ans[: m.start()]
    # strip markdown bold, math delimiters and the sentence's full stop
    for _ in range(3):
        ans = ans.strip().strip("*").strip()
        if ans.endswith("."):
            ans = ans[:-1]
        ans = ans.strip("$").strip()
        if ans.startswith("\\(") and ans.endswith("\\)"):
            ans = ans[2:-2]
        if ans.startswith("\\[") and ans.endswith("\\]"):
            ans = ans[2:-2]
    return ans or None


def extract_answer(text: str | None) -> str | None:
    """The final answer of a model response, or ``None``.

    The last final-answer marker in the response wins, wherever it stands: the last
    balanced ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept; ``\\boxed 5`` also
    accepted; unbalanced or empty boxes skipped), or an ``Answer:`` marker after it
    (case-insensitive; ``**Answer:**``, ``Final Answer:`` and Minerva's ``Final Answer:
    The final answer is X. I hope it is correct.`` too, also inside a line). Boxes that
    follow each other with only separators between them (``\\boxed{2}, \\boxed{3}``) are
    one multi-valued answer, returned joined by ``", "``. After a marker the answer is a
    leading ``$...$`` span or the text up to the sentence's end. Only the last
    :data:`EXTRACT_WINDOW_CHARS` characters are scanned, in linear time.
    """
    if not text:
        return None
    if not isinstance(text, str):
        text = str(text)
    if len(text) > EXTRACT_WINDOW_CHARS:
        text = text[-EXTRACT_WINDOW_CHARS:]
    group = _last_box_group(text)
    box_end = group[1] if group is not None else 0
    last = None
    for m in _MARKER_RE.finditer(text, box_end):
        last = m
    if last is not None:
        ans = _marker_answer(text, last.end())
        if ans is not None:
            return ans
    return group[2] if group is not None else None


# --------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------

_WRAP_CMDS = (
    r"text|textbf|textit|textrm|textsf|texttt|textnormal|mathrm|mathbf|mathit|mathsf|mbox|hbox|operatorname|boldsymbol"
)
_TEXT_RE = re.compile(r"\\(?:" + _WRAP_CMDS + r")\s*\{([^{}]*)\}")
# A matrix row break `\\` is matched first and kept, so that the spacing macro `\ ` never
# takes the second backslash of `\\ ` (which would turn `1 \\ 2` into `1\2`).
_SPACE_CMDS_RE = re.compile(r"(\\\\)|\\(?:,|;|:|quad|qquad|enspace|thinspace|medspace|thickspace)(?![A-Za-z])|\\ |~")
_NEG_SPACE_RE = re.compile(r"\\!|\\(?:displaystyle|textstyle|limits|nolimits)(?![A-Za-z])")
_LEFTRIGHT_RE = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![A-Za-z])"
)
_DFRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°")
_PERCENT_RE = re.compile(r"\\?%")
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_SHORT1_RE = re.compile(r"\\frac\s*(\d)\s*\{")
_FRAC_SHORT2_RE = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\d|[A-Za-z](?![A-Za-z]))")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_UNITS = (
    r"square\s+units?|sq\.?\s+units?|units?|dollars?|cents?|degrees?|deg|radians?|"
    r"percent(?:age)?s?|per\s*cent|pct|points?|"
    r"mm|cm|km|m|meters?|metres?|centimeters?|millimeters?|kilometers?|"
    r"inch(?:es)?|in|ft|feet|foot|yards?|yd|miles?|mi|"
    r"kg|g|grams?|kilograms?|lbs?|pounds?|ounces?|oz|liters?|litres?|ml|"
    r"seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|months?|years?|mph"
)
_NUMBER_UNIT_RE = re.compile(
    r"([-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?|\\frac\{-?\d+\}\{\d+\})"
    r"(?:\s+|(?<=\d)(?=[A-Za-z]{2}))(?:" + _UNITS + r")(?:\^\{?[23]\}?|\s*\^?[23])?",
    re.IGNORECASE,
)
# A unit in a text wrapper at the end of any expression (`8\pi \text{ cm}^2`): the wrapper
# says it is a word, not a product of variables, so it can go even after a non-number.
_TEXT_UNIT_RE = re.compile(
    r"(?<=\S)\s*\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{\s*(?:" + _UNITS + r")\s*\}"
    r"(?:\s*\^\s*\{?\s*[23]\s*\}?)?\s*\.?\s*$",
    re.IGNORECASE,
)
# `x=2 \text{ or } x=-3`, `1 \text{and} 2`: a connective between the values of one answer.
_TEXT_JOIN_RE = re.compile(r"\s*,?\s*\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{\s*,?\s*(?:and|or)\s*\}\s*")
_WORD_JOIN_RE = re.compile(r"\s*,?\s+(?:and|or)\s+")
_MATHY_RE = re.compile(r"[\d\\=^_]")
# `x = 2` as one value of an answer: a single-letter variable (optionally subscripted).
_ASSIGN_RE = re.compile(r"\s*([A-Za-z](?:_\{?\w{1,3}\}?)?)\s*=\s*([^=<>]+?)\s*")
# `32, 349` is a list of two numbers, not 32,349: keep it from reading as a thousands group
# once whitespace is dropped (a `\,` after the comma is what math-verify reads as a list).
_LIST_COMMA_RE = re.compile(r"(?<=\d),\s+(?=\d{3}(?!\d))")
_SIMPLE_NUMBER_RE = re.compile(r"-?\d{1,40}(?:\.\d{1,40})?")
_PLAIN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z '\-]*")
_CHOICE_RE = re.compile(r"\(([A-Za-z])\)")
_CMD_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")
_WS_RE = re.compile(r"\s+")


def _space_repl(m: re.Match) -> str:
    return m.group(1) or " "


def _split_top_level(s: str) -> list[str]:
    """``s`` split at the commas outside any bracket."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _strip_assignments(s: str) -> str:
    """``x=2, x=-3`` -> ``2, -3``: the values an answer assigns to one variable (the
    variable must not occur on the right, so ``y=2y+1`` stays an equation)."""
    if len(s) > 2000:
        return s
    values, var = [], None
    for part in _split_top_level(s):
        m = _ASSIGN_RE.fullmatch(part)
        if m is None or (var is not None and m.group(1) != var):
            return s
        var = m.group(1)
        if re.search(r"(?<![A-Za-z\\])" + re.escape(var) + r"(?![A-Za-z])", m.group(2)):
            return s
        values.append(m.group(2))
    return ", ".join(values)


def _unwrap_whole_box(s: str) -> str:
    """``\\boxed{X}`` -> ``X`` when the box spans the whole string (gold answers)."""
    for _ in range(3):
        m = _BOX_RE.match(s)
        if not m:
            return s
        k = m.end()
        while k < len(s) and s[k] == " ":
            k += 1
        if k >= len(s) or s[k] != "{":
            return s
        close = _match_braces(s).get(k)
        if close != len(s) - 1:
            return s
        s = s[k + 1 : close].strip()
    return s


#: Only answers up to this long are memoized by :func:`normalize_answer`: a policy that
#: emits many distinct 100k-char answers would otherwise pin 8192 of them in memory.
_NORMALIZE_CACHE_CHARS = 4096


def normalize_answer(ans: str) -> str:
    """A cheap canonical form of a final answer (the clustering key; no symbolic work).

    Memoized for answers up to :data:`_NORMALIZE_CACHE_CHARS` characters (8192 of them).
    """
    if ans is None:
        return ""
    s = str(ans)
    return _normal_form_cached(s) if len(s) <= _NORMALIZE_CACHE_CHARS else _normal_form(s)


def _normal_form(ans: str) -> str:
    """:func:`normalize_answer` without its memo: a cheap canonical form of a final answer.

    Strips whitespace, ``$``, a whole-string ``\\boxed{}``, ``\\left``/``\\right``,
    spacing macros, ``^\\circ``, ``\\%``, ``\\text{}``-style wrappers, trailing unit words
    after a number and a trailing period; ``\\dfrac``/``\\tfrac`` -> ``\\frac``,
    ``\\frac12`` -> ``\\frac{1}{2}``, ``**`` -> ``^``, ``1,000`` -> ``1000``; pure-letter
    answers are lowercased; NUL characters are dropped (NUL is the placeholder below).
    Equal normal forms imply equivalent answers. Linear time.
    """
    if ans is None:
        return ""
    s = str(ans).strip()
    if _SIMPLE_NUMBER_RE.fullmatch(s):  # most golds and answers: nothing below rewrites them
        return s
    return _normalize_slow(s)


def _normalize_slow(ans: str) -> str:
    """:func:`_normal_form` without its plain-number shortcut (the tests compare the two)."""
    s = str(ans).strip()
    if len(s) > MAX_NORMALIZE_CHARS:
        return s
    s = _unwrap_whole_box(s.replace("\x00", ""))
    s = s.replace("\\$", "").replace("$", "")
    if (s.startswith("\\(") and s.endswith("\\)")) or (s.startswith("\\[") and s.endswith("\\]")):
        s = s[2:-2]
    s = _NEG_SPACE_RE.sub("", s)
    s = _SPACE_CMDS_RE.sub(_space_repl, s)
    s = _LEFTRIGHT_RE.sub("", s)
    s = _DFRAC_RE.sub(r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = _PERCENT_RE.sub("", s)
    # One space per whitespace run from here on: the patterns below that start with `\s*`
    # would otherwise backtrack quadratically over a long run (untrusted input).
    s = _WS_RE.sub(" ", s)
    s = _TEXT_UNIT_RE.sub("", s)
    s = _TEXT_JOIN_RE.sub(", ", s)
    for _ in range(4):  # nested wrappers: \text{\textbf{x}}
        s2 = _TEXT_RE.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    s = s.replace("{,}", ",").replace("**", "^").replace("\\varnothing", "\\emptyset")
    s = _WS_RE.sub(" ", s).strip()  # unwrapped text can hold long runs again
    if (" and " in s or " or " in s) and _MATHY_RE.search(s):
        s = _WORD_JOIN_RE.sub(", ", s)
    if "=" in s:
        s = _strip_assignments(s)
    m = _NUMBER_UNIT_RE.fullmatch(s)
    if m:
        s = m.group(1)
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if s.startswith("+") and s[1:2].isdigit():
        s = s[1:]
    m = _CHOICE_RE.fullmatch(s)
    if m:
        s = m.group(1)
    if _PLAIN_TEXT_RE.fullmatch(s):
        s = s.lower()
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_SHORT1_RE.sub(r"\\frac{\1}{", s)
    s = _FRAC_SHORT2_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    s = _LIST_COMMA_RE.sub(",\\\\,", s)
    # Drop whitespace, except the one space that separates a control word from a
    # following letter (`\pi r` must not become `\pir`).
    s = _CMD_SPACE_RE.sub("\\1\x00", s)
    s = _WS_RE.sub("", s).replace("\x00", " ")
    return s


_normal_form_cached = lru_cache(maxsize=8192)(_normal_form)
normalize_answer.cache_clear = _normal_form_cached.cache_clear  # type: ignore[attr-defined]
normalize_answer.cache_info = _normal_form_cached.cache_info  # type: ignore[attr-defined]


_INT_RE = re.compile(r"-?\d{1,40}")
_DEC_RE = re.compile(r"-?\d{1,40}(?:\.\d{1,40})?|-?\.\d{1,40}")
_SLASH_RE = re.compile(r"(-?\d{1,40})/(\d{1,40})")
_FRAC_RE = re.compile(r"(-?)\\frac\{(-?\d{1,40})\}\{(\d{1,40})\}")


def _exact_number(s: str) -> Fraction | None:
    """A plain decimal / ``a/b`` / ``\\frac{a}{b}`` as an exact Fraction (no exponents:
    ``Fraction('1e999999999')`` would hang)."""
    if _DEC_RE.fullmatch(s):
        return Fraction(s)
    m = _SLASH_RE.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _FRAC_RE.fullmatch(s)
    if m and int(m.group(3)) != 0:
        v = Fraction(int(m.group(2)), int(m.group(3)))
        return -v if m.group(1) else v
    return None


def exact_number(normal_form: str) -> Fraction | None:
    """The exact value of a normal form that is a plain number (``-3``, ``0.25``, ``3/4``,
    ``\\frac{3}{4}``), else ``None``. Two such values decide equivalence without sympy:
    equal values are equivalent; two integers, or two values more than
    :data:`NUMBER_TOLERANCE` apart, are not (see :func:`numbers_need_check`)."""
    if len(normal_form) > 100:
        return None
    return _exact_number(normal_form)


#: Two plain numbers closer than this (and not both integers) go to math-verify, which
#: rounds floats; farther apart they can never be equal.
NUMBER_TOLERANCE = Fraction(1, 10**5)


def numbers_need_check(p: str, a: Fraction, g: str, b: Fraction) -> bool:
    """Whether two plain numbers (normal forms ``p``, ``g`` with values ``a``, ``b``) still
    need math-verify: only distinct values within :data:`NUMBER_TOLERANCE` that are not
    both integers."""
    return a != b and abs(a - b) <= NUMBER_TOLERANCE and not (_INT_RE.fullmatch(p) and _INT_RE.fullmatch(g))


def _fast_verdict(p: str, g: str) -> bool | None:
    """Decide from normal forms alone when that is certain; ``None`` = needs sympy."""
    if not p or not g:
        return False
    if p == g:
        return True
    if len(p) > MAX_SYMBOLIC_CHARS or len(g) > MAX_SYMBOLIC_CHARS:
        return False
    if _INT_RE.fullmatch(p) and _INT_RE.fullmatch(g):  # the common case, without Fractions
        return int(p) == int(g)
    a, b = _exact_number(p), _exact_number(g)
    if a is not None and b is not None:
        if a == b:
            return True
        # math-verify rounds floats to 6 decimals; a larger gap can never be "equal",
        # and two distinct integers are compared exactly.
        if abs(a - b) > NUMBER_TOLERANCE or (_INT_RE.fullmatch(p) and _INT_RE.fullmatch(g)):
            return False
        return None
    if len(p) > 200 or len(g) > 200:
        return None
    p_text_only = _STRING_ONLY_RE.fullmatch(p) is not None
    if p_text_only or _STRING_ONLY_RE.fullmatch(g):
        # math-verify's only reading of a word followed by `?` or `=` is its text (its LaTeX
        # grammar has no `?` token and an `=` needs a right side), so it equals an answer only
        # as a string; its normaliser never writes `?` or `=`, so an answer without either
        # cannot be that string.
        other = g if p_text_only else p
        return False if "?" not in other and "=" not in other else None
    x, y = _structure(p), _structure(g)
    v = _structure_verdict(x, y)
    if v is None and (x is None or y is None):
        v = _polynomial_verdict(p, g, x, y)
    return v


# Exact values beyond plain numbers, decided without sympy: q * sqrt(n) * pi^k (simple
# radicals and multiples of pi), sets and bare lists of them (unordered, as math-verify
# compares them), tuples and two-ended intervals of them, and words. Anything else, or
# anything these rules cannot settle, goes to math-verify; tests check that every verdict
# given here is the one math-verify gives.
_COEF = r"(-?)(\d{1,6})?"
_RADICAL_RES = (
    (re.compile(_COEF + r"\\sqrt\{(\d{1,6})\}"), 0),  # 2\sqrt{3}
    (re.compile(_COEF + r"\\sqrt\{(\d{1,6})\}/(\d{1,6})"), 0),  # \sqrt{3}/2
    (re.compile(r"(-?)\\frac\{(\d{1,6})?\\sqrt\{(\d{1,6})\}\}\{(\d{1,6})\}"), 0),  # \frac{\sqrt{3}}{2}
)
_PI_RES = (
    re.compile(_COEF + r"(?:\\cdot)?\\pi"),  # 3\pi, 3\cdot\pi
    re.compile(r"(-?)\\pi(?:\\cdot(\d{1,6}))?"),  # \pi\cdot 3
    re.compile(_COEF + r"\\pi/(\d{1,6})"),  # 3\pi/2
    re.compile(r"(-?)\\frac\{(\d{1,6})?\\pi\}\{(\d{1,6})\}"),  # \frac{3\pi}{2}
)
_FRAC_SQRT_RE = re.compile(r"(-?)\\frac\{(\d{1,6})\}\{(\d{1,6})\}\\sqrt\{(\d{1,6})\}")  # \frac{1}{2}\sqrt{3}
_WORD_RE = re.compile(r"[a-z]{1,60}")
_STRING_ONLY_RE = re.compile(r"[a-z]{0,60}[?=]{1,20}")  # `x=`, `asdfqwerty???`
_MAX_ELEMENTS = 20

_Value = tuple  # (q: Fraction, n: square-free int, k: power of pi, 0 or 1)


def _radical(s: str) -> _Value | None:
    """``(q, n, k)`` with ``s == q * sqrt(n) * pi**k``, ``n`` square-free; else ``None``."""
    v = _exact_number(s) if len(s) <= 100 else None
    if v is not None:
        return v, 1, 0
    if "\\pi" in s:
        for rx in _PI_RES:
            m = rx.fullmatch(s)
            if m is None:
                continue
            coef = int(m.group(2)) if m.group(2) else 1
            den = int(m.group(3)) if m.lastindex and m.lastindex >= 3 and m.group(3) else 1
            if den == 0:
                return None
            return Fraction(-coef if m.group(1) else coef, den), 1, 1
        return None
    m = _FRAC_SQRT_RE.fullmatch(s)
    if m:
        num, den, n = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den == 0:
            return None
        return _square_free(Fraction(-num if m.group(1) else num, den), n)
    for k, (rx, _) in enumerate(_RADICAL_RES):
        m = rx.fullmatch(s)
        if m is None:
            continue
        coef = int(m.group(2)) if m.group(2) else 1
        n = int(m.group(3))
        den = int(m.group(4)) if k > 0 else 1
        if den == 0:
            return None
        return _square_free(Fraction(-coef if m.group(1) else coef, den), n)
    return None


def _square_free(q: Fraction, n: int) -> _Value:
    """``q·sqrt(n)`` as ``(q', n', 0)`` with ``n'`` square-free."""
    if n == 0:
        return Fraction(0), 1, 0
    f = 2
    while f * f <= n:  # pull squares out of the radicand (n <= 10^6: <= 1000 steps)
        while n % (f * f) == 0:
            n //= f * f
            q *= f
        f += 1
    return q, n, 0


def _structure(s: str) -> tuple | None:
    # math-verify reads `inf` inside a word as infinity and `e` as Euler's number: words
    # with `inf` or `oo` (sympy's infinity) are left to it
    if _WORD_RE.fullmatch(s):
        return ("word", s) if "inf" not in s and "oo" not in s else ("infword", s)
    r = _radical(s)
    if r is not None:
        return ("num", r)
    if s.startswith("\\{") and s.endswith("\\}"):
        parts, kind = _split_top_level(s[2:-2]), "set"
    elif s[:1] in "([" and s[-1:] in ")]":
        parts, kind = _split_top_level(s[1:-1]), s[0] + s[-1]
    elif "," in s and s[:1] not in "([{" and s[-1:] not in ")]}":
        parts, kind = _split_top_level(s), "set"  # a bare list: unordered, like a set
    else:
        return None
    if not 2 <= len(parts) <= _MAX_ELEMENTS:
        return None
    if kind not in ("set", "()") and len(parts) != 2:
        return None
    vals = [_radical(x) for x in parts]
    if any(v is None for v in vals):
        return None
    # whether every element is written as an integer: math-verify reads `(2, 2)` and `(2.0, 2)` differently
    return (kind, tuple(vals), all(_INT_RE.fullmatch(x) for x in parts))


def _rad_float(v: _Value) -> float:
    return float(v[0]) * (v[1] ** 0.5) * (3.141592653589793 if v[2] else 1.0)


def _apart(a: _Value, b: _Value) -> bool | None:
    """True: equal; False: too far apart for math-verify's rounding; None: too close to say."""
    if a == b:
        return True
    if abs(_rad_float(a) - _rad_float(b)) > 1e-4:
        return False
    return None


def _structure_verdict(x: tuple | None, y: tuple | None) -> bool | None:
    if x is None or y is None:
        return None
    if x[0] == "infword" or y[0] == "infword":
        # math-verify may read `inf` / `oo` inside the word as infinity: the word is then
        # ∞ times a product of symbols, else a product of symbols. A letter outside those
        # of inf/infinity/oo and the constants e, i, pi is a free symbol either way, so the
        # word is no finite constant, set or tuple, and no product of other letters.
        if x[0] == y[0]:
            return None
        w, other = (x, y) if x[0] == "infword" else (y, x)
        if not set(w[1]) - set("infty" + "eop"):
            return None
        if other[0] == "word":
            return False if sorted(w[1].replace("i", "")) != sorted(other[1].replace("i", "")) else None
        return False
    if x[0] == "word" or y[0] == "word":
        if x[0] == y[0] == "word":
            # a word is a product of one-letter symbols to math-verify: different letter
            # counts (ignoring `i`, whose powers cycle) are different products
            a, b = x[1], y[1]
            return False if sorted(a.replace("i", "")) != sorted(b.replace("i", "")) else None
        w = x[1] if x[0] == "word" else y[1]
        # a product with a free symbol is never a constant, a set or a tuple of constants
        return False if set(w) - set("eiop") else None
    if x[0] == "num" and y[0] == "num":
        return _apart(x[1], y[1])
    if x[0] == "num" or y[0] == "num":
        return None
    xs, ys = x[1], y[1]
    if x[0] == "set" or y[0] == "set":
        if x[0] != y[0]:
            return None
        if set(xs) == set(ys):
            return True
        for u in set(xs) ^ set(ys):
            for v in list(xs) + list(ys):
                if u != v and _apart(u, v) is None:
                    return None
        return False
    if len(xs) != 2 or len(ys) != 2:  # tuples of three or more: element by element
        if x[0] != y[0] or len(xs) != len(ys):
            return None
        verdicts = [_apart(u, v) for u, v in zip(xs, ys)]
        if all(v is True for v in verdicts):
            return True
        return False if any(v is False for v in verdicts) else None
    # Two ends in brackets, as math-verify reads them: an interval when the left end is the
    # smaller; else `(a, b)` and `[a, b]` are tuples and `[a, b)`, `(a, b]` are empty (every
    # empty set equals every other). Ends too close to order are left to it.
    rx, ry = _pair_reading(x[0], xs, x[2]), _pair_reading(y[0], ys, y[2])
    if rx is None or ry is None:
        return None
    if rx[0] != ry[0]:
        return False
    if rx[0] == "empty":
        return True
    if rx[0] == "interval" and rx[1] != ry[1]:
        return False  # same ends, other brackets, or other ends: different sets
    verdicts = [_apart(u, v) for u, v in zip(rx[2], ry[2])]
    if all(v is True for v in verdicts):
        return True
    return False if any(v is False for v in verdicts) else None


def _pair_reading(brackets: str, ends: tuple, integers: bool) -> tuple | None:
    """math-verify's reading of two ends in brackets: ``("interval", brackets, ends)``,
    ``("tuple", "", ends)``, ``("point", "", (a,))`` (`[a, a]`) or ``("empty", "", ())``;
    ``None`` when the ends are too close to order. Equal ends are read only when both are
    written as integers: to math-verify `(2.0, 2)` equals `(2.0, 2]`, while `(2, 2)` does not
    equal `(2, 2]`."""
    a, b = ends
    if a == b and integers:
        if brackets == "()":
            return ("tuple", "", ends)
        return ("point", "", (a,)) if brackets == "[]" else ("empty", "", ())
    fa, fb = _rad_float(a), _rad_float(b)
    if abs(fa - fb) <= 1e-4:
        return None
    if fa < fb:
        return ("interval", brackets, ends)
    return ("tuple", "", ends) if brackets in ("()", "[]") else ("empty", "", ())


# Polynomials in one variable with rational coefficients, decided by expanding both sides:
# `(x+7)^2` against `x^2+14x+49`. Only the notations whose reading math-verify shares with
# algebra: integer literals, one lower-case letter that sympy gives no meaning (not e, i, o
# or p), + - * \cdot \times, implicit products, parentheses, \frac{..}{constant}, and
# integer powers written `^d` or `^{digits}` (`x^10` is x^1·0 in LaTeX and x^10 to
# math-verify: not decided). A bare letter is left to math-verify, which reads `x` and `x^1`
# as different answers.
_POLY_TOKEN_RE = re.compile(r"\d{1,12}|[a-z]|\\cdot|\\times|\\frac|[-+*^(){}]")
_POLY_VARS = frozenset("abcdfghjklmnqrstuvwxyz")
_POLY_MAX_DEGREE = 30


class _NotPolynomial(Exception):
    pass


def _poly_tokens(s: str) -> list[str] | None:
    tokens, pos = [], 0
    for m in _POLY_TOKEN_RE.finditer(s):
        if m.start() != pos:
            return None
        tokens.append(m.group())
        pos = m.end()
    return tokens if pos == len(s) and tokens else None


def _poly_mul(a: dict[int, Fraction], b: dict[int, Fraction]) -> dict[int, Fraction]:
    out: dict[int, Fraction] = {}
    for i, u in a.items():
        for j, v in b.items():
            if i + j > _POLY_MAX_DEGREE:
                raise _NotPolynomial
            out[i + j] = out.get(i + j, 0) + u * v
    return {k: v for k, v in out.items() if v}


def _poly_add(a: dict[int, Fraction], b: dict[int, Fraction], sign: int = 1) -> dict[int, Fraction]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
    return {k: v for k, v in out.items() if v}


def _polynomial(s: str) -> tuple[str | None, dict[int, Fraction]] | None:
    """(variable or None, {degree: coefficient}) of a polynomial in at most one letter, else None."""
    tokens = _poly_tokens(s)
    if tokens is None or len(tokens) > 120:
        return None
    letters = {t for t in tokens if len(t) == 1 and t.isalpha()}
    if len(letters) > 1 or not letters <= _POLY_VARS:
        return None
    var = next(iter(letters), None)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(want: str | None = None) -> str:
        nonlocal pos
        t = peek()
        if t is None or (want is not None and t != want):
            raise _NotPolynomial
        pos += 1
        return t

    def expr(depth: int) -> dict[int, Fraction]:
        if depth > 20:
            raise _NotPolynomial
        sign = -1 if peek() == "-" else 1
        if peek() in ("-", "+"):
            take()
        total = _poly_add({}, term(depth), sign)
        while peek() in ("+", "-"):
            sign = 1 if take() == "+" else -1
            total = _poly_add(total, term(depth), sign)
        return total

    def term(depth: int) -> dict[int, Fraction]:
        value = power(depth)
        while True:
            t = peek()
            if t in ("*", "\\cdot", "\\times"):
                take()
            elif t is None or t in ("+", "-", ")", "}", "^"):
                return value
            elif t.isdigit():  # (x+1)2: not a reading math-verify is known to share
                raise _NotPolynomial
            value = _poly_mul(value, power(depth))

    def power(depth: int) -> dict[int, Fraction]:
        base = atom(depth)
        if peek() != "^":
            return base
        take("^")
        if peek() == "{":
            take("{")
            e = take()
            take("}")
        else:
            e = take()
            if len(e) != 1:  # x^10
                raise _NotPolynomial
        if not e.isdigit() or int(e) > _POLY_MAX_DEGREE or peek() == "^":  # x^2^3
            raise _NotPolynomial
        out: dict[int, Fraction] = {0: Fraction(1)}
        for _ in range(int(e)):
            out = _poly_mul(out, base)
        return out

    def atom(depth: int) -> dict[int, Fraction]:
        t = take()
        if t.isdigit():
            nxt = peek()
            if nxt is not None and nxt.isdigit():
                raise _NotPolynomial
            return {0: Fraction(int(t))} if int(t) else {}
        if t in _POLY_VARS:
            nxt = peek()
            if nxt is not None and nxt.isdigit():  # x3: a product to math-verify, a subscript to a reader
                raise _NotPolynomial
            return {1: Fraction(1)}
        if t == "(":
            inner = expr(depth + 1)
            take(")")
            return inner
        if t == "\\frac":
            take("{")
            num = expr(depth + 1)
            take("}")
            take("{")
            den = expr(depth + 1)
            take("}")
            if set(den) != {0}:  # only division by a nonzero constant keeps a polynomial
                raise _NotPolynomial
            return {k: v / den[0] for k, v in num.items()}
        raise _NotPolynomial

    try:
        coefficients = expr(0)
    except _NotPolynomial:
        return None
    if pos != len(tokens):
        return None
    return var, coefficients


def _polynomial_verdict(p: str, g: str, x: tuple | None, y: tuple | None) -> bool | None:
    """Two polynomials in the same single letter (or one of them constant): equal exactly
    when their expansions are. A word against a polynomial: a product of letters with a free
    letter the polynomial does not use is never equal to it."""
    if x is not None and x[0] in ("word", "infword") or y is not None and y[0] in ("word", "infword"):
        word, other = (x[1], g) if x is not None and x[0] in ("word", "infword") else (y[1], p)
        if len(word) < 2:
            return None
        poly = _polynomial(other)
        if poly is None or poly[0] is None:
            return None
        return False if set(word) - set("infty" + "eop") - {poly[0]} else None
    a, b = _polynomial(p), _polynomial(g)
    if a is None or b is None:
        return None
    if a[0] is None and b[0] is None:  # constants: the number paths' business
        return None
    if a[0] is not None and b[0] is not None and a[0] != b[0]:
        return None
    if len(p) == 1 or len(g) == 1:  # a bare letter or digit
        return None
    return a[1] == b[1]


# --------------------------------------------------------------------------------------
# Worker process (runs math-verify; killed on overrun)
# --------------------------------------------------------------------------------------

# `python -c` bootstrap: load this file by path (not `import entropy_rl`, whose package
# __init__ may grow heavy imports) and enter the worker loop. No __main__ re-import, no
# pickling: multiprocessing's spawn would re-run an unguarded caller script in the child.
_BOOTSTRAP = (
    "import sys, importlib.util\n"
    "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
    "spec = importlib.util.spec_from_file_location('_entropy_rl_answers_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main()\n"
)


def _worker_main() -> None:  # pragma: no cover - runs in the child process
    """Worker loop: JSON lines in (``[req_id, [[pred, gold], ...]]``), one JSON line out
    per pair (``[req_id, i, bool]``), flushed as soon as that pair is decided."""
    import logging
    import signal
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns our lifetime
    # The protocol gets a private copy of stdout; fd 1 goes to stderr so a stray print
    # in a library cannot corrupt it.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    inp = sys.stdin.buffer

    parent = os.getppid()

    def _watch_parent() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=_watch_parent, daemon=True).start()

    limit = int(os.environ.get("_ENTROPY_RL_WORKER_AS_LIMIT", "0"))
    if limit > 0:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass

    warnings.filterwarnings("ignore")
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout/parse failure
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    cache: OrderedDict[str, list] = OrderedDict()

    def _parse(s: str) -> list:
        hit = cache.get(s)
        if hit is not None:
            cache.move_to_end(s)
            return hit
        # Wrapping in \boxed{} makes math-verify take the whole answer as one LaTeX span.
        res = parse("\\boxed{" + s + "}", extraction_config=config, parsing_timeout=None)
        cache[s] = res
        if len(cache) > 2048:
            cache.popitem(last=False)
        return res

    def _check(pred: str, gold: str, mark=lambda stage: None) -> bool | None:
        # `mark` reports progress ("p": pred parsed, "g": gold parsed) so that the parent,
        # when it kills us at the deadline, knows which string the time went into. The pred
        # goes first: an answer math-verify cannot read is False whatever the gold, so the
        # gold's parse (often the only symbolic work of a prompt) is skipped for it.
        try:
            p = _parse(pred)
            mark("p")
            if not p:
                return False
            g = _parse(gold)
            mark("g")
            if not g:
                return False
            return bool(verify(g, p, timeout_seconds=None))
        except (RecursionError, MemoryError):
            return None  # a resource bound was hit: reported like a timeout
        except Exception:
            return False

    _check("\\frac{1}{2}", "0.5")  # warm-up: loads the ANTLR grammar and sympy caches
    out.write(b'["ready"]\n')
    for line in inp:
        try:
            req_id, pairs = json.loads(line)
        except ValueError:
            continue
        for i, (pred, gold) in enumerate(pairs):

            def mark(stage: str, i: int = i) -> None:
                out.write(b'[%d,%d,"%s"]\n' % (req_id, i, stage.encode()))

            r = _check(pred, gold, mark)
            out.write(json.dumps([req_id, i, r]).encode() + b"\n")
    os._exit(0)


class _WorkerDied(Exception):
    """The worker exited (crash, OOM, segfault) while we waited on it."""


# Outcome codes of one pair in the pool (an int list, filled as answers arrive).
_FALSE, _TRUE = 0, 1
_LIMIT = -1  # overran its deadline, hit the worker's memory/recursion bound, crashed it,
#             or shares a string blamed for that: verdict False, reported as a timeout
_UNDECIDED = -2  # the call's total budget ran out first: False, reported, not cached
_PROBE = "0"  # trivial gold a suspect string is checked against alone (see _WorkerPool.check)
_PROBE_MIN_TIMEOUT = 0.25  # an innocent string checks against "0" in ~1-50 ms (fresh worker)


class _Worker:
    """One warm math-verify subprocess talking JSON lines over pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["_ENTROPY_RL_WORKER_AS_LIMIT"] = str(WORKER_MEMORY_LIMIT)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if os.environ.get("ENTROPY_RL_VERIFY_QUIET", "1") == "1" else None,
            env=env,
            close_fds=True,
            start_new_session=True,  # a terminal Ctrl-C does not reach it
        )
        self._fd = self.proc.stdout.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._buf = bytearray()
        self.ready = False
        self._next_id = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readline(self, deadline: float) -> bytes | None:
        """One line, or ``None`` at the deadline; raises :class:`_WorkerDied` on EOF."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._poll.poll(max(1, int(remaining * 1000 + 0.999))):
                continue  # loop re-checks the deadline
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise _WorkerDied
            self._buf += chunk

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = self._readline(deadline)
                if line is None:
                    raise RuntimeError(f"answer-check worker did not start within {timeout:.0f}s")
                if line.strip() == b'["ready"]':
                    self.ready = True
                    return
        except _WorkerDied:
            raise RuntimeError(
                "answer-check worker exited during start-up (is math-verify installed? "
                "set ENTROPY_RL_VERIFY_QUIET=0 to see its stderr)"
            ) from None

    def run(
        self, pairs: Sequence[tuple[str, str]], timeout: float, out: list[int], total_deadline: float | None = None
    ) -> tuple[int, int, bool]:
        """Send ``pairs`` and fill ``out[i]`` (:data:`_TRUE` / :data:`_FALSE` /
        :data:`_LIMIT`); each pair gets ``timeout`` seconds, all of them together end by
        ``total_deadline`` (a ``time.monotonic()`` value) if given.

        Returns ``(answered, stage, cut)``: fewer than ``len(pairs)`` answered means pair
        ``answered`` overran (the caller kills this worker); ``stage`` is how far that pair
        got (0: nothing, 1: pred parsed, 2: both parsed, so verify hung); ``cut`` is true
        when the stop came from ``total_deadline``, not from the pair's own budget. A crash
        raises ``_WorkerDied(answered, stage)``.
        """
        self._next_id += 1
        req_id = self._next_id
        data = json.dumps([req_id, [list(p) for p in pairs]]).encode() + b"\n"
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerDied(0, 0) from None
        done = stage = 0
        budget = max(timeout - _KILL_MARGIN, 0.5 * timeout)
        total = None if total_deadline is None else total_deadline - _KILL_MARGIN
        pair_deadline = time.monotonic() + budget
        while done < len(pairs):
            deadline = pair_deadline if total is None else min(pair_deadline, total)
            try:
                line = self._readline(deadline)
            except _WorkerDied:
                raise _WorkerDied(done, stage) from None
            if line is None:
                # cut by the total budget only if that left the pair short of its own budget
                return done, stage, total is not None and total < pair_deadline - 0.05 * budget
            try:
                rid, i, r = json.loads(line)
            except (ValueError, TypeError):
                continue
            if rid != req_id or i != done:
                continue
            if isinstance(r, str):  # progress mark: "p" pred parsed, "g" gold parsed
                stage = 1 if r == "p" else 2
                continue
            out[i] = _LIMIT if r is None else (_TRUE if r else _FALSE)
            done += 1
            stage = 0
            pair_deadline = time.monotonic() + budget
        return done, 0, False

    def kill(self) -> None:
        """Kill and reap (no zombie); closes the pipes."""
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        """Polite shutdown: EOF on stdin, then kill if it lingers."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class _WorkerPool:
    """Up to ``max_workers`` warm workers, created on demand; one caller per worker.

    Thread-safe. A worker that overruns or dies is killed and replaced at once by the
    warm spare (``keep_spare``), and a new spare warms up in the background.
    """

    def __init__(self, max_workers: int, keep_spare: bool = KEEP_SPARE) -> None:
        self.max_workers = max(1, max_workers)
        self.keep_spare = keep_spare
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._spare: _Worker | None = None  # started, not counted in _live until taken
        self._live = 0
        self._closed = False
        self._pid = os.getpid()
        self.restarts = 0

    def pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._idle]

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("answer-check workers are shut down")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.max_workers:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            return self._fresh()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _fresh(self) -> _Worker:
        """A new worker for a slot the caller owns: the spare if there is one (already
        warm, or warming), then a new spare is started to take its place."""
        with self._cond:
            w, self._spare = self._spare, None
        if w is None or w.proc.poll() is not None:
            if w is not None:
                w.kill()
            w = _Worker()
        if self.keep_spare:
            spare = _Worker()
            with self._cond:
                if self._spare is None and not self._closed:
                    self._spare, spare = spare, None
            if spare is not None:
                spare.kill()
        return w

    def _release(self, w: _Worker) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(w)
                self._cond.notify()
                return
            self._live -= 1
        w.close()

    def _replace(self, w: _Worker) -> _Worker:
        """Kill ``w`` and start its successor in the same slot. On failure the caller
        still owns the slot (and releases it in its error path)."""
        w.kill()
        with self._cond:
            self.restarts += 1
            if self._closed:
                raise RuntimeError("answer-check workers are shut down")
        return self._fresh()

    def check(self, pairs: Sequence[tuple[str, str]], timeout: float, total_timeout: float | None = None) -> list[int]:
        """Outcome codes (``_TRUE``/``_FALSE``/``_LIMIT``/``_UNDECIDED``) for normalized
        ``(pred, gold)`` pairs: ``timeout`` seconds each, ``total_timeout`` for the time
        spent checking in all (waits for a worker's start-up are not counted).

        One hostile string must not cost ``timeout`` once per pair it is in (a clusterer
        pairs it with every other answer): a pair that overruns blames the string its time
        went into, from the worker's progress marks (pred parse, gold parse), and every
        later pair holding a blamed string is ``_LIMIT`` at once. When ``verify`` itself
        hung, the side already seen in a completed check is innocent; if neither is known,
        the gold side is probed alone against ``"0"`` (~1-50 ms if innocent; at most
        ``max(timeout / 4, 0.25)``) when later pairs hold either string, which settles it.
        So a call spends at most ``timeout`` plus one probe per hostile string.
        """
        n_pairs = len(pairs)
        work = list(pairs)  # pairs, then the probes this call adds
        probe_timeout = min(timeout, max(_PROBE_MIN_TIMEOUT, timeout / 4))
        out = [_UNDECIDED] * n_pairs
        budget_left = float("inf") if total_timeout is None else float(total_timeout)
        blamed: set[str] = set()
        good: set[str] = {_PROBE}  # strings in a check that completed: not the culprit
        suspects: list[tuple[str, str]] = []  # overran in verify, culprit not yet known
        todo: deque[int] = deque(range(n_pairs))
        w = self._acquire()
        try:
            retried = False
            while todo and budget_left > 0:
                chunk: list[int] = []
                while todo and len(chunk) < _BATCH_CHUNK:
                    if todo[0] >= n_pairs:  # a probe runs alone: its verdict gates the rest
                        if not chunk:
                            chunk.append(todo.popleft())
                        break
                    k = todo.popleft()
                    p, g = work[k]
                    if p in blamed or g in blamed:
                        out[k] = _LIMIT
                    else:
                        chunk.append(k)
                if not chunk:
                    continue
                w.wait_ready(STARTUP_TIMEOUT)
                res = [_UNDECIDED] * len(chunk)
                t0 = time.monotonic()
                total_deadline = None if budget_left == float("inf") else t0 + budget_left
                died = False
                try:
                    t = timeout if chunk[0] < n_pairs else probe_timeout
                    n, stage, cut = w.run([work[k] for k in chunk], t, res, total_deadline)
                except _WorkerDied as e:
                    (n, stage), cut, died = e.args, False, True
                budget_left -= time.monotonic() - t0
                for j in range(n):
                    if chunk[j] < n_pairs:
                        out[chunk[j]] = res[j]
                    if res[j] != _LIMIT:
                        good.update(work[chunk[j]])
                if suspects and n:  # an innocent side now known: blame the other one
                    still = []
                    for p, g in suspects:
                        if p in good or g in good:
                            blamed.add(g if p in good else p)
                        else:
                            still.append((p, g))
                    suspects = still
                if n == len(chunk):
                    continue
                if died and n == 0 and stage == 0 and not retried:
                    # Possibly dead before we wrote (OOM-killed while idle): retry once on
                    # a fresh worker; a pair that crashes it twice is _LIMIT.
                    retried = True
                    todo.extendleft(reversed(chunk))
                    w = self._replace(w)
                    continue
                todo.extendleft(reversed(chunk[n + 1 :]))
                w = self._replace(w)
                if cut:
                    break  # chunk[n] and the rest stay _UNDECIDED
                k = chunk[n]
                if k < n_pairs:
                    out[k] = _LIMIT
                p, g = work[k]
                if stage == 0:
                    blamed.add(p)  # pred's parse hung
                elif stage == 1:
                    blamed.add(g)  # gold's parse hung
                elif g in good or p in good:
                    blamed.add(p if g in good else g)
                elif any(x in work[j] for j in todo if j < n_pairs for x in (p, g)):
                    # pairs still to come hold one of them: probe the gold side alone
                    suspects.append((p, g))
                    work.append((g, _PROBE))
                    todo.appendleft(len(work) - 1)
        except BaseException:
            self._discard(w)
            raise
        self._release(w)
        return out

    def _discard(self, w: _Worker) -> None:
        """Kill a worker that will not be returned to the pool, and free its slot."""
        w.kill()
        with self._cond:
            self._live -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            if self._spare is not None:
                idle.append(self._spare)
                self._spare = None
            self._cond.notify_all()
        for w in idle:
            w.close()


_pool: _WorkerPool | None = None
_pool_lock = threading.Lock()
_atexit_registered = False


def _get_pool() -> _WorkerPool:
    global _pool, _atexit_registered
    pool = _pool
    if pool is not None and pool._pid == os.getpid():
        return pool
    with _pool_lock:
        if _pool is None or _pool._pid != os.getpid():
            _pool = _WorkerPool(MAX_WORKERS)
            if not _atexit_registered:
                atexit.register(shutdown_workers)
                _atexit_registered = True
        return _pool


def _reset_after_fork() -> None:
    # A forked child must not talk over its parent's pipes: it drops its copies of them
    # (the parent's workers live on) and gets its own pool lazily.
    global _pool, _pool_lock, _cache_lock
    if _pool is not None:
        for w in _pool._idle + ([_pool._spare] if _pool._spare is not None else []):
            for f in (w.proc.stdin, w.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            w.proc.returncode = 0  # not our child: keep Popen.__del__ from tracking it
    _pool = None
    _pool_lock = threading.Lock()
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def warm_up() -> None:
    """Start a worker now and wait until it is ready (~0.5-2 s), so the first real
    check pays no start-up; e.g. call it when a reward worker is created."""
    pool = _get_pool()
    w = pool._acquire()
    try:
        w.wait_ready(STARTUP_TIMEOUT)
    except BaseException:
        pool._discard(w)
        raise
    pool._release(w)


def shutdown_workers() -> None:
    """Stop all worker processes (registered with ``atexit``; safe to call twice).
    A later check starts a fresh pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None and pool._pid == os.getpid():
        pool.close()


# --------------------------------------------------------------------------------------
# Public equivalence API
# --------------------------------------------------------------------------------------

_CACHE_SIZE = 65536
_cache: OrderedDict[tuple[str, str], int] = OrderedDict()  # outcome codes, _UNDECIDED never
_cache_lock = threading.Lock()


def _cache_get(key: tuple[str, str]) -> int | None:
    with _cache_lock:
        r = _cache.get(key)
        if r is not None:
            _cache.move_to_end(key)
        return r


def _cache_put(key: tuple[str, str], value: int) -> None:
    with _cache_lock:
        _cache[key] = value
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _pair_key(x: object) -> str:
    """The normal form :func:`check_pairs` compares and caches (the raw string past the length bound)."""
    s = x if isinstance(x, str) else str(x)
    if len(s) > MAX_NORMALIZE_CHARS:
        return s.strip()
    return normalize_answer(s)


class PairChecks(NamedTuple):
    """Verdicts of :func:`check_pairs`, one entry per pair."""

    #: ``pred`` equivalent to ``gold``.
    equivalent: list[bool]
    #: No real verdict: the check overran ``timeout``, hit the worker's memory or
    #: recursion bound, crashed the worker, held a string blamed for one of those, or
    #: was not reached within ``total_timeout``. Its verdict is ``False``. A cached
    #: verdict from such a check is reported again (the reward is still not a real one).
    timed_out: list[bool]


def check_pairs(
    pairs: Iterable[tuple[str | None, str | None]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = None,
) -> PairChecks:
    """:func:`equivalent_pairs` that also says which verdicts come from a timeout.

    Each pair gets ``timeout`` seconds; ``total_timeout`` (if given) bounds the time
    spent checking in the whole call, after which the remaining pairs are ``False`` and
    timed out (not cached: they may be fine). Waiting for a worker's start-up is not
    counted in either. A string blamed for an overrun costs ``timeout`` once per call,
    not once per pair it appears in (see ``_WorkerPool.check``).
    """
    pairs = list(pairs)
    out: list[int | None] = [None] * len(pairs)
    todo: dict[tuple[str, str], list[int]] = {}
    for idx, (pred, gold) in enumerate(pairs):
        if pred is None or gold is None:
            out[idx] = _FALSE
            continue
        p, g = _pair_key(pred), _pair_key(gold)
        verdict = _fast_verdict(p, g)
        code = (_TRUE if verdict else _FALSE) if verdict is not None else _cache_get((p, g))
        if code is not None:
            out[idx] = code
        else:
            todo.setdefault((p, g), []).append(idx)
    if todo:
        keys = list(todo)
        results = _get_pool().check(keys, timeout, total_timeout)
        for key, r in zip(keys, results):
            if r != _UNDECIDED:
                _cache_put(key, r)
            for idx in todo[key]:
                out[idx] = r
    return PairChecks([r == _TRUE for r in out], [r < 0 for r in out])


def equivalent_pairs(
    pairs: Iterable[tuple[str | None, str | None]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = None,
) -> list[bool]:
    """:func:`is_equivalent` for many ``(pred, gold)`` pairs in one worker round-trip.

    Pairs decided by normal form or cache never reach the worker; the rest are
    de-duplicated and streamed to one worker, each pair bounded by ``timeout`` seconds
    (an overrunning pair is ``False``; the worker is replaced and the batch goes on), the
    whole call by ``total_timeout`` if given. Meant for the semantic-entropy clusterer
    (up to M^2/2 pairs of distinct answers). :func:`check_pairs` also reports timeouts.
    """
    return check_pairs(pairs, timeout=timeout, total_timeout=total_timeout).equivalent


def is_equivalent(pred: str | None, gold: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether final answer ``pred`` equals ``gold`` mathematically (see module doc).

    Fast path: equal normal forms, or two plain numbers, decide without the worker.
    Otherwise math-verify runs in a warm worker process bounded by ``timeout`` seconds
    (overrun -> killed, replaced, ``False``). Safe from any thread and inside a running
    asyncio loop (it blocks that loop for at most ``timeout``). ``None`` -> ``False``.
    Waiting for a free worker (all ``MAX_WORKERS`` busy) or for a cold worker's start-up
    is not counted in ``timeout``.
    """
    return equivalent_pairs([(pred, gold)], timeout=timeout)[0]
