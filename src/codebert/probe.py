"""`codebert probe build|run`: NL-PL probing (paper §4.2, Table 4), zero-shot through the MLM head.

Settings built from the valid and test splits (`probe build`):
  nl            the doc contains exactly one keyword of {max, maximize, min, minimize, less,
                greater} (whole doc tokens, case-insensitive), of one class only; that word is
                masked; four candidate classes: max (max, maximize), min (min, minimize), less,
                greater (the paper merges the first two and the middle two keywords); the whole
                code is given.
  pl            the code contains the token `max` or `min`; its first such token is masked (later
                occurrences stay visible, as in CodeXGLUE's cloze-maxmin); two candidates; the
                whole doc is given.
  pl_preceding  the same items with the code cut right after the mask (preceding code only).
Items are stored as a JSON list in CodeXGLUE's cloze format (`idx`, `nl_tokens`, `pl_tokens` with
one `<mask>`), plus `word` (the answer), `language`, `setting` and `candidates`.

`probe run` scores each candidate with the frozen MLM head and picks the best. Two protocols, each
the default for its own files (`--layout auto --scoring auto`):
  CodeXGLUE's (Code-Code/ClozeTesting-maxmin/code/run_cloze.py), for its clozeTest.json files:
    layout  joined: nl_tokens + pl_tokens joined by spaces into one text, `<s> TEXT </s>`;
    scoring codexglue: each candidate is the vocabulary entry spelled exactly as the word, with no
            leading space (`tokenizer.encoder['max']`, not `Ġmax`), scored by its logit at the one
            `<mask>`; a word that is not one vocabulary entry is an error.
  ours, for the items `probe build` writes (the paper's Table 4 settings):
    layout  pair: the paper's pair, `<s> NL </s> CODE </s>` (`--pair-layout`, inputs.PairStyle);
    scoring spaced: a candidate is written as it appears in running text (after a space), as k
            pieces; the mask becomes k `<mask>` tokens, scored by the mean log-probability of the
            pieces (for one piece, its log-probability); a class with several surface forms
            (max, maximize) scores its best form.
Either protocol runs on either kind of file by naming it. The public CodeXGLUE files load with
answers inside as `word`, or in `--answers` as `idx<CODESPLIT>word` lines; their setting is pl
with candidates max and min. `--predictions` writes each item's pick in the same line format, in
the file's order, so CodeXGLUE's evaluator (and a per-item analysis) reads it.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from codebert.config import option
from codebert.corpus.jsonl import ReadReport, iter_corpus
from codebert.io import atomic_write
from codebert.errors import UserError
from codebert.tables import format_table
from codebert.inputs import Layout, PairStyle, pad_sequences, truncate_pair_lengths
from codebert.backbone import load_tokenizer
from codebert.pretrain.model import load_model

log = logging.getLogger(__name__)

MASK = "<mask>"
NL_CLASSES = {"max": ("max", "maximize"), "min": ("min", "minimize"), "less": ("less",), "greater": ("greater",)}
PL_CLASSES = {"max": ("max",), "min": ("min",)}
SETTINGS = ("nl", "pl", "pl_preceding")


# ------------------------------------------------------------------------------------------ build
@dataclass
class ProbeBuildConfig:
    data: Path = option(help="corpus folder (CodeSearchNet layout); items come from its valid and test splits")
    out: Path = option(help="JSON file to write the items to")
    languages: list[str] = option([], "languages (empty: all in the corpus)")
    splits: list[str] = option(["valid", "test"], "splits to draw items from")
    max_per_setting: int = option(0, "at most this many items per language and setting, sampled with --seed (0: all)")
    seed: int = option(0, "seed of the sampling")

    def validate(self) -> list[str]:
        problems = [] if self.data.is_dir() else [f"--data {self.data}: no such folder"]
        if self.max_per_setting < 0:
            problems.append("--max-per-setting: must be >= 0")
        return problems


def _class_of(word: str, classes: dict[str, tuple[str, ...]]) -> str | None:
    lowered = word.lower()
    for name, forms in classes.items():
        if lowered in forms:
            return name
    return None


def nl_item(record: dict[str, Any]) -> dict[str, Any] | None:
    doc = record["docstring_tokens"]
    hits = [(i, _class_of(t, NL_CLASSES)) for i, t in enumerate(doc) if _class_of(t, NL_CLASSES)]
    if len(hits) != 1:
        return None  # no keyword, or several (another occurrence would give the answer away)
    position, answer_class = hits[0]
    nl = list(doc)
    word = nl[position]
    nl[position] = MASK
    return {"nl_tokens": nl, "pl_tokens": list(record["code_tokens"]), "word": word.lower(), "answer_class": answer_class,
            "candidates": NL_CLASSES}


def pl_items(record: dict[str, Any]) -> list[dict[str, Any]]:
    code = record["code_tokens"]
    positions = [i for i, t in enumerate(code) if t in PL_CLASSES]
    if not positions:
        return []
    position = positions[0]
    word = code[position]
    masked = list(code)
    masked[position] = MASK
    common = {"nl_tokens": list(record["docstring_tokens"]), "word": word, "answer_class": word, "candidates": PL_CLASSES}
    return [
        {**common, "setting": "pl", "pl_tokens": masked},
        {**common, "setting": "pl_preceding", "pl_tokens": masked[: position + 1]},
    ]


def build_main(cfg: ProbeBuildConfig) -> dict[str, Any]:
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for lang, split, record in iter_corpus(cfg.data, cfg.splits, cfg.languages or None, 0, ReadReport()):
        item = nl_item(record)
        if item is not None:
            by_key[(lang, "nl")].append({**item, "setting": "nl", "language": lang, "source": f"{split}:{record.get('url', '')}"})
        for item in pl_items(record):
            by_key[(lang, item["setting"])].append({**item, "language": lang, "source": f"{split}:{record.get('url', '')}"})
    if not by_key:
        raise UserError(f"{cfg.data}: no probing items (no doc with max/min/less/greater, no code with max/min)")
    rng = random.Random(cfg.seed)
    items = []
    for (lang, setting), group in sorted(by_key.items()):
        if cfg.max_per_setting and len(group) > cfg.max_per_setting:
            group = rng.sample(group, cfg.max_per_setting)
        for n, item in enumerate(group):
            items.append({"idx": f"{lang}-{setting}-{n}", **item})
    with atomic_write(cfg.out) as f:
        json.dump(items, f)
    counts = defaultdict(dict)
    for item in items:
        counts[item["setting"]][item["language"]] = counts[item["setting"]].get(item["language"], 0) + 1
    return {"items": len(items), "counts": {s: dict(sorted(c.items())) for s, c in counts.items()}, "out": str(cfg.out)}


def _settings_table(per_setting: dict[str, dict[str, Any]], fmt) -> str:
    languages = sorted({lang for row in per_setting.values() for lang in row if lang != "all"})
    rows = [[setting, *(fmt(per_setting[setting].get(lang)) for lang in languages), fmt(per_setting[setting].get("all"))]
            for setting in SETTINGS if setting in per_setting]
    return format_table(["setting", *languages, "all"], rows)


def build_render(figures: dict[str, Any]) -> str:
    counts = {s: {**c, "all": sum(c.values())} for s, c in figures["counts"].items()}
    return _settings_table(counts, lambda v: "" if v is None else v) + f"\n{figures['items']} items written to {figures['out']}"


# -------------------------------------------------------------------------------------------- run
@dataclass
class ProbeRunConfig:
    model: str = option(help="pre-trained checkpoint with an MLM head (ours, roberta-base, codebert-base)")
    data: Path = option(help="items from `codebert probe build`, or a CodeXGLUE clozeTest.json")
    answers: Path | None = option(None, "CodeXGLUE answers file (idx<CODESPLIT>word per line) when the items carry no `word`")
    language: str = option("", "language of items that do not say (default: the data file's folder name)")
    layout: Literal["auto", "pair", "joined"] = option(
        "auto", "pair: NL and code as the paper's pair; joined: one text, as CodeXGLUE's run_cloze.py; auto: joined for "
        "CodeXGLUE's cloze files, pair for `probe build`'s")
    pair_layout: PairStyle = option("codebert", "pair: codebert: <s> NL </s> CODE </s> (paper §3.2); tokenizer: the tokenizer's own template")
    scoring: Literal["auto", "codexglue", "spaced"] = option(
        "auto", "codexglue: each word as the vocabulary entry spelled exactly so (no leading space), its logit at the mask "
        "(run_cloze.py); spaced: the word as in running text, mean log-probability of its pieces; auto: codexglue for "
        "CodeXGLUE's cloze files, spaced for `probe build`'s")
    max_length: int = option(512, "tokens per input; the segment holding the mask is cut around it")
    batch_size: int = option(32, "inputs per forward pass")
    out: Path | None = option(None, "also write the figures as JSON to this file")
    predictions: Path | None = option(None, "also write each item's pick as `idx<CODESPLIT>class` lines (CodeXGLUE's predictions format)")
    label: str = option("", "row name in tables (default: the model folder)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = [] if self.data.is_file() else [f"--data {self.data}: no such file"]
        if not 8 <= self.max_length <= 512:
            problems.append("--max-length: must be in [8, 512]")
        if self.batch_size < 1:
            problems.append("--batch-size: must be >= 1")
        if self.threads < 0:
            problems.append("--threads: must be >= 0")
        return problems


def is_codexglue_file(items: list[dict[str, Any]]) -> bool:
    """CodeXGLUE's clozeTest.json items carry no `setting` (every item `probe build` writes has one)."""
    return not any("setting" in item for item in items)


