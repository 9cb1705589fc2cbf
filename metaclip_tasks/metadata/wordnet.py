"""WordNet synset names, MetaCLIP's first metadata source (Table 1: 86,654 entries).

Reads the WordNet 3.0 database files directly (Debian's ``wordnet-base`` installs them in
``/usr/share/wordnet``), so neither NLTK nor a download is needed.  A synset's name is
NLTK's: its first lemma, lower-cased; the entry is that name before its first ``.``,
with ``_`` turned into a space (the MetaCLIP rule).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from pathlib import Path

from metaclip_tasks.core.errors import CurationError

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
POS_FILES = ("noun", "verb", "adj", "adv")  # NLTK's all_synsets() order
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")


def synset_names(wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> Iterator[str]:
    """Each synset's entry name, in database order (duplicates included)."""
    for pos in POS_FILES:
        path = Path(wordnet_dir) / f"data.{pos}"
        if not path.is_file():
            raise CurationError(
                f"WordNet data file {path} not found: install Debian's wordnet-base or give the folder of data.noun"
            )
        with path.open(encoding="utf-8", errors="strict") as lines:
            try:
                for number, line in enumerate(lines, 1):
                    if line.startswith("  "):  # the licence header
                        continue
                    fields = line.split(" ", 5)
                    if len(fields) < 6 or not fields[0].isdigit():
                        raise CurationError(
                            f"WordNet data file {path}, line {number}, is not a WordNet 3.0 synset line"
                        )
                    lemma = _ADJ_MARKER.sub("", fields[4]).lower()
                    yield lemma.split(".")[0].replace("_", " ")
            except UnicodeDecodeError as e:
                raise CurationError(f"WordNet data file {path} is not UTF-8 text: {e}") from e


def is_punctuation_only(entry: str) -> bool:
    """True for strings made only of ASCII punctuation (MetaCLIP drops them)."""
    return all(c in string.punctuation for c in entry)


def wordnet_entries(wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> list[str]:
    """The strings "0".."99", then distinct synset names, minus empty and punctuation-only ones."""
    entries = dict.fromkeys(str(i) for i in range(100))
    for name in synset_names(wordnet_dir):
        name = name.strip()
        if name and not is_punctuation_only(name):
            entries.setdefault(name)
    return list(entries)
