"""Training CLIP on downloaded webdataset shards with open_clip's own trainer.

``open_clip_train.main`` runs in a subprocess (through ``torchrun`` with several GPUs), after
:mod:`metaclip_tasks.training.train_entry` registers this package's model configs (``metaclip-tiny``, a
2-layer model that trains on a CPU in seconds, for tests and CI).  The paper's ViT-B/32 recipe
is the documented GPU default: QuickGELU, global batch 32768, lr 5e-4, 2k warm-up steps,
AdamW (beta2 0.98, eps 1e-6, weight decay 0.2), mixed precision.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from metaclip_tasks.core import params as P
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.training.online import LOG_FLAG, RULE_FLAG

MODEL_CONFIGS = Path(__file__).with_name("model_configs")


PRECISIONS = ["amp", "amp_bf16", "bf16", "fp16", "fp32"]
DEVICES = ["cuda", "cpu"]


@dataclass(frozen=True)
class TrainParams:
    """What open_clip trains with; the defaults are the paper's ViT-B/32 recipe (GPU)."""

    model: str = field(default="ViT-B-32-quickgelu", metadata={"help": "an open_clip model name"})
    global_batch_size: int = field(
        default=32_768, metadata={"help": "samples per step over every GPU and accumulation step", "minimum": 1}
    )
    epochs: int = field(default=32, metadata={"help": "passes over the data", "minimum": 1})
    lr: float = field(
        default=5e-4,
        metadata={"help": "peak learning rate (AdamW, cosine)", "title": "Learning rate", "exclusiveMinimum": 0},
    )
    warmup: int = field(default=2_000, metadata={"help": "warm-up steps", "title": "Warm-up steps", "minimum": 0})
    weight_decay: float = field(default=0.2, metadata={"help": "AdamW weight decay", "minimum": 0})
    beta2: float = field(default=0.98, metadata={"help": "AdamW beta2", "exclusiveMinimum": 0, "exclusiveMaximum": 1})
    eps: float = field(default=1e-6, metadata={"help": "AdamW epsilon", "exclusiveMinimum": 0})
    precision: str = field(default="amp", metadata={"help": "open_clip's --precision", "enum": PRECISIONS})
    accum_freq: int = field(
        default=1,
        metadata={
            "help": "micro-batches per step: global batch = per-GPU batch x GPUs x this; the contrastive loss still "
            "sees the whole global batch (fewer GPUs than the paper's 64)",
            "title": "Accumulation steps",
            "minimum": 1,
        },
    )
    resampled: bool = field(
        default=False, metadata={"help": "sample shards with replacement (an epoch is then num_samples draws)"}
    )
    workers: int = field(
        default=8,
        metadata={
            "help": "data-loader processes per GPU (the loader, not the GPU, bounds a ViT-B/32 step: BENCHMARKS.md)",
            "title": "Data-loader processes per GPU",
            "minimum": 0,
        },
    )
    device: str = field(
        default="cuda", metadata={"help": "cpu trains on the CPU (only when asked for)", "enum": DEVICES}
    )
    gpus: int = field(default=0, metadata={"help": "GPUs to train on; 0: every visible GPU", "minimum": 0})
    seed: int = field(default=0, metadata={"help": "the trainer's seed", "minimum": 0})
    balance_t: int | None = field(
        default=None,
        metadata={
            "help": "balancing in the loader (paper A.2): re-draw the head for this t each epoch; empty: the download as it is",
            "minimum": 1,
            "identity": "when-set",
        },
    )


PAPER_VIT_B32 = TrainParams()
TINY_CPU = TrainParams(
    model="metaclip-tiny", global_batch_size=16, epochs=1, lr=1e-3, warmup=1, precision="fp32", workers=0, device="cpu"
)
RECIPES = {"vit-b-32": PAPER_VIT_B32, "tiny-cpu": TINY_CPU}


def _override(name: str) -> Any:
    """An optional field that overrides the recipe's ``name``, described as TrainParams describes it."""
    return P.field_like(TrainParams, name, default=None, help_suffix="; empty: the recipe's")