def protocol(cfg: ProbeRunConfig, items: list[dict[str, Any]]) -> tuple[str, str]:
    """(layout, scoring) for these items: as named, or under `auto` the protocol of the file's kind."""
    theirs = all(item.get("codexglue") for item in items)
    layout = cfg.layout if cfg.layout != "auto" else ("joined" if theirs else "pair")
    scoring = cfg.scoring if cfg.scoring != "auto" else ("codexglue" if theirs else "spaced")
    return layout, scoring


def load_items(cfg: ProbeRunConfig) -> list[dict[str, Any]]:
    try:
        items = json.loads(cfg.data.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{cfg.data}: not a JSON list of cloze items ({exc})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and "pl_tokens" in i and "nl_tokens" in i for i in items):
        raise UserError(f"{cfg.data}: expected a JSON list of items with nl_tokens and pl_tokens")
    answers = {}
    if cfg.answers is not None:
        for line in cfg.answers.read_text(encoding="utf-8").splitlines():
            if "<CODESPLIT>" in line:
                idx, word = line.split("<CODESPLIT>", 1)
                answers[idx.strip()] = word.strip()
    language = cfg.language or cfg.data.parent.name
    theirs = is_codexglue_file(items)
    out = []
    for item in items:
        word = item.get("word") or answers.get(str(item.get("idx")))
        if word is None:
            raise UserError(f"{cfg.data}: item {item.get('idx')} has no answer (no `word`, and not in --answers)")
        masks = sum(t == MASK for t in item["nl_tokens"] + item["pl_tokens"])
        if masks != 1:
            raise UserError(f"{cfg.data}: item {item.get('idx')} has {masks} {MASK} tokens, expected exactly one")
        candidates = item.get("candidates") or PL_CLASSES
        answer_class = item.get("answer_class") or _class_of(word, candidates)
        if answer_class is None:
            raise UserError(f"{cfg.data}: item {item.get('idx')}: answer {word!r} is none of the candidates")
        out.append({**item, "word": word, "answer_class": answer_class, "candidates": candidates, "codexglue": theirs,
                    "setting": item.get("setting", "pl"), "language": item.get("language", language)})
    return out


