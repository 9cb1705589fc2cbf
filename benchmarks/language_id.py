"""Offline language identification of short texts: py3langid (the project's) against pycld2.

The issue asks for English identification from a model shipped in its pip package; this
measures the two installed ones on a labelled sample of short texts, built offline:

* UI strings of Apache Airflow's 21 translations, shipped in the installed apache-airflow
  wheel (``airflow/ui/dist/i18n/locales/<locale>/*.json``): ``{{placeholders}}`` stripped,
  strings under 12 characters dropped, deduplicated per language, labelled with the locale
  (ISO 639-1: zh-CN and zh-TW are zh).  A string found under two labels (an untranslated
  English string in another locale, a word shared by two languages) has no single label and
  is dropped.
* 2,000 English COCO captions (val2017, seeded sample) standing for alt-texts.

For each identifier: English-vs-not accuracy, English precision and recall, the macro
accuracy of the top-1 language over the sample's languages the identifier knows, and
texts/s on one core (best of the rounds).  py3langid runs through the project's
``LanguageFilter(["any"]).identify``, a fresh filter each round so its cache never answers;
pycld2 as ``pycld2.detect(text)``'s first language (an error is "un"; its legacy codes iw
and zh-Hant read as he and zh).

    .venv/bin/python -m benchmarks.language_id [--captions 2000] [--rounds 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import py3langid
import pycld2

from metaclip_tasks.dev.shared_data import SHARED_DATA
from metaclip_tasks.ingest.language import LanguageFilter

COCO_CAPTIONS = SHARED_DATA / "captions" / "coco_captions_val2017.json"
MIN_CHARS = 12
_PLACEHOLDER = re.compile(r"\{\{[^}]*\}\}")
_SPACES = re.compile(r"\s+")
_CLD2_CODES = {"iw": "he", "zh-Hant": "zh", "jw": "jv"}


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def airflow_locales() -> Path | None:
    """The directory of Airflow's UI translations in the installed wheel, or None."""
    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        locales = Path(location) / "ui" / "dist" / "i18n" / "locales"
        if locales.is_dir():
            return locales
    return None


def ui_strings(locales: Path) -> tuple[dict[str, str], int]:
    """Text -> ISO 639-1 label from the translations; and how many texts had two labels."""
    by_lang: dict[str, set[str]] = defaultdict(set)
    for locale_dir in sorted(p for p in locales.iterdir() if p.is_dir()):
        lang = locale_dir.name.split("-")[0].lower()
        for path in sorted(locale_dir.glob("*.json")):
            for raw in _strings(json.loads(path.read_text(encoding="utf-8"))):
                text = _SPACES.sub(" ", _PLACEHOLDER.sub("", raw)).strip()
                if len(text) >= MIN_CHARS:
                    by_lang[lang].add(text)
    labels: dict[str, set[str]] = defaultdict(set)
    for lang, texts in by_lang.items():
        for text in texts:
            labels[text].add(lang)
    single = {text: next(iter(langs)) for text, langs in labels.items() if len(langs) == 1}
    return single, len(labels) - len(single)


def coco_captions(count: int, seed: int) -> list[str]:
    data = json.loads(COCO_CAPTIONS.read_text(encoding="utf-8"))
    captions = sorted({_SPACES.sub(" ", a["caption"]).strip() for a in data["annotations"]} - {""})
    return random.Random(seed).sample(captions, min(count, len(captions)))


def py3langid_identify(texts: Sequence[str]) -> list[str]:
    return LanguageFilter(["any"]).identify(texts)  # a fresh filter: nothing cached


def pycld2_identify(texts: Sequence[str]) -> list[str]:
    out = []
    for text in texts:
        try:
            code = pycld2.detect(text)[2][0][1]
        except (pycld2.error, ValueError):
            code = "un"
        out.append(_CLD2_CODES.get(code, code))
    return out


