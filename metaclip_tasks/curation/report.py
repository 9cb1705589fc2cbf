"""Entry-count reports of a pool: the paper's Fig. 2 (cumulative counts from tail to head, raw
and capped at t) and Table 3 (top entries), plus tail ratios at standard values of t."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from metaclip_tasks.curation.balancing import tail_ratio

STANDARD_TS = (1_000, 5_000, 20_000, 60_000, 170_000)  # the t values the paper discusses


class Writable(Protocol):
    """A binary file open for writing, such as an artifact's output file (matplotlib saves to it)."""

    def write(self, data: bytes) -> int: ...


def cumulative_tail_to_head(counts: np.ndarray, t: int | None = None) -> np.ndarray:
    """Cumulative sum of counts over entries sorted from tail to head, optionally capped at t."""
    ordered = np.sort(np.asarray(counts, dtype=np.float64))
    if t is not None:
        ordered = np.minimum(ordered, t)
    return np.cumsum(ordered)


def tail_ratios(counts: np.ndarray, ts: Sequence[int] = STANDARD_TS) -> dict[str, float]:
    """Tail ratio at each t (keys are strings for JSON)."""
    return {str(t): tail_ratio(counts, t) for t in ts}


def plot_entry_counts(counts: np.ndarray, t: int, path: str | os.PathLike | Writable, title: str) -> None:
    """Fig. 2: cumulative counts from tail to head, raw (t = inf) and balanced (capped at t)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, len(counts) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(x, cumulative_tail_to_head(counts), label="raw / unbalanced (t = inf)")
    ax.plot(x, cumulative_tail_to_head(counts, t), label=f"balanced (t = {t:,})")
    head = int((np.asarray(counts) >= t).sum())
    ax.axvline(len(counts) - head, color="grey", linestyle=":", label=f"tail / head transition ({head:,} head entries)")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("entries sorted by count, tail to head")
    ax.set_ylabel("cumulative count of matches")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)  # type: ignore[arg-type]  # matplotlib writes to any object with write()
    plt.close(fig)


def plot_ablation(rows: Sequence[dict], path: str | os.PathLike | Writable, title: str) -> None:
    """A t ablation: curated size and, when trained, zero-shot top-1 against t (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r["t"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(ts, [r["curated"] for r in rows], "o-", label="curated pairs")
    ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("curated pairs")
    scored = [(r["t"], r["zero_shot_top1"]) for r in rows if r.get("zero_shot_top1") is not None]
    if scored:
        right = ax.twinx()
        right.plot(*zip(*scored, strict=True), "s--", color="tab:orange", label="zero-shot top-1")
        right.set_ylabel("zero-shot top-1")
        right.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)  # type: ignore[arg-type]  # matplotlib writes to any object with write()
    plt.close(fig)
