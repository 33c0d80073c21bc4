"""Chief complaints as a UK emergency department writes them, read onto the model's vocabulary.

The triage model learnt its complaint words from NHAMCS, where the complaint is the NCHS reason-for-visit
(RFV) labels ("Shortness of breath", "Fainting (syncope)", "Convulsions"). A UK ED writes "SOB", "collapse",
"fit", "#NOF", "?ACS", an ECDS SNOMED CT code or a Manchester Triage System chart name. :func:`read_complaint`
rewrites recognised terms into RFV wording, leaves unknown words where they are (the encoder ignores words
outside its vocabulary) and finds the **red flags**: complaints that are time-critical whatever the vital
signs, each with the acuity floor it sets (:data:`RED_FLAGS`, sources in ``docs/clinical_safety.md``).

Rules, in order:

1. A complaint that is only a SNOMED CT concept id (digits, optionally ``SNOMED:`` / ``SCT:``) is read as
   the phrase of :data:`models.triage.complaint_terms.SNOMED_COMPLAINTS`; an id not in that table gives nothing.
2. The text is normalised: lower case, UK spellings to US (``dyspnoea`` -> ``dyspnea``), ``#`` to
   ``fracture``, ``&`` to ``and``, ``/`` to ``or``, hyphens to spaces; clauses split at ``, ; . : ? ! ( )``,
   new lines and the word ``but``.
3. Within a clause, the longest table phrase starting at each word is taken (``"chest pain radiating to
   arm"`` before ``"chest pain"``). Abbreviations that are also English words (``HI``) count only in capitals.
4. Negation: after a cue (``no``, ``not``, ``nil``, ``denies``, ``denied``, ``without``, ``negative``) every
   recognised term to the end of the clause is negated: it raises no flag and is dropped from the text,
   with the cue and the words between them ("head injury, no LOC" reads "Injury of head").
5. If any red flag is found, the model reads the canonical texts of the flags **only**, most urgent first:
   words added to a time-critical complaint cannot change what the model reads.

This is a lexical reader, not a clinical NLP system: it does not see history ("PMH MI" raises the ACS flag;
an over-triage, never an under-triage) or misspellings (the encoder's job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from models.triage.complaint_terms import (
    CASE_SENSITIVE,
    RED_FLAGS,
    SNOMED_COMPLAINTS,
    SPELLINGS,
    SYNONYM_GROUPS,
    RedFlag,
)

__all__ = ["RED_FLAGS", "ComplaintReading", "RedFlag", "normalise_words", "read_complaint"]


@dataclass(frozen=True)
class ComplaintReading:
    """What :func:`read_complaint` made of a complaint.

    Attributes
    ----------
    text_for_model : str
        What the model's tokeniser should read; ``""`` when nothing usable.
    red_flags : tuple of str
        :data:`RED_FLAGS` ids found, most urgent first.
    matched_terms : tuple of str
        Table phrases that matched, in order of appearance (``"negated:<phrase>"`` for a negated one,
        ``"snomed:<id>"`` for a code), for explanations and audit.
    """

    text_for_model: str
    red_flags: tuple[str, ...]
    matched_terms: tuple[str, ...]


@dataclass(frozen=True)
class _Term:
    phrase: str
    target: str
    red_flag: str | None
    case_sensitive: bool


NEGATION_CUES: Final[frozenset[str]] = frozenset(
    {"no", "not", "nil", "denies", "denied", "deny", "denying", "without", "negative"}
)
_CLAUSE_BREAK: Final = "but"
_CODE_RE: Final = re.compile(r"^\s*(?:(?:snomed(?:[\s_-]*ct)?|sct)\s*[:#]?\s*)?(\d{6,18})\s*$", re.IGNORECASE)
_CLAUSE_RE: Final = re.compile(r"[,;.:?!()\[\]\n\r]+")
_WORD_RE: Final = re.compile(r"[A-Za-z0-9]+")
_NO_READING: Final = ComplaintReading("", (), ())


def _rewrite(text: str) -> str:
    """Symbol rewrites that keep case (so capitals can still be checked)."""
    text = text.replace("#", " fracture ").replace("&", " and ").replace("/", " or ").replace("+", " ")
    return re.sub(r"[-_'\u2019]", lambda m: "" if m.group() in "'\u2019" else " ", text)


def normalise_words(text: str) -> list[list[tuple[str, str]]]:
    """Split text into clauses of ``(normalised word, word as written)`` pairs (rule 2 of the module)."""
    clauses: list[list[tuple[str, str]]] = []
    for part in _CLAUSE_RE.split(_rewrite(text)):
        clause: list[tuple[str, str]] = []
        for word in _WORD_RE.findall(part):
            lower = word.lower()
            if lower == _CLAUSE_BREAK:
                if clause:
                    clauses.append(clause)
                clause = []
                continue
            clause.append((SPELLINGS.get(lower, lower), word))
        if clause:
            clauses.append(clause)
    return clauses


def _build_terms() -> tuple[dict[tuple[str, ...], _Term], int]:
    terms: dict[tuple[str, ...], _Term] = {}
    for target, flag, phrases in SYNONYM_GROUPS:
        if flag is not None and flag not in RED_FLAGS:
            raise ValueError(f"synonym group names unknown red flag {flag!r}")
        for phrase in phrases:
            words = tuple(w for clause in normalise_words(phrase) for w, _ in clause)
            key = " ".join(words)
            if words in terms:
                raise ValueError(f"complaint phrase {phrase!r} is listed twice")
            terms[words] = _Term(key, target, flag, key in CASE_SENSITIVE)
    return terms, max(len(k) for k in terms)


_TERMS, _MAX_WORDS = _build_terms()


def _match(clause: list[tuple[str, str]], start: int) -> _Term | None:
    for length in range(min(_MAX_WORDS, len(clause) - start), 0, -1):
        words = clause[start : start + length]
        term = _TERMS.get(tuple(w for w, _ in words))
        if term is None:
            continue
        if term.case_sensitive and not all(written.isupper() for _, written in words):
            continue
        return term
    return None


def _read_text(text: str) -> ComplaintReading:
    pieces: list[str] = []
    flags: set[str] = set()
    matched: list[str] = []
    for clause in normalise_words(text):
        out: list[str] = []
        cue_at: int | None = None  # index in ``out`` of the clause's first negation cue
        i = 0
        while i < len(clause):
            term = _match(clause, i)
            if term is not None:
                words = len(term.phrase.split())
                i += words
                if cue_at is not None:
                    matched.append(f"negated:{term.phrase}")
                    del out[cue_at:]
                    out.append("")  # keeps later words after the dropped span; removed when joining
                    cue_at = len(out)
                    continue
                matched.append(term.phrase)
                if term.red_flag is not None:
                    flags.add(term.red_flag)
                if term.target:
                    out.append(term.target)
                continue
            word = clause[i][0]
            if word in NEGATION_CUES and cue_at is None:
                cue_at = len(out)
            out.append(word)
            i += 1
        kept = " ".join(p for p in out if p)
        if kept:
            pieces.append(kept)
    red = tuple(f for f in RED_FLAGS if f in flags)  # RED_FLAGS is ordered most urgent first
    red = tuple(sorted(red, key=lambda f: RED_FLAGS[f].floor_level))
    if red:
        canon = dict.fromkeys(RED_FLAGS[f].canonical_text for f in red)
        return ComplaintReading("; ".join(canon), red, tuple(dict.fromkeys(matched)))
    return ComplaintReading("; ".join(pieces), (), tuple(dict.fromkeys(matched)))


@lru_cache(maxsize=16384)
def read_complaint(text: str | None) -> ComplaintReading:
    """Read one chief complaint onto the model's vocabulary and find its red flags.

    Cached (the reading is a frozen value): the safety floor and the encoder both read every complaint, and
    training data repeats a few thousand texts.

    Parameters
    ----------
    text : str or None
        Free text as written at triage, a SNOMED CT chief-complaint id, or a Manchester chart name.

    Returns
    -------
    ComplaintReading
        ``text_for_model`` (``""`` for ``None``, blank text or an unknown code), the red flags found (most
        urgent first) and the table phrases matched.

    Examples
    --------
    >>> read_complaint("SOB and cough").text_for_model
    'Shortness of breath and cough'
    >>> read_complaint("fall, #NOF, now unresponsive").red_flags
    ('unresponsive',)
    >>> read_complaint("headache, no LOC").red_flags
    ()
    """
    if text is None or not isinstance(text, str) or not text.strip():
        return _NO_READING
    code = _CODE_RE.match(text)
    if code is not None:
        phrase = SNOMED_COMPLAINTS.get(code.group(1))
        if phrase is None:
            return _NO_READING
        reading = _read_text(phrase)
        return ComplaintReading(
            reading.text_for_model, reading.red_flags, (f"snomed:{code.group(1)}", *reading.matched_terms)
        )
    return _read_text(text)