def _window(ids: list[int], keep: int, mask_at: int | None, span: int) -> list[int]:
    """`keep` tokens of a segment; the one holding the mask keeps a window that contains it."""
    if mask_at is None or mask_at + span <= keep:
        return ids[:keep]
    start = mask_at + span - keep
    return ids[start : start + keep]


class MaskScorer:
    """Log-probabilities of candidate pieces at a masked span, with the frozen MLM head."""

    def __init__(self, model, tokenizer, layout: str, max_length: int, device, scoring: str = "spaced",
                 pair_layout: PairStyle = "codebert"):
        self.model, self.tokenizer, self.layout, self.max_length, self.device = model, tokenizer, layout, max_length, device
        self.scoring = scoring
        self.inputs = Layout.of(tokenizer, pair_layout)  # the tokenizer's own special tokens around the text or the pair
        if self.inputs.mask_id is None:
            raise UserError("the tokenizer has no mask token: it cannot be probed")
        self.mask_id = self.inputs.mask_id
        self._pieces: dict[str, list[int]] = {}

    def pieces(self, word: str) -> list[int]:
        """A candidate's pieces: "spaced", as it appears in running text (after a space); "codexglue",
        the one vocabulary entry spelled exactly as the word (run_cloze.py's `tokenizer.encoder[word]`)."""
        if word not in self._pieces:
            if self.scoring == "codexglue":
                entry = self.tokenizer.convert_tokens_to_ids(word)
                if entry is None or entry == self.tokenizer.unk_token_id:
                    raise UserError(f"--scoring codexglue: {word!r} is not one entry of the tokenizer's vocabulary (use --scoring spaced)")
                self._pieces[word] = [entry]
            else:
                self._pieces[word] = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        return self._pieces[word]

    def _segment(self, tokens: list[str], span: int) -> tuple[list[int], int | None]:
        """Token ids of a side, with its <mask> (if any) widened to `span` mask ids."""
        if MASK not in tokens:
            return self.tokenizer(" ".join(tokens), add_special_tokens=False, verbose=False)["input_ids"], None
        at = tokens.index(MASK)
        before = self.tokenizer(" ".join(tokens[:at]), add_special_tokens=False, verbose=False)["input_ids"] if at else []
        # The text after the mask starts after a space, as in the joined text.
        after = self.tokenizer(" " + " ".join(tokens[at + 1 :]), add_special_tokens=False, verbose=False)["input_ids"] if at + 1 < len(tokens) else []
        return before + [self.mask_id] * span + after, len(before)

    def encode(self, item: dict[str, Any], span: int) -> tuple[list[int], int, list[int]]:
        """(input ids, position of the first mask, token types) for one item with a span of `span` masks."""
        if self.layout == "joined":
            ids, at = self._segment(item["nl_tokens"] + item["pl_tokens"], span)
            keep = self.max_length - self.inputs.single_overhead
            body = _window(ids, keep, at, span)
            start = 0 if at + span <= keep else at + span - keep
            single = [*self.inputs.prefix, *body, *self.inputs.suffix]
            return single, len(self.inputs.prefix) + at - start, [0] * len(single)
        nl, nl_at = self._segment(item["nl_tokens"], span)
        code, code_at = self._segment(item["pl_tokens"], span)
        nl_keep, code_keep = truncate_pair_lengths(len(nl), len(code), self.max_length - self.inputs.pair_overhead)
        nl_part, code_part = _window(nl, nl_keep, nl_at, span), _window(code, code_keep, code_at, span)
        pair = self.inputs.pair(nl_part, code_part, self.max_length)  # already cut to fit: only laid out here
        return pair.input_ids, pair.input_ids.index(self.mask_id), pair.token_types

    @torch.inference_mode()
    def log_probs(self, items: list[dict[str, Any]], span: int) -> torch.Tensor:
        """(items, span, vocab) log-probabilities at the masked positions."""
        encoded = [self.encode(item, span) for item in items]
        ids, attention = self.inputs.pad([seq for seq, _, _ in encoded])
        types = pad_sequences([t for _, _, t in encoded], 0)[0].to(self.device) if self.inputs.second_type else None
        positions = torch.zeros_like(ids, dtype=torch.bool)
        for row, (_, first, _) in enumerate(encoded):
            positions[row, first : first + span] = True
        out = self.model(ids.to(self.device), attention.to(self.device), mlm_positions=positions.to(self.device), token_type_ids=types)
        return torch.log_softmax(out.mlm_logits.float(), dim=-1).view(len(items), span, -1).cpu()


