"""Model cards: the README.md every model folder we write carries, as the Hugging Face hub and
sentence-transformers expect one (a YAML metadata block, then prose and tables).

The card says what the model started from (`base_model`), what it learnt on, the recipe (the run's
settings), and every figure measured on it with the command that measured it: training writes
the validation figures; `codebert search evaluate` and `codebert code2nl evaluate` add theirs (test)
as they run. The card's facts live in `model_card.json` beside it, and README.md is rendered from
them each time, so that adding a figure never has to parse Markdown.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codebert.io import atomic_write

CARD_DATA = "model_card.json"
CARD = "README.md"
# The packaged MiniLM is a copy of this hub model: its name is what a reader can look up.
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass
class Figure:
    split: str  # valid or test
    name: str  # e.g. "macro MRR (groups of 1,000)"
    value: float
    command: str  # the command line that measured it


@dataclass
class CardData:
    title: str  # first heading
    kind: str  # search (bi-encoder), search-cross, pretrain, code2nl
    base_model: str  # what training started from: a hub name, a folder, or "none (random weights)"
    data: str  # the corpus folder it learnt on
    languages: list[str]  # languages of that corpus it read (empty: all)
    recipe: dict[str, Any]  # the run's settings worth reading (learning rate, steps, batch, ...)
    training_command: str  # the command line that trained it
    figures: list[Figure] = field(default_factory=list)


# kind -> (library_name, pipeline_tag, tags, one line on what it is)
KINDS = {
    "search": ("sentence-transformers", "sentence-similarity", ["codebert", "code-search", "sentence-transformers"],
               "A bi-encoder for natural-language code search: queries and functions become unit vectors; score = cosine."),
    "search-cross": ("transformers", "text-classification", ["codebert", "code-search"],
                     "The paper's code-search cross-encoder: the positive-class logit of an (NL, code) pair."),
    "pretrain": ("transformers", "fill-mask", ["codebert", "code", "masked-lm", "replaced-token-detection"],
                 "An encoder pre-trained on NL-code pairs (CodeBERT's MLM and/or replaced-token detection)."),
    "code2nl": ("transformers", "text2text-generation", ["codebert", "code-summarization"],
                "Code-to-documentation: the encoder with a Transformer decoder (decoder.safetensors) that writes a summary."),
}


def command_line() -> str:
    """This process's command line, as a user would type it again."""
    return "codebert " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and "codebert" in sys.argv[0] else \
        " ".join(shlex.quote(a) for a in sys.argv)


def base_name(model: str | None) -> str:
    if not model:
        return "none (random weights)"
    return HUB_NAMES.get(str(model), str(model))


def read(folder: Path) -> CardData | None:
    path = folder / CARD_DATA
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return CardData(**{**raw, "figures": [Figure(**f) for f in raw.get("figures", [])]})
    except (json.JSONDecodeError, TypeError):
        return None  # a damaged card is rewritten by the next figure rather than failing an evaluation


def write(folder: Path, card: CardData) -> None:
    with atomic_write(folder / CARD_DATA) as f:
        f.write(json.dumps(asdict(card), indent=2) + "\n")
    with atomic_write(folder / CARD) as f:
        f.write(render(card))


def add_figures(folder: Path, figures: list[Figure]) -> bool:
    """Add (or replace: same split and name) figures on a folder's card; False where it has none."""
    card = read(folder)
    if card is None:
        return False
    keys = {(f.split, f.name) for f in figures}
    card.figures = [f for f in card.figures if (f.split, f.name) not in keys] + figures
    write(folder, card)
    return True


def _yaml_value(value: Any) -> str:
    return json.dumps(value)  # JSON scalars and lists are YAML


def render(card: CardData) -> str:
    library, pipeline, tags, what = KINDS[card.kind]
    meta = [
        "---",
        f"base_model: {_yaml_value(card.base_model)}" if not card.base_model.startswith("none") else "base_model: null",
        f"library_name: {library}",
        f"pipeline_tag: {pipeline}",
        f"tags: {_yaml_value(tags)}",
    ]
    if card.figures:
        meta += ["model-index:", f"- name: {_yaml_value(card.title)}", "  results:"]
        for fig in card.figures:
            meta += [f"  - task: {{type: {pipeline}}}",
                     f"    dataset: {{name: {_yaml_value(Path(card.data).name or card.data)}, type: code, split: {fig.split}}}",
                     f"    metrics: [{{type: {_yaml_value(fig.name)}, value: {fig.value:.4f}}}]"]
    meta.append("---")
    lines = [*meta, "", f"# {card.title}", "", what, "",
             f"Made with codebert (an implementation of CodeBERT, Feng et al., 2020), starting from "
             f"`{card.base_model}`, on `{card.data}`" + (f" ({', '.join(card.languages)})." if card.languages else "."), "",
             "## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card.recipe.items()]
    lines += ["", "Trained with:", "", "```bash", card.training_command, "```", "", "## Figures", ""]
    if card.figures:
        lines += ["| split | figure | value | command |", "|---|---|---|---|"]
        lines += [f"| {f.split} | {f.name} | {f.value:.4f} | `{f.command}` |" for f in card.figures]
    else:
        lines.append("None measured yet.")
    lines += ["", "## Use", "", "```python", *_usage(card.kind), "```", ""]
    return "\n".join(lines)


def _usage(kind: str) -> list[str]:
    if kind == "search":
        return ["from sentence_transformers import SentenceTransformer",
                "model = SentenceTransformer('path/to/this/folder')",
                "scores = model.encode(['parse a date']) @ model.encode(['def parse_date(s): ...']).T"]
    if kind == "pretrain":
        return ["from transformers import AutoModelForMaskedLM, AutoTokenizer",
                "model = AutoModelForMaskedLM.from_pretrained('path/to/this/folder')"]
    if kind == "search-cross":
        return ["from transformers import AutoModelForSequenceClassification",
                "model = AutoModelForSequenceClassification.from_pretrained('path/to/this/folder')"]
    return ["# codebert code2nl generate --model path/to/this/folder path/to/source/tree"]


# The settings of a run worth reading on its card, where its config has them.
RECIPE_FIELDS = ("objective", "loss_reduction", "rtd_weight", "pair_layout", "mode", "pooling", "temperature", "symmetric_loss",
                 "language_batches", "hard_negatives", "learning_rate", "batch_size", "grad_accumulation", "max_steps",
                 "epochs", "warmup_steps", "max_length", "query_length", "max_source_length", "max_target_length",
                 "decoder_layers", "decoder_ffn", "seed")


def write_training_card(folder: Path, kind: str, cfg: Any, base_model: str | None, valid: dict[str, float], steps: int | None = None) -> None:
    """The card of a model a training run just wrote: its start, data, recipe and valid figures."""
    if not (folder / "config.json").is_file():
        return  # no model there (a run with no validation writes no best/)
    recipe = {name: getattr(cfg, name) for name in RECIPE_FIELDS if hasattr(cfg, name)}
    if steps is not None:
        recipe["steps run"] = steps
    languages = list(getattr(cfg, "languages", None) or getattr(cfg, "language", None) or [])
    command = command_line()
    card = CardData(title=f"{folder.parent.name}/{folder.name}", kind=kind, base_model=base_name(base_model), data=str(cfg.data),
                    languages=languages, recipe=recipe, training_command=command,
                    figures=[Figure("valid", name, float(value), command) for name, value in valid.items()])
    write(folder, card)
