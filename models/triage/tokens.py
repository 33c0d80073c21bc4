"""Chief-complaint text to the words the triage model reads, and their ids in a fitted vocabulary.

:func:`model_tokens` reads a complaint with :func:`models.triage.complaints.read_complaint` (UK wording,
abbreviations, ECDS codes, red flags), then :func:`tokenize` splits it into lower-case words without stopwords.
:class:`TokenVocabulary` gives the words of a fitted vocabulary their ids (2 onwards: 0 is padding, 1 reserved) and
corrects a word outside the vocabulary to the vocabulary word one edit away when it is long enough to make that safe
(and that word is the only one); any other unknown word is dropped: it is read as if it had not been written, so it
can never lower a risk below "no complaint". :class:`models.triage.features.FeatureEncoder` encodes the complaint
through these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from models.triage.columns import is_missing

_TOKEN_RE = re.compile(r"[a-z][a-z0-9]+")
#: Words too common in complaint text to carry signal.
_STOPWORDS: Final = frozenset(
    {
        "and",
        "or",
        "of",
        "the",
        "with",
        "in",
        "on",
        "to",
        "for",
        "at",
        "from",
        "not",
        "other",
        "nos",
        "etc",
        "specified",
        "unspecified",
        "problems",
        "problem",
        "symptoms",
        "symptom",
    }
)
#: Shortest out-of-vocabulary word that is corrected to a vocabulary word one edit away.
_MIN_CORRECTABLE: Final = 5


def tokenize(text: str | None) -> list[str]:
    """Split chief-complaint text into lower-case word tokens (stopwords dropped, order kept)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    return [t for t in _TOKEN_RE.findall(str(text).lower()) if t not in _STOPWORDS]


def model_tokens(text: Any) -> list[str]:
    """The complaint words the model reads: :func:`models.triage.complaints.read_complaint`, then :func:`tokenize`."""
    from models.triage.complaints import read_complaint

    if is_missing(text):
        return []
    return tokenize(read_complaint(str(text)).text_for_model)


def _one_edit_variants(word: str) -> set[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters}
    inserts = {a + c + b for a, b in splits for c in letters}
    return deletes | swaps | replaces | inserts


class TokenVocabulary:
    """The ids of a fitted vocabulary's words, and the corrections of words outside it (memoised)."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        #: Word -> id, 2 onwards (0 is padding, 1 a reserved id no longer produced).
        self.ids: dict[str, int] = {t: i + 2 for i, t in enumerate(vocabulary)}
        self._corrections: dict[str, str | None] = {}

    def corrected(self, word: str) -> str | None:
        """A vocabulary word one edit from an out-of-vocabulary ``word`` (None when none, or not unique)."""
        if word not in self._corrections:
            candidates = (
                sorted(v for v in _one_edit_variants(word) if v in self.ids) if len(word) >= _MIN_CORRECTABLE else []
            )
            self._corrections[word] = candidates[0] if len(candidates) == 1 else None
        return self._corrections[word]

    def words(self, text: Any) -> list[str]:
        """The vocabulary words read from one complaint, in order: :func:`model_tokens`, unknown words corrected or
        dropped."""
        out = []
        for word in model_tokens(text):
            if word in self.ids:
                out.append(word)
            else:
                fixed = self.corrected(word)
                if fixed is not None:
                    out.append(fixed)
        return out
