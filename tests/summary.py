"""Lines tests add to the end of the run's terminal summary (figures the lead quotes)."""

from __future__ import annotations

LINES: list[str] = []


def report(line: str) -> None:
    """Print ``line`` in the final summary of this pytest run (also under ``-q``)."""
    LINES.append(line)
