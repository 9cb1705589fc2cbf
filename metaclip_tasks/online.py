"""Balancing in the training loader (paper A.2): each epoch re-draws which head pairs to train on.

The download holds a superset of the subset to train on: the curated subset of a larger cap
``download_t`` (``t`` itself, a budget per entry, or every matched pair of the pool).  A filter
inserted into open_clip's webdataset pipeline, right after the tar files are read, keeps a
sample by the balancing rule on its ``json`` (uid, matched entry ids):

- epoch 0 keeps pair i when some entry e has ``u(seed, uid_i, e) < min(1, t / count[e])``: exactly
  the offline ``balance`` stage's subset for (t, seed), restricted to the images that downloaded;
- epoch k > 0 draws with ``epoch_seed(seed, k)`` and the probabilities of the downloaded pool,
  ``min(1, t / min(count[e], download_t))``: a pair of a head entry was downloaded with
  ``min(1, download_t / count)``, so it reaches the training set with ``min(1, t / count)`` overall,
  as offline; a tail entry (count <= t) keeps every pair, every epoch.

Each complete pass of a loader worker over its shards appends ``{epoch, rank, worker, seen,
kept}`` to a JSON-lines file of its own, which the ``train`` stage sums per epoch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_tasks.balancing import entry_probabilities, epoch_seed, keep_mask, keep_probabilities
from metaclip_tasks.errors import CurationError

CHUNK = 256  # samples decided together: one vectorised keep_mask per chunk
RULE_FLAG = "--metaclip-balance-rule"
LOG_FLAG = "--metaclip-balance-log"
ENTRIES_TYPE = pa.list_(pa.int32())


@dataclass(frozen=True)
class LoaderRule:
    """The loader's balancing rule: epoch 0's probabilities (offline), later epochs', the seed."""

    first: np.ndarray  # min(1, t / count): the offline rule
    later: np.ndarray  # min(1, t / min(count, download_t)): the rule on the downloaded superset
    seed: int

    def epoch(self, epoch: int) -> tuple[np.ndarray, int]:
        """The probabilities and seed of one epoch."""
        return (self.first, self.seed) if epoch == 0 else (self.later, epoch_seed(self.seed, epoch))

    def keep(
        self, uids: Sequence[str] | pa.Array, entries: Sequence[Sequence[int]] | pa.Array, epoch: int
    ) -> np.ndarray:
        """Which of these pairs the loader trains on in ``epoch``."""
        probs, seed = self.epoch(epoch)
        return keep_mask(uids, entries, probs, seed)

    def save(self, path: Path) -> None:
        np.savez(path, first=self.first, later=self.later, seed=np.uint64(self.seed))

    @classmethod
    def load(cls, path: str | Path) -> LoaderRule:
        with np.load(path) as f:
            return cls(f["first"], f["later"], int(f["seed"]))


def loader_rule(counts: np.ndarray, t: int, download_t: int, seed: int) -> LoaderRule:
    """The rule for training at ``t`` on a download of the subset for ``download_t`` (same seed);
    a download smaller than the subset to train on is refused."""
    if t > download_t and int(counts.max()) > download_t:
        raise CurationError(f"online balancing at t={t} needs a download of a subset with t >= {t} "
                            f"(or every matched pair); this download holds the subset for t={download_t}")  # fmt: skip
    capped = np.minimum(counts, np.asarray(download_t, dtype=counts.dtype))
    return LoaderRule(entry_probabilities(counts, t), entry_probabilities(capped, t), seed)


def expected_kept(rule: LoaderRule, entries: pa.Array) -> tuple[float, float]:
    """The expected number of downloaded pairs an epoch k > 0 keeps and its standard deviation."""
    q = keep_probabilities(entries, rule.later)
    return math.fsum(q), math.sqrt(math.fsum(q * (1 - q)))


def sample_entries(sample: dict[str, Any]) -> tuple[str, list[int]]:
    """(uid, matched entry ids) of a webdataset sample, from the ``json`` img2dataset wrote."""
    meta = json.loads(sample["json"])
    entries = meta["matched_entry_ids"]
    return meta["uid"], json.loads(entries) if isinstance(entries, str) else entries