def choose(scorer: MaskScorer, items: list[dict[str, Any]]) -> list[str]:
    """The predicted class of each item (conventions in the module docstring)."""
    forms = sorted({form for item in items for options in item["candidates"].values() for form in options})
    by_span: dict[int, list[str]] = defaultdict(list)
    for form in forms:
        by_span[len(scorer.pieces(form))].append(form)
    scores = np.full((len(items), len(forms)), -np.inf)
    for span, span_forms in by_span.items():
        lp = scorer.log_probs(items, span)  # (items, span, vocab)
        for form in span_forms:
            pieces = torch.tensor(scorer.pieces(form))
            scores[:, forms.index(form)] = lp[:, torch.arange(span), pieces].mean(-1).numpy()
    picks = []
    for row, item in enumerate(items):
        best = {name: max(scores[row, forms.index(f)] for f in options) for name, options in item["candidates"].items()}
        picks.append(max(best, key=best.get))
    return picks


def run_main(cfg: ProbeRunConfig) -> dict[str, Any]:
    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    items = load_items(cfg)
    tokenizer = load_tokenizer(cfg.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(cfg.model).to(device).eval()
    layout, scoring = protocol(cfg, items)
    scorer = MaskScorer(model, tokenizer, layout, cfg.max_length, device, scoring, cfg.pair_layout)
    correct: dict[tuple[str, str], list[int]] = defaultdict(list)
    picks: dict[int, str] = {}  # position in the file -> picked class
    # Items of one setting share their candidates: score them in batches of that setting.
    groups = defaultdict(list)
    for position, item in enumerate(items):
        groups[item["setting"]].append((position, item))
    bar = tqdm(total=len(items), desc="probe", unit="item", dynamic_ncols=True, disable=not cfg.progress)
    for setting, group in groups.items():
        for start in range(0, len(group), cfg.batch_size):
            batch = group[start : start + cfg.batch_size]
            for (position, item), pick in zip(batch, choose(scorer, [item for _, item in batch])):
                correct[(setting, item["language"])].append(int(pick == item["answer_class"]))
                picks[position] = pick
            bar.update(len(batch))
    bar.close()
    accuracy: dict[str, dict[str, float]] = defaultdict(dict)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for (setting, lang), hits in correct.items():
        accuracy[setting][lang] = float(np.mean(hits))
        counts[setting][lang] = len(hits)
    for setting in list(accuracy):
        hits = [h for (s, _), v in correct.items() if s == setting for h in v]
        accuracy[setting]["all"] = float(np.mean(hits))
        counts[setting]["all"] = len(hits)
    figures = {"model": cfg.model, "label": cfg.label or Path(cfg.model).parent.name or cfg.model, "layout": layout, "scoring": scoring,
               "accuracy": dict(accuracy), "counts": dict(counts),
               "chance": {s: 1 / len(groups[s][0][1]["candidates"]) for s in groups}}
    if cfg.predictions is not None:
        with atomic_write(cfg.predictions) as f:
            for position, item in enumerate(items):
                f.write(f"{item.get('idx', position)}<CODESPLIT>{picks[position]}\n")
    if cfg.out is not None:
        with atomic_write(cfg.out) as f:
            f.write(json.dumps(figures, indent=2) + "\n")
    return figures


def run_render(figures: dict[str, Any]) -> str:
    table = _settings_table(figures["accuracy"], lambda v: "" if v is None else f"{v:.4f}")
    chance = ", ".join(f"{s} {c:.2f}" for s, c in figures["chance"].items())
    return f"{table}\nchance: {chance}; layout {figures['layout']}, scoring {figures['scoring']}"
