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

Reports (``LOG_FLAG``): every loader process (a data-loader worker, or the trainer itself with
``--workers=0``; on each rank) appends to a JSON-lines file of its own, ``rank{r}-worker{w}.jsonl``,
one line ``{epoch, rank, worker, shard, seen, kept}`` per shard it read to the end in an epoch:
the samples of that shard the filter saw and kept.  A worker writes a shard once per epoch, and
:func:`kept_per_epoch` (the ``train`` stage's ``epochs`` figures) sums per epoch the first line of
each shard, so:

- the figures do not depend on how the shards are split over workers and ranks: with any number
  of workers they are those of ``--workers=0`` (the rule decides per (epoch, uid), not per worker);
- nothing is counted twice: open_clip's ``with_epoch`` makes each worker read its shards again and
  again until it has delivered its share of the epoch's batches, and every such pass decides the
  same samples;
- a shard is counted once a worker has read it to its end, even if open_clip then stops the worker
  (its share of batches delivered) before the end of its other shards; a shard that no worker read
  to its end in an epoch is not counted: that epoch's ``seen`` is then below the downloaded pairs
  and its ``shards`` below the shard count (with several workers, a worker holding more kept
  samples than its share of batches plus open_clip's 5,000-sample shuffle buffer stops early).

A worker whose complete pass keeps fewer samples than a batch fails at once: open_clip drops a
pass's last partial batch, so it would read its shards forever without yielding a batch.
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

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.curation.balancing import entry_probabilities, epoch_seed, keep_mask, keep_probabilities

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
        raise CurationError(
            f"online balancing at t={t} needs a download of a subset with t >= {t} "
            f"(or every matched pair); this download holds the subset for t={download_t}"
        )
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
    ``epoch`` is open_clip's ``SharedEpoch`` (or anything with ``get_value()``); with ``log_dir``, it
    reports each shard it reads to the end; with ``batch_size``, a pass keeping fewer samples fails."""

    def __init__(
        self, rule: LoaderRule, epoch: Any, log_dir: str | Path | None = None, batch_size: int | None = None
    ) -> None:
        self.rule, self.shared_epoch, self.log_dir, self.batch_size = rule, epoch, log_dir, batch_size
        self._reported: tuple[int, set[str]] = (-1, set())  # this process's shards reported in an epoch

    def __call__(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        epoch = self.shared_epoch.get_value()
        seen = kept = passed = 0  # seen and kept in the shard being read; kept in this pass
        for shard, chunk, ends in _read_chunks(samples, CHUNK):
            mask = np.zeros(0, dtype=bool)
            if chunk:
                uids, entries = zip(*map(sample_entries, chunk), strict=True)
                mask = self.rule.keep(pa.array(uids, pa.string()), pa.array(entries, ENTRIES_TYPE), epoch)
                seen, kept = seen + len(chunk), kept + int(mask.sum())
            if ends:  # every sample of the shard decided: reported before the last are handed on
                self._report(epoch, shard, seen, kept)
                passed, seen, kept = passed + kept, 0, 0
            yield from (s for s, k in zip(chunk, mask, strict=True) if k)
        if self.batch_size is not None and passed < self.batch_size:
            rank, worker = _loader_process()
            raise CurationError(
                f"online balancing: loader worker {worker} of rank {rank} keeps {passed} samples of its shards in "
                f"epoch {epoch}, fewer than a batch of {self.batch_size}, and open_clip would read them again "
                "forever; train with fewer loader workers, a smaller batch or more data"
            )

    def _report(self, epoch: int, shard: str | None, seen: int, kept: int) -> None:
        """One line per shard read to its end, once per epoch in this process."""
        if self.log_dir is None:
            return
        if self._reported[0] != epoch:
            self._reported = (epoch, set())
        if shard is not None:
            if shard in self._reported[1]:
                return  # a later pass over the same shard: the same samples, the same decisions
            self._reported[1].add(shard)
        rank, worker = _loader_process()
        line = {"epoch": epoch, "rank": rank, "worker": worker, "shard": shard, "seen": seen, "kept": kept}
        with open(Path(self.log_dir) / f"rank{rank}-worker{worker}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def _loader_process() -> tuple[int, int]:
    """(rank, data-loader worker id) of this process; worker 0 without loader workers."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return int(os.environ.get("RANK", "0")), info.id if info else 0


def _read_chunks(
    samples: Iterable[dict[str, Any]], size: int
) -> Iterator[tuple[str | None, list[dict[str, Any]], bool]]:
    """The samples in chunks of at most ``size``, each from one read of one shard: (the shard's URL, the
    chunk, whether the read ends with it; its last chunk may be empty).  A read ends where the next sample
    comes from another shard or from the same one read again (its first key back), or the samples end."""
    chunk: list[dict[str, Any]] = []
    read: tuple[str | None, str | None] | None = None  # (URL, first key) of the read under way
    for sample in samples:
        url, key = sample.get("__url__"), sample.get("__key__")
        if read is not None and (url != read[0] or (key is not None and key == read[1])):
            yield read[0], chunk, True
            chunk, read = [], None
        if read is None:
            read = (url, key)
        chunk.append(sample)
        if len(chunk) == size:
            yield read[0], chunk, False
            chunk = []
    if read is not None:
        yield read[0], chunk, True


def kept_per_epoch(log_dir: Path) -> list[dict[str, int]]:
    """Per epoch, the samples seen and kept and the shards they came from, summed over the first
    report of each shard read to its end (any worker, any rank); reports without a shard (samples
    not read from a tar file) count per pass of a worker, its first."""
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in sorted(log_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            shard = record.get("shard")
            per_pass = (record["rank"], record["worker"]) if shard is None else ()
            first.setdefault((record["epoch"], shard, *per_pass), record)
    totals: dict[int, dict[str, int]] = {}
    for record in first.values():
        total = totals.setdefault(record["epoch"], {"epoch": record["epoch"], "seen": 0, "kept": 0, "shards": 0})
        total["seen"] += record["seen"]
        total["kept"] += record["kept"]
        total["shards"] += 1
    return [totals[epoch] for epoch in sorted(totals)]


def install(rule_path: str, log_dir: str | None) -> None:
    """Make open_clip's webdataset training pipeline filter each epoch's samples by the rule."""
    from open_clip_train import data

    rule = LoaderRule.load(rule_path)
    original = data.get_wds_dataset

    def get_wds_dataset(
        args: Any, preprocess_img: Any, is_train: bool, epoch: int = 0, floor: bool = False, tokenizer: Any = None
    ) -> Any:
        info = original(args, preprocess_img, is_train, epoch=epoch, floor=floor, tokenizer=tokenizer)
        if is_train:
            pipeline = info.dataloader.pipeline[0].dataset.pipeline  # WebLoader(DataLoader(DataPipeline))
            stage = EpochFilter(rule, info.shared_epoch, log_dir, batch_size=args.batch_size)
            pipeline.insert(pipeline.index(data.tarfile_to_samples_nothrow) + 1, stage)
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