class EpochFilter:
    """A webdataset pipeline stage keeping the samples the rule keeps in the current epoch;
    ``epoch`` is open_clip's ``SharedEpoch`` (or anything with ``get_value()``)."""

    def __init__(self, rule: LoaderRule, epoch: Any, log_dir: str | Path | None = None) -> None:
        self.rule, self.shared_epoch, self.log_dir = rule, epoch, log_dir

    def __call__(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        epoch = self.shared_epoch.get_value()
        seen = kept = 0
        for chunk in _chunks(samples, CHUNK):
            uids, entries = zip(*map(sample_entries, chunk), strict=True)
            mask = self.rule.keep(pa.array(uids, pa.string()), pa.array(entries, ENTRIES_TYPE), epoch)
            seen, kept = seen + len(chunk), kept + int(mask.sum())
            yield from (s for s, k in zip(chunk, mask, strict=True) if k)
        self._report(epoch, seen, kept)

    def _report(self, epoch: int, seen: int, kept: int) -> None:
        """One line per complete pass: what this worker saw and kept."""
        if self.log_dir is None:
            return
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        rank, worker = int(os.environ.get("RANK", "0")), info.id if info else 0
        line = {"epoch": epoch, "rank": rank, "worker": worker, "seen": seen, "kept": kept}
        with open(Path(self.log_dir) / f"rank{rank}-worker{worker}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def kept_per_epoch(log_dir: Path) -> list[dict[str, int]]:
    """Per epoch, the samples seen and kept by every worker's first complete pass, summed."""
    first: dict[tuple[int, int, int], dict[str, int]] = {}
    for path in sorted(log_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            first.setdefault((record["epoch"], record["rank"], record["worker"]), record)
    totals: dict[int, dict[str, int]] = {}
    for (epoch, _, _), record in sorted(first.items()):
        total = totals.setdefault(epoch, {"epoch": epoch, "seen": 0, "kept": 0})
        total["seen"] += record["seen"]
        total["kept"] += record["kept"]
    return list(totals.values())


def install(rule_path: str, log_dir: str | None) -> None:
    """Make open_clip's webdataset training pipeline filter each epoch's samples by the rule."""
    from open_clip_train import data

    rule = LoaderRule.load(rule_path)
    original = data.get_wds_dataset

    def get_wds_dataset(args: Any, preprocess_img: Any, is_train: bool, epoch: int = 0, floor: bool = False,
                        tokenizer: Any = None) -> Any:  # fmt: skip
        info = original(args, preprocess_img, is_train, epoch=epoch, floor=floor, tokenizer=tokenizer)
        if is_train:
            pipeline = info.dataloader.pipeline[0].dataset.pipeline  # WebLoader(DataLoader(DataPipeline))
            pipeline.insert(
                pipeline.index(data.tarfile_to_samples_nothrow) + 1, EpochFilter(rule, info.shared_epoch, log_dir)
            )
        return info

    data.get_wds_dataset = get_wds_dataset


def split_flags(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """This package's loader flags (``--metaclip-balance-*=VALUE``) apart from open_clip's."""
    ours, rest = {}, []
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in (RULE_FLAG, LOG_FLAG):
            ours[name] = value
        else:
            rest.append(arg)
    return ours, rest


def download_cap(counts: np.ndarray, t: int, budget: int | None) -> int:
    """The t of the subset to download for training at ``t``: ``t`` itself without a budget, else the
    largest t' >= t whose bound ``sum_e min(count_e, t')`` on the subset's size fits the budget (the
    largest count, every matched pair, when they all fit); a budget below the subset is refused."""
    if budget is None:
        return t
    counts = np.asarray(counts, dtype=np.int64)

    def size(cap: int) -> int:
        return int(np.minimum(counts, cap).sum())

    if size(t) > budget:
        raise CurationError(f"download budget {budget:,} is below the subset for t={t} (up to {size(t):,} pairs)")
    low, high = t, max(t, int(counts.max()))
    while low < high:  # size() is non-decreasing in the cap: the largest cap within the budget
        middle = (low + high + 1) // 2
        low, high = (middle, high) if size(middle) <= budget else (low, middle - 1)
    return low
