"""Progress with rate and ETA for every long loop (scoring pass, evaluation, benchmarks): tqdm.

On a terminal it is tqdm's bar. Elsewhere (Ray worker logs, CI, files) each refresh becomes its
own line, at most every ``every_s`` seconds: tqdm's carriage-return redraws would otherwise
pile up in one log line that appears only when the loop ends.
"""

from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm

FORMAT = "[{desc}] {n_fmt}/{total_fmt} ({percentage:.1f}%) {rate_fmt} elapsed {elapsed} ETA {remaining}"


class _Lines:
    """A stream wrapper that writes every tqdm refresh as a line of its own."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "")
        if text.strip():
            self.stream.write(text.rstrip("\n") + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, what: str, stream: IO[str] | None = None, every_s: float = 5.0) -> tqdm:
    """A tqdm counter over ``total`` items labelled ``what``; ``.update(n)`` as work is done."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(
        total=total,
        desc=what,
        file=stream if tty else _Lines(stream),
        mininterval=every_s,
        bar_format=None if tty else FORMAT,
        dynamic_ncols=tty,
        leave=True,
    )