def _texts_per_second(identify: Callable[[Sequence[str]], list[str]], texts: Sequence[str], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        identify(texts)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def scores(labels: Sequence[str], predicted: Sequence[str], known: set[str]) -> dict:
    tp = sum(l == "en" and p == "en" for l, p in zip(labels, predicted))
    fp = sum(l != "en" and p == "en" for l, p in zip(labels, predicted))
    fn = sum(l == "en" and p != "en" for l, p in zip(labels, predicted))
    binary = sum((l == "en") == (p == "en") for l, p in zip(labels, predicted)) / len(labels)
    total: Counter[str] = Counter(labels)
    right: Counter[str] = Counter(l for l, p in zip(labels, predicted) if l == p)
    per_lang = {lang: right[lang] / n for lang, n in total.items() if lang in known}
    return {
        "accuracy": binary,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "macro": sum(per_lang.values()) / len(per_lang),
        "languages": len(per_lang),
        "per_lang": per_lang,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=2000, help="English COCO captions in the sample")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per identifier (best reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the caption sample")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    locales = airflow_locales()
    if locales is None:
        print("skipped: apache-airflow's UI translations (airflow/ui/dist/i18n/locales) are not installed")
        return
    if not COCO_CAPTIONS.is_file():
        raise SystemExit(
            f"COCO captions not found: {COCO_CAPTIONS} (set METACLIP_SHARED_DATA to the shared data directory)"
        )

    ui, ambiguous = ui_strings(locales)
    captions = coco_captions(args.captions, args.seed)
    sample = dict(ui)
    for caption in captions:
        sample.setdefault(caption, "en")
    texts = list(sample)
    labels = [sample[t] for t in texts]
    counts = Counter(labels)
    print(
        f"sample: {len(texts):,} texts: {len(ui):,} Airflow UI strings from {len(counts)} languages "
        f"({ambiguous:,} with two labels dropped) + {len(captions):,} COCO captions (en)"
    )
    print("texts per language: " + ", ".join(f"{lang} {n:,}" for lang, n in sorted(counts.items())))
    print(
        f"English: {counts['en']:,} ({counts['en'] - len(captions):,} UI strings + {len(captions):,} captions), other: {len(texts) - counts['en']:,}"
    )

    start = time.perf_counter()
    py3langid_labels = set(py3langid.langid._get_identifier().nb_classes)  # loads the model from the wheel
    print(f"py3langid model load: {time.perf_counter() - start:.2f} s (once per process; pycld2's is compiled in)")
    identifiers = {
        f"py3langid {getattr(py3langid, '__version__', '')}".strip(): (py3langid_identify, py3langid_labels),
        "pycld2": (pycld2_identify, {_CLD2_CODES.get(code, code) for _name, code in pycld2.LANGUAGES}),
    }
    figures = {}
    for name, (identify, known) in identifiers.items():
        figures[name] = scores(labels, identify(texts), known)
        figures[name]["texts_per_s"] = _texts_per_second(identify, texts, args.rounds)

    print(f"\n{'identifier':<16}{'en acc':>8}{'en prec':>9}{'en rec':>8}{'macro acc':>11}{'langs':>7}{'texts/s':>10}")
    for name, f in figures.items():
        print(
            f"{name:<16}{f['accuracy']:>8.3f}{f['precision']:>9.3f}{f['recall']:>8.3f}"
            f"{f['macro']:>11.3f}{f['languages']:>7}{f['texts_per_s']:>10,.0f}"
        )
    print("\ntop-1 accuracy per language (n):")
    print(f"{'lang':<6}{'n':>6}" + "".join(f"{name:>17}" for name in figures))
    for lang in sorted(counts):
        cells = "".join(
            f"{f['per_lang'][lang]:>17.3f}" if lang in f["per_lang"] else f"{'-':>17}" for f in figures.values()
        )
        print(f"{lang:<6}{counts[lang]:>6,}{cells}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
