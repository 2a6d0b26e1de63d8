"""The model: transformers' RoBERTa encoder with an MLM head and an ELECTRA-style RTD head.

Checkpoint keys are a file format and never change:
  roberta.*                                  the encoder, as `RobertaForMaskedLM` names it
  lm_head.{dense,layer_norm,decoder,bias}    RoBERTa's MLM head (decoder tied to the word embeddings)
  discriminator_predictions.{dense,dense_prediction}   ELECTRA's discriminator head, one logit per token
so `AutoModel` and `AutoModelForMaskedLM` open our folders without our code (they skip the RTD head),
and a local `roberta-base` or `microsoft/codebert-base` folder initialises ours (the RTD head is
then reported as newly initialised).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import RobertaConfig, RobertaModel
from transformers.activations import get_activation
from transformers.models.roberta.modeling_roberta import RobertaLMHead, RobertaPreTrainedModel

from codebert.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """The encoder's shape; `base` is RoBERTa-base, the paper's architecture (§3.1)."""

    hidden_size: int = 768  # width of every layer
    num_hidden_layers: int = 12  # Transformer layers
    num_attention_heads: int = 12  # heads per layer (head size = hidden / heads)
    intermediate_size: int = 3072  # feed-forward inner width
    max_position_embeddings: int = 514  # RoBERTa positions start at padding_idx + 1, so 512 tokens need 514 rows
    hidden_dropout_prob: float = 0.1  # dropout after attention and feed-forward
    attention_probs_dropout_prob: float = 0.1  # dropout on attention weights

    def to_roberta(self, vocab_size: int) -> RobertaConfig:
        return RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            layer_norm_eps=1e-5,
            architectures=["RobertaForMaskedLM"],
        )


class DiscriminatorHead(nn.Module):
    """ELECTRA's discriminator head: dense -> activation -> dense to one logit per token."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = get_activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.activation(self.dense(hidden))).squeeze(-1)  # (B, T)


@dataclass
class EncoderOutput:
    mlm_logits: torch.Tensor | None  # (n_selected, vocab): logits at the selected positions only
    rtd_logits: torch.Tensor | None  # (B, T): one "replaced" logit per position


class CodeBertForPreTraining(RobertaPreTrainedModel):
    """RoBERTa with both pre-training heads. The losses live in `objectives.py`."""

    _tied_weights_keys = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.discriminator_predictions = DiscriminatorHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mlm_positions: torch.Tensor | None = None,
        rtd: bool = False,
    ) -> EncoderOutput:
        """Encode once; apply the MLM head at `mlm_positions` (a (B, T) bool mask) and/or the RTD head.

        The MLM head runs only on the selected positions: its vocabulary projection is the
        largest matrix product of a small model, and 85% of its rows would be thrown away.
        """
        hidden = self.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mlm_logits = self.lm_head(hidden[mlm_positions]) if mlm_positions is not None else None  # (n, V)
        rtd_logits = self.discriminator_predictions(hidden) if rtd else None  # (B, T)
        return EncoderOutput(mlm_logits=mlm_logits, rtd_logits=rtd_logits)


def new_model(cfg: ModelConfig, vocab_size: int) -> CodeBertForPreTraining:
    """A randomly initialised model (pre-training from scratch)."""
    return CodeBertForPreTraining(cfg.to_roberta(vocab_size))


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
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_model(path: str | Path, **overrides) -> CodeBertForPreTraining:
    """Load ours, roberta-base or codebert-base (a local folder, or a hub id when online).

    Weights are read from safetensors only (`check_model_folder`).
    """
    text = str(path)
    check_model_folder(text)
    try:
        model, info = CodeBertForPreTraining.from_pretrained(text, use_safetensors=True, output_loading_info=True, **overrides)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a model from {text!r}: {str(exc).splitlines()[0]}") from None
    missing = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    if missing:
        log.warning("newly initialised (not in %s): %s", text, ", ".join(missing))
    return model
