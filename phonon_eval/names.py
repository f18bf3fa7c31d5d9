"""Messages for a name that is not there: say which known names come closest."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["not_found"]


def not_found(what: str, name: str, known: Sequence[str], where: str = "") -> str:
    """'no material mp-14 in results.nc; closest: mp-149, mp-140' (or the first few known names).

    Plain text, no repr quotes: the message is read by a person, often in a terminal.
    """
    place = f" in {where}" if where else ""
    if not known:
        return f"no {what} {name}{place}; it holds none"
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    if close:
        return f"no {what} {name}{place}; closest: {', '.join(close)}"
    shown = ", ".join(list(known)[:5]) + (f", ... ({len(known)} in all)" if len(known) > 5 else "")
    return f"no {what} {name}{place}; known: {shown}"