@dataclass(frozen=True)
class TrainChoice:
    """A training run as a user asks for it (the command line, a DAG's form): a recipe and what to change in it."""

    recipe: str = field(
        default="vit-b-32",
        metadata={
            "help": "vit-b-32: the paper's (QuickGELU, batch 32768, lr 5e-4, 2k warm-up, GPU); tiny-cpu: a 2-layer model "
            "for a CPU",
            "enum": sorted(RECIPES),
        },
    )
    device: str | None = _override("device")
    model: str | None = _override("model")
    epochs: int | None = _override("epochs")
    warmup: int | None = _override("warmup")
    precision: str | None = _override("precision")
    global_batch_size: int | None = _override("global_batch_size")
    accum_freq: int | None = _override("accum_freq")
    lr: float | None = _override("lr")
    loader_workers: int | None = _override("workers")  # not ``workers``: the command line's Dask workers

    def config(self) -> TrainParams:
        """The recipe's config with every given field in place of the recipe's."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("recipe", "loader_workers")}
        given["workers"] = self.loader_workers
        return replace(RECIPES[self.recipe], **{k: v for k, v in given.items() if v is not None})


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_device(config: TrainParams) -> TrainParams:
    """The config with its GPU count resolved; a GPU recipe without a GPU is refused, clearly."""
    if config.device == "cpu":
        return replace(config, gpus=0)
    gpus = visible_gpus()
    if gpus == 0:
        raise CurationError(
            f"training {config.model} on {config.device} needs a GPU and none is visible "
            "(torch.cuda.is_available() is False); ask for device 'cpu' to train on the CPU"
        )
    return replace(config, gpus=min(config.gpus or gpus, gpus))


def train_command(
    config: TrainParams,
    shards: Sequence[str],
    num_samples: int,
    logs: Path,
    name: str,
    balance: tuple[Path, Path] | None = None,
) -> list[str]:
    """The command line: open_clip's trainer, through torchrun when more than one GPU trains; with
    ``balance`` (a loader rule file, a folder for its reports) the loader balances each epoch.

    Each step sees ``global_batch_size`` samples: per-GPU batch x GPUs x ``accum_freq``; with
    accumulation open_clip caches the features of every micro-batch, so fewer GPUs train the
    same contrastive loss as the paper's 64."""
    processes = max(config.gpus, 1)
    if config.accum_freq < 1 or config.global_batch_size % (processes * config.accum_freq):
        raise CurationError(
            f"global batch {config.global_batch_size} does not split over {processes} GPUs"
            + (f" x {config.accum_freq} accumulation steps" if config.accum_freq != 1 else "")
        )
    launcher = [sys.executable, "-m", "metaclip_tasks.training.train_entry"]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        launcher = [torchrun, f"--nproc_per_node={processes}", "-m", "metaclip_tasks.training.train_entry"]
    return [
        *launcher,
        f"--train-data={'::'.join(shards)}",
        "--dataset-type=webdataset",
        f"--train-num-samples={num_samples}",
        f"--model={config.model}",
        f"--batch-size={config.global_batch_size // (processes * config.accum_freq)}",
        f"--accum-freq={config.accum_freq}",
        *(["--dataset-resampled"] if config.resampled else []),
        f"--epochs={config.epochs}",
        f"--lr={config.lr}",
        f"--warmup={config.warmup}",
        f"--wd={config.weight_decay}",
        f"--beta2={config.beta2}",
        f"--eps={config.eps}",
        f"--precision={config.precision}",
        f"--workers={config.workers}",
        f"--seed={config.seed}",
        f"--logs={logs}",
        f"--name={name}",
        "--save-frequency=1",
        "--report-to=",
        "--log-every-n-steps=1",
        *([f"{RULE_FLAG}={balance[0]}", f"{LOG_FLAG}={balance[1]}"] if balance else []),
    ]


def run_training(
    config: TrainParams,
    shards: Sequence[str],
    num_samples: int,
    logs: Path,
    name: str = "train",
    log: Callable[[str], object] = print,
    balance: tuple[Path, Path] | None = None,
) -> Path:
    """Train; stream the trainer's output to ``log``; return the last epoch's checkpoint."""
    config = check_device(config)
    env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    if config.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = train_command(config, shards, num_samples, logs, name, balance)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        for line in process.stdout or ():
            log(line.rstrip())
    if process.returncode:
        raise RuntimeError(f"open_clip training exited with status {process.returncode}")
    checkpoint = logs / name / "checkpoints" / f"epoch_{config.epochs}.pt"
    if not checkpoint.is_file():
        raise RuntimeError(f"open_clip training finished without {checkpoint}")
    return checkpoint


def register_model_configs() -> None:
    """Make this package's model configs (``metaclip-tiny``) known to open_clip."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIGS)
