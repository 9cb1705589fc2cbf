"""Training throughput and GPU memory of the paper's ViT-B/32 recipe on downloaded shards.

Two steps, because the GPU machine has no network and no img2dataset:

* ``prepare DIR`` (here, on the CPU): the real COCO photos of ``../shared/data/coco_mini``
  (train and val, every caption: 795 pairs) served on 127.0.0.1, matched against the WordNet
  metadata, and downloaded by the download stage's img2dataset run into webdataset shards.
* ``run DIR`` (on the GPU machine): ``run_training`` with the ``vit-b-32`` recipe
  (ViT-B-32-quickgelu, lr 5e-4, 2k warm-up, AdamW 0.98/1e-6, wd 0.2, amp) for ``--steps``
  steps of each ``--batch`` (per GPU; ``--accum`` micro-batches per step), shards sampled with
  replacement.  samples/s is open_clip's own per-step figure (mean over the steps after the
  first tenth); GPU memory is the peak of NVML's ``memory.used`` sampled every 0.2 s.

    .venv/bin/python -m benchmarks.train_gpu prepare .gpu/shards
    python -m benchmarks.train_gpu run .gpu/shards --steps 300 --batch 512 --out results.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Self

from metaclip_tasks.training.train import PAPER_VIT_B32, check_device, run_training

STEP_LINE = re.compile(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+), ([\d.]+)/s, ([\d.]+)/s/gpu")


def prepare(out: Path, image_size: int) -> None:
    """COCO pairs -> WordNet matches -> img2dataset webdataset shards in ``out``."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import pyarrow as pa
    import pyarrow.parquet as pq

    from metaclip_tasks.curation.matching import Matcher
    from metaclip_tasks.curation.shard_matching import match_shard
    from metaclip_tasks.dev.shared_data import COCO
    from metaclip_tasks.ingest.uids import url_uid
    from metaclip_tasks.metadata.wordnet import wordnet_entries
    from metaclip_tasks.training.download import DownloadParams, download_stats, run_img2dataset, write_url_list

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(COCO)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls, texts = [], []
    for split in ("train2017", "val2017"):
        captions = json.loads((COCO / "annotations" / f"captions_{split}.json").read_text())
        files = {i["id"]: i["file_name"] for i in captions["images"] if (COCO / split / i["file_name"]).is_file()}
        for a in captions["annotations"]:
            if a["image_id"] in files:
                urls.append(f"{base}/{split}/{files[a['image_id']]}?caption={a['id']}")
                texts.append(a["caption"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pq.write_table(pa.table({"uid": [url_uid(u) for u in urls], "url": urls, "text": texts}), tmp / "pairs.parquet")
        match_shard(str(tmp / "pairs.parquet"), str(tmp / "matched.parquet"), Matcher(wordnet_entries()))
        write_url_list([str(tmp / "matched.parquet")], tmp / "urls.parquet")
        options = DownloadParams(image_size=image_size, samples_per_shard=100)
        run_img2dataset(tmp / "urls.parquet", out, options, log=lambda _: None)
    server.shutdown()
    print(json.dumps({"pairs": len(urls), **download_stats(out)}, indent=1))


class GpuMemory:
    """Peak ``memory.used`` of GPU 0 (NVML), sampled in a thread while training runs."""

    def __init__(self, interval: float = 0.2) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.handle, self.interval, self.peak = pynvml.nvmlDeviceGetHandleByIndex(0), interval, 0
        self.name = pynvml.nvmlDeviceGetName(self.handle)
        self.total = pynvml.nvmlDeviceGetMemoryInfo(self.handle).total
        self._stop = threading.Event()

    def _sample(self) -> None:
        import pynvml

        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def __enter__(self) -> Self:
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def train_once(shards: list[str], batch: int, accum: int, steps: int, workers: int, precision: str, logs: Path) -> dict:
    """One training run of the recipe at per-GPU ``batch`` x ``accum``; its step figures."""
    recipe = replace(PAPER_VIT_B32, epochs=1, resampled=True, workers=workers, accum_freq=accum, precision=precision)
    config = check_device(recipe)
    config = replace(config, global_batch_size=batch * accum * config.gpus)
    lines: list[str] = []
    start = time.perf_counter()
    with GpuMemory() as memory:
        try:
            run_training(config, shards, steps * config.global_batch_size, logs, f"b{batch}x{accum}", log=lines.append)
        except RuntimeError as error:  # out of memory, say: the trainer's last words, and on to the next size
            return {
                "config": asdict(config),
                "error": str(error),
                "trainer_error": [x for x in lines if "Error" in x][-1:],
            }
    wall = time.perf_counter() - start
    steps_seen = [tuple(map(float, m.groups())) for m in map(STEP_LINE.search, lines) if m]
    measured = steps_seen[len(steps_seen) // 10 :] or steps_seen
    return {
        "config": asdict(config),
        "gpu": memory.name,
        "steps": len(steps_seen),
        "samples_per_s": statistics.mean(s[2] for s in measured),
        "samples_per_s_per_gpu": statistics.mean(s[3] for s in measured),
        "step_time_s": statistics.mean(s[1] for s in measured),
        "data_time_s": statistics.mean(s[0] for s in measured),
        "samples_per_s_without_data_wait": config.global_batch_size / statistics.mean(s[1] - s[0] for s in measured),
        "peak_gpu_memory_gib": memory.peak / 2**30,
        "gpu_memory_gib": memory.total / 2**30,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download the COCO pairs into webdataset shards (CPU, here)")
    p.add_argument("out", type=Path)
    p.add_argument("--image-size", type=int, default=256)
    r = sub.add_parser("run", help="train the ViT-B/32 recipe on the shards (GPU)")
    r.add_argument("shards", type=Path)
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--batch", type=int, nargs="+", default=[512], help="per-GPU batch sizes to run")
    r.add_argument("--accum", type=int, default=1, help="micro-batches per step (open_clip --accum-freq)")
    r.add_argument("--workers", type=int, default=12, help="data-loader processes per GPU")
    r.add_argument("--precision", default=PAPER_VIT_B32.precision, help="open_clip --precision")
    r.add_argument("--out", type=Path, help="append each run's figures to this JSON-lines file")
    args = parser.parse_args()

    if args.command == "prepare":
        prepare(args.out, args.image_size)
        return
    shards = sorted(str(p) for p in args.shards.glob("*.tar"))
    with tempfile.TemporaryDirectory() as logs:
        for batch in args.batch:
            result = train_once(shards, batch, args.accum, args.steps, args.workers, args.precision, Path(logs))
            settings = {"batch": batch, "accum": args.accum, "workers": args.workers, "precision": args.precision}
            print(json.dumps({**settings, **{k: v for k, v in result.items() if k != "config"}}), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
