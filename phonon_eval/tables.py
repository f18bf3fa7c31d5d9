"""What a summary table shows: which materials (all, or for a large run the worst and the
failed), and failure reasons on one line.

A table of 10,000 rows is read by nobody; the aggregate row and the worst cases are. Rows are
chosen from material-indexed variables only, so a lazily opened results file stays unread.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REASON_WIDTH", "WORST", "reason", "shown_rows"]

WORST = 20
"""Rows of each kind a table shows by default (`--table worst`)."""

REASON_WIDTH = 80
"""Characters of a failure reason a table shows; the file keeps the whole text (`error`)."""


def shown_rows(ok: np.ndarray, score: np.ndarray, limit: int | None = WORST) -> tuple[list[int], int]:
    """The material indices to show, and how many are left out.

    Args:
        ok: (M,) bool, the materials with results.
        score: (M,) how bad each result is (larger is worse; NaN counts as worst).
        limit: at most this many results, the worst first, and this many of the rest (failed,
            unstable), in file order; None: every material in file order.
    """
    ok = np.asarray(ok, dtype=bool)
    if limit is None or len(ok) <= 2 * limit:
        return list(range(len(ok))), 0
    good = np.flatnonzero(ok)
    score = np.nan_to_num(np.asarray(score, dtype=float)[good], nan=np.inf)
    worst = good[np.argsort(-score, kind="stable")[:limit]].tolist()
    rest = np.flatnonzero(~ok)[:limit].tolist()
    shown = worst + rest
    return shown, len(ok) - len(shown)


def reason(text: str, width: int = REASON_WIDTH) -> str:
    """A failure reason on one line, cut to `width` characters (a traceback-long reason would
    otherwise fill the terminal)."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"

