"""Evaluating a trained CLIP: zero-shot classification and image-text retrieval.

Zero-shot: each class name is put in the CLIP prompt templates, the mean text embedding is
the class's weight, and an image's class is the nearest one (top-1 and top-5 accuracy); any
labelled set given as an ImageFolder or as webdataset shards works (:func:`load_image_folder`,
:func:`load_webdataset`).
Retrieval: recall@1/5/10 from images to their captions and from captions to their image.
For the project's CI: the 79 COCO val images with their captions, and COCO's 80 categories
(an image's label is the category covering most of its area).
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_TEMPLATES = (  # a subset of CLIP's ImageNet prompt ensemble
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a good photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "a photo of a nice {}.",
    "a blurry photo of a {}.",
    "art of the {}.",
)


@dataclass(frozen=True)
class CocoEval:
    """An evaluation set: image paths, their captions (may be empty), and one class label per image."""

    images: list[Path | bytes]  # files, or encoded images (from webdataset shards)
    captions: list[list[str]]
    labels: list[int]  # -1: the image has no instance
    classnames: list[str]


def load_coco(coco_dir: str | os.PathLike, split: str = "val2017") -> CocoEval:
    """COCO images present on disk, with their captions and largest-area category."""
    root = Path(coco_dir)
    captions = json.loads((root / "annotations" / f"captions_{split}.json").read_text())
    instances = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    categories = sorted(instances["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    area: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for a in instances["annotations"]:
        area[a["image_id"]][index[a["category_id"]]] += a["area"]
    texts: dict[int, list[str]] = defaultdict(list)
    for a in captions["annotations"]:
        texts[a["image_id"]].append(a["caption"].strip())
    images = sorted((i for i in captions["images"] if (root / split / i["file_name"]).is_file()), key=lambda i: i["id"])
    return CocoEval(
        images=[root / split / i["file_name"] for i in images],
        captions=[texts[i["id"]] for i in images],
        labels=[max(area[i["id"]], key=area[i["id"]].__getitem__) if area[i["id"]] else -1 for i in images],
        classnames=[c["name"] for c in categories],
    )


def load_image_folder(root: str | os.PathLike) -> CocoEval:
    """A labelled set as an ImageFolder (one sub-directory per class, its name the class name)."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        from metaclip_tasks.core.errors import CurationError

        raise CurationError(f"{root} has no class sub-directories (an ImageFolder: <root>/<class>/<image>)")
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    items = [
        (p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir()) if p.suffix.lower() in suffixes
    ]
    return CocoEval(
        images=[p for p, _ in items],
        captions=[[] for _ in items],
        labels=[i for _, i in items],
        classnames=[c.replace("_", " ") for c in classes],
    )


def load_webdataset(shards: Sequence[str | os.PathLike], classnames: Sequence[str], label_key: str = "cls") -> CocoEval:
    """A labelled set as webdataset shards: per sample an image (jpg/png/webp) and an integer label
    (``<key>.cls``, img2dataset/webdataset convention), with ``classnames[label]`` its class name."""
    import tarfile

    from metaclip_tasks.core.errors import CurationError

    samples: dict[str, dict[str, bytes]] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.isfile():
                    key, _, ext = member.name.partition(".")
                    body = tar.extractfile(member)
                    assert body is not None  # a regular file has a body
                    samples.setdefault(f"{shard}/{key}", {})[ext] = body.read()
    images: list[Path | bytes] = []
    labels: list[int] = []
    for key, parts in sorted(samples.items()):
        image = next((parts[e] for e in ("jpg", "jpeg", "png", "webp") if e in parts), None)
        if image is None or label_key not in parts:
            raise CurationError(f"webdataset sample {key} lacks an image or its {label_key!r} label")
        label = int(parts[label_key].decode().strip())
        if not 0 <= label < len(classnames):
            raise CurationError(f"webdataset sample {key} has label {label}, outside the {len(classnames)} class names")
        images.append(image)
        labels.append(label)
    return CocoEval(images=images, captions=[[] for _ in images], labels=labels, classnames=list(classnames))


def recall_at(
    similarity: np.ndarray, positives: Sequence[set[int]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """For each query row, whether one of its positives ranks in the top k."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    return {
        f"R@{k}": float(np.mean([bool(positives[q] & set(order[q, :k].tolist())) for q in range(len(order))]))
        for k in ks
    }


def zero_shot_accuracy(
    image_features: np.ndarray, class_weights: np.ndarray, labels: Sequence[int]
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the nearest class, over images with a label."""
    label = np.asarray(labels)
    keep = label >= 0
    order = np.argsort(-(image_features[keep] @ class_weights.T), axis=1, kind="stable")
    return {f"top{k}": float(np.mean([label[keep][i] in order[i, :k] for i in range(len(order))])) for k in (1, 5)}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, model_name: str, data: CocoEval, templates: Sequence[str] = CLIP_TEMPLATES
) -> dict[str, object]:
    """Zero-shot accuracy and retrieval recall of an open_clip checkpoint on ``data`` (on the CPU)."""
    import open_clip
    import torch
    from PIL import Image

    from metaclip_tasks.training.train import register_model_configs

    register_model_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint), device="cpu")
    tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()

    def encode_texts(texts: Sequence[str]) -> np.ndarray:
        with torch.no_grad():
            features = model.encode_text(tokenizer(list(texts)))
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    with torch.no_grad():
        opened = (Image.open(io.BytesIO(p) if isinstance(p, bytes) else p) for p in data.images)
        pixels = torch.stack([preprocess(image.convert("RGB")) for image in opened])
        images = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()
    weights = np.stack([encode_texts([t.format(c) for t in templates]).mean(axis=0) for c in data.classnames])
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    flat = [c for caps in data.captions for c in caps]
    metrics: dict[str, object] = {
        "images": len(data.images),
        "captions": len(flat),
        "zero_shot": zero_shot_accuracy(images, weights, data.labels),
    }
    if flat:  # retrieval needs captions: a plain labelled set has none
        owner = [i for i, caps in enumerate(data.captions) for _ in caps]
        similarity = images @ encode_texts(flat).T
        captions_of = [set(np.flatnonzero(np.asarray(owner) == i).tolist()) for i in range(len(data.images))]
        metrics["image_to_text"] = recall_at(similarity, captions_of)
        metrics["text_to_image"] = recall_at(similarity.T, [{o} for o in owner])
    return metrics
