"""`codebert bleu`: smoothed sentence BLEU-4, the score of the paper's code-to-documentation table.

The paper (§4.3, Table 5) reports the smoothed BLEU-4 of CodeNN's `bleu.py` (Iyer et al., 2016),
which CodeBERT's `code2nl` and CodeXGLUE's code-to-text `evaluator.py` reuse unchanged. No
maintained library computes this variant (sacrebleu and nltk smooth and penalise differently),
so it is written here, operation for operation, and tested on hand-computed cases:

  files        references: `id<TAB>sentence` lines, several lines may share an id (several references);
               predictions: `id<TAB>sentence` lines (a line with no tab is an empty prediction);
               only reference ids that have a prediction are scored.
  text         both sides lower-cased and stripped, split into words and single punctuation marks
               (`\\w+|[^\\s\\w]`), then NIST mteval-v11a normalisation (unescape &quot; &amp; &lt;
               &gt;, punctuation tokenised, periods and commas split unless between digits).
  n-grams      orders 1-4; a hypothesis n-gram's count is clipped by its highest count in any
               one reference.
  smoothing    add one to the matches and to the totals of orders 2-4 only (order 1 unsmoothed);
               log precision = log(c + s + tiny) - log(g + s + tiny), tiny = the smallest float.
  brevity      log BP = min(0, 1 - (r + 1) / (h + 1)), r the *shortest* reference's length.
  score        exp(mean of the four log precisions + log BP) per sentence, averaged over
               sentences, times 100.
Consequences worth knowing: an empty prediction scores exp(-r), not 0; a hypothesis with no word
in common with its references scores ~0 whatever the higher orders say.
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.errors import UserError

ORDER = 4
_TINY = sys.float_info.min  # keeps log() finite when a count is 0

# NIST mteval-v11a, language-independent part.
_NORMALIZE1 = [(re.compile(p), r) for p, r in (("<skipped>", ""), (r"-\n", ""), (r"\n", " "))]
# Language-dependent part (Western languages): punctuation marks become tokens, except the
# apostrophe; periods and commas only when not between digits; a dash after a digit.
_NORMALIZE2 = [
    (re.compile(p), r)
    for p, r in (
        (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),
        (r"([^0-9])([\.,])", r"\1 \2 "),
        (r"([\.,])([^0-9])", r" \1 \2"),
        (r"([0-9])(-)", r"\1 \2 "),
    )
]
_WORDS_AND_PUNCTUATION = re.compile(r"[\w]+|[^\s\w]")


def split_punctuation(line: str) -> str:
    """Words and single non-space, non-word characters, joined by spaces."""
    return " ".join(_WORDS_AND_PUNCTUATION.findall(line))


def normalize(text: str) -> list[str]:
    """NIST mteval-v11a normalisation and tokenisation, lower-cased."""
    for pattern, replacement in _NORMALIZE1:
        text = pattern.sub(replacement, text)
    text = xml.sax.saxutils.unescape(text, {"&quot;": '"'})
    text = f" {text} ".lower()
    for pattern, replacement in _NORMALIZE2:
        text = pattern.sub(replacement, text)
    return text.split()


def _ngrams(words: list[str]) -> Counter:
    return Counter(tuple(words[i : i + k]) for k in range(1, ORDER + 1) for i in range(len(words) - k + 1))


def sentence_bleu(references: list[str], hypothesis: str) -> float:
    """Smoothed BLEU-4 of one hypothesis against its references, in [0, 1] (conventions above)."""
    if not references:
        raise ValueError("a sentence needs at least one reference")
    refs = [normalize(r) for r in references]
    max_counts: Counter = Counter()
    for ref in refs:
        for gram, count in _ngrams(ref).items():
            max_counts[gram] = max(max_counts[gram], count)
    hyp = normalize(hypothesis)
    guess = [max(len(hyp) - k + 1, 0) for k in range(1, ORDER + 1)]
    correct = [0] * ORDER
    for gram, count in _ngrams(hyp).items():
        correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
    log_bleu = 0.0
    for k in range(ORDER):
        add = 1 if k > 0 else 0
        log_bleu += math.log(correct[k] + add + _TINY) - math.log(guess[k] + add + _TINY)
    log_bleu /= ORDER
    reflen = min(len(r) for r in refs)
    log_bleu += min(0.0, 1 - (reflen + 1) / (len(hyp) + 1))
    return math.exp(log_bleu)


def read_references(path: Path) -> dict[str, list[str]]:
    """id -> reference sentences (lower-cased, punctuation split), in the file's order."""
    refs: dict[str, list[str]] = {}
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise UserError(f"{path}:{number}: a reference line is `id<TAB>sentence` (found {len(parts) - 1} tabs)")
        refs.setdefault(parts[0], []).append(split_punctuation(parts[1].strip().lower()))
    return refs


def read_predictions(path: Path) -> dict[str, str]:
    """id -> predicted sentence (lower-cased, punctuation split); a later line for an id wins."""
    preds = {}
    for line in _lines(path):
        cols = line.strip().split("\t")
        preds[cols[0]] = split_punctuation((cols[1] if len(cols) > 1 else "").strip().lower())
    return preds


def _lines(path: Path) -> list[str]:
    """The file's lines as Python's text files give them (universal newlines: \n, \r\n, \r)."""
    try:
        with open(path, encoding="utf-8") as f:
            return list(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def corpus_bleu(references: dict[str, list[str]], predictions: dict[str, str]) -> tuple[float, int]:
    """Mean sentence BLEU x 100 over the reference ids that have a prediction, and their number."""
    total, scored = 0.0, 0
    for rid, refs in references.items():
        if rid in predictions:
            total += sentence_bleu(refs, predictions[rid])
            scored += 1
    if not scored:
        raise UserError("no prediction id matches a reference id: nothing to score")
    return total * 100.0 / scored, scored


@dataclass
class BleuConfig:
    reference: Path = option(help="reference file: id<TAB>sentence per line (an id may repeat for several references)", positional=True)
    predictions: Path = option(help="prediction file: id<TAB>sentence per line", positional=True)


def main(cfg: BleuConfig) -> dict[str, Any]:
    references, predictions = read_references(cfg.reference), read_predictions(cfg.predictions)
    score, scored = corpus_bleu(references, predictions)
    return {"bleu": score, "sentences": scored, "references_without_prediction": len(references) - scored}


def render(figures: dict[str, Any]) -> str:
    text = f"smoothed BLEU-4: {figures['bleu']:.4f} over {figures['sentences']} sentences"
    if figures["references_without_prediction"]:
        text += f" ({figures['references_without_prediction']} reference ids without a prediction were not scored)"
    return text
