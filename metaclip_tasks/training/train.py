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
from dataclasses import dataclass, field, replace
from pathlib import Path

from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.training.online import LOG_FLAG, RULE_FLAG

MODEL_CONFIGS = Path(__file__).with_name("model_configs")


@dataclass(frozen=True)
class TrainConfig:
    """What open_clip trains with; the defaults are the paper's ViT-B/32 recipe (GPU)."""

    model: str = "ViT-B-32-quickgelu"
    global_batch_size: int = 32_768
    epochs: int = 32
    lr: float = 5e-4
    warmup: int = 2_000
    weight_decay: float = 0.2
    beta2: float = 0.98
    eps: float = 1e-6
    precision: str = "amp"
    accum_freq: int = 1  # micro-batches per step; the contrastive loss still sees the whole global batch
    resampled: bool = False  # sample shards with replacement (an "epoch" is then num_samples draws)
    workers: int = 8
    device: str = "cuda"  # "cpu" only when asked for explicitly
    gpus: int = 0  # 0: every visible GPU
    seed: int = 0
    balance_t: int | None = field(default=None, metadata={
        "help": "balancing in the loader (paper A.2): re-draw the head for this t each epoch; empty: the download as it is",
        "minimum": 1, "identity": "when-set"})  # fmt: skip


PAPER_VIT_B32 = TrainConfig()
TINY_CPU = TrainConfig(model="metaclip-tiny", global_batch_size=16, epochs=1, lr=1e-3, warmup=1, precision="fp32",
                       workers=0, device="cpu")  # fmt: skip
RECIPES = {"vit-b-32": PAPER_VIT_B32, "tiny-cpu": TINY_CPU}


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_device(config: TrainConfig) -> TrainConfig:
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


def train_command(config: TrainConfig, shards: Sequence[str], num_samples: int, logs: Path, name: str,
                  balance: tuple[Path, Path] | None = None) -> list[str]:  # fmt: skip
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
        f"--train-data={'::'.join(shards)}", "--dataset-type=webdataset", f"--train-num-samples={num_samples}",
        f"--model={config.model}", f"--batch-size={config.global_batch_size // (processes * config.accum_freq)}",
        f"--accum-freq={config.accum_freq}", *(["--dataset-resampled"] if config.resampled else []),
        f"--epochs={config.epochs}", f"--lr={config.lr}", f"--warmup={config.warmup}", f"--wd={config.weight_decay}",
        f"--beta2={config.beta2}", f"--eps={config.eps}", f"--precision={config.precision}",
        f"--workers={config.workers}", f"--seed={config.seed}", f"--logs={logs}", f"--name={name}",
        "--save-frequency=1", "--report-to=", "--log-every-n-steps=1",
        *([f"{RULE_FLAG}={balance[0]}", f"{LOG_FLAG}={balance[1]}"] if balance else []),
    ]  # fmt: skip


def run_training(
    config: TrainConfig,
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
        for line in process.stdout:
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
