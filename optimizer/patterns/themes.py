"""Words and bigrams that separate failed from successful transcripts. Pure: numpy only.

Monroe, Colaresi & Quinn (2008), "Fightin' Words", log-odds ratio with an informative
Dirichlet prior. For term w with count y_f in the failed sample, y_s in the successful one,
totals n_f and n_s, and prior alpha_w (alpha_0 its sum over the vocabulary):

    delta_w = log((y_f + a_w) / (n_f + a_0 - y_f - a_w))
              - log((y_s + a_w) / (n_s + a_0 - y_s - a_w))
    var_w  ~= 1 / (y_f + a_w) + 1 / (y_s + a_w)
    z_w     = delta_w / sqrt(var_w)

The prior is the pooled distribution of both samples with a tenth of their weight
(a_w = PRIOR_WEIGHT * (y_f + y_s)): enough that a term seen in a handful of transcripts
cannot look decisive, little enough that frequent terms are left to the data.
A count is the number of transcripts that contain the term, not its occurrences, so one
transcript repeating a word fifty times weighs as one. Very common English words are left
out, as unigrams and inside bigrams; they never name a theme.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Z_THRESHOLD = 1.96
MIN_TRANSCRIPTS_PER_SIDE = 20
MIN_TERM_TRANSCRIPTS = 5
PRIOR_WEIGHT = 0.1
TOP_TERMS = 8

_WORD = re.compile(r"[^\W\d_]{2,}")  # letters only, any script, two or more
_STOPWORD_TEXT = """
a about after again all also am an and any are as at be because been before being but by
can could did do does doing don down during each few for from further had has have having
he her here hers him his how if in into is it its itself just me more most my no nor not
now of off on once only or other our ours out over own same she should so some such than
that the their theirs them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours
yourself ok okay hi hello please thanks thank yes user assistant
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class TermScore:
    term: str
    z: float
    log_odds: float
    failed: int  # failed transcripts that contain the term
    succeeded: int  # successful transcripts that contain the term

    def to_dict(self, n_failed: int, n_succeeded: int) -> dict[str, object]:
        return {
            "term": self.term,
            "z": round(self.z, 3),
            "log_odds": round(self.log_odds, 4),
            "failed_count": self.failed,
            "succeeded_count": self.succeeded,
            "failed_share": round(self.failed / n_failed, 4) if n_failed else None,
            "succeeded_share": (round(self.succeeded / n_succeeded, 4) if n_succeeded else None),
        }


def terms_of(text: str) -> set[str]:
    """The unigrams and bigrams a transcript contains (each once)."""
    words = _WORD.findall(text.lower())
    found = {w for w in words if w not in STOPWORDS}
    found.update(
        f"{a} {b}"
        for a, b in zip(words, words[1:], strict=False)
        if a not in STOPWORDS and b not in STOPWORDS
    )
    return found


def document_counts(texts: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(terms_of(text))
    return counts


def log_odds(
    failed: Counter[str], succeeded: Counter[str], min_transcripts: int = MIN_TERM_TRANSCRIPTS
) -> list[TermScore]:
    """Every term seen in at least `min_transcripts` transcripts, most failure-marking first
    (highest z)."""
    vocab = sorted(
        t for t in failed.keys() | succeeded.keys() if failed[t] + succeeded[t] >= min_transcripts
    )
    # A term is scored against the rest of the vocabulary: alone, it has no rest (its
    # log-odds would be log(x / 0)), so there is nothing to compare.
    if len(vocab) < 2:
        return []
    y_f = np.array([failed[t] for t in vocab], dtype=float)
    y_s = np.array([succeeded[t] for t in vocab], dtype=float)
    alpha = PRIOR_WEIGHT * (y_f + y_s)
    a0, n_f, n_s = alpha.sum(), y_f.sum(), y_s.sum()
    delta = np.log((y_f + alpha) / (n_f + a0 - y_f - alpha)) - np.log(
        (y_s + alpha) / (n_s + a0 - y_s - alpha)
    )
    z = delta / np.sqrt(1.0 / (y_f + alpha) + 1.0 / (y_s + alpha))
    words = np.array([t.count(" ") for t in vocab])
    order = np.lexsort((np.arange(len(vocab)), words, -z))  # z, then unigrams, then term
    # Every denominator is positive when two terms are left; the check is a last guard so
    # that no NaN can ever rank (NaN compares false, so it would pass the z threshold).
    return [
        TermScore(vocab[i], float(z[i]), float(delta[i]), int(y_f[i]), int(y_s[i]))
        for i in order
        if np.isfinite(z[i]) and np.isfinite(delta[i])
    ]


@dataclass(frozen=True)
class ThemeResult:
    n_failed: int
    n_succeeded: int
    terms: tuple[TermScore, ...]  # z > Z_THRESHOLD, at most TOP_TERMS
    skipped: str | None = None  # why no terms were looked for


def failure_terms(
    failed_texts: Sequence[str], succeeded_texts: Sequence[str], top: int = TOP_TERMS
) -> ThemeResult:
    n_f, n_s = len(failed_texts), len(succeeded_texts)
    if n_f < MIN_TRANSCRIPTS_PER_SIDE or n_s < MIN_TRANSCRIPTS_PER_SIDE:
        return ThemeResult(
            n_f,
            n_s,
            (),
            skipped=(
                f"needs {MIN_TRANSCRIPTS_PER_SIDE} failed and {MIN_TRANSCRIPTS_PER_SIDE} "
                f"successful transcripts; found {n_f} and {n_s}"
            ),
        )
    scores = log_odds(document_counts(failed_texts), document_counts(succeeded_texts))
    chosen: list[TermScore] = []
    for score in scores:
        if score.z <= Z_THRESHOLD or len(chosen) == top:
            break
        if not any(_same_evidence(score, other) for other in chosen):
            chosen.append(score)
    return ThemeResult(n_f, n_s, tuple(chosen))


def _same_evidence(a: TermScore, b: TermScore) -> bool:
    """A bigram always seen with its word (or the reverse) says nothing new."""
    return (a.failed, a.succeeded) == (b.failed, b.succeeded) and bool(
        set(a.term.split()) & set(b.term.split())
    )


def containing(sample: Sequence[tuple[int, str]], terms: Sequence[str], limit: int) -> list[int]:
    """Ids of the (id, text) transcripts that contain one of the terms, in sample order."""
    wanted = set(terms)
    return [cid for cid, body in sample if wanted & terms_of(body)][:limit]
