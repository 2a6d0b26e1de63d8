"""The pre-training model: a Hugging Face encoder with its family's MLM head and an ELECTRA-style RTD head.

Checkpoint keys are a file format and never change; they are the family's own:
  RoBERTa (ours from scratch, roberta-base, codebert-base):
    roberta.*                                  the encoder, as `RobertaForMaskedLM` names it
    lm_head.{dense,layer_norm,decoder,bias}    RoBERTa's MLM head (decoder tied to the word embeddings)
  BERT (e.g. the packaged all-MiniLM-L6-v2):
    bert.*                                     the encoder, as `BertForMaskedLM` names it
    cls.predictions.{transform.*,decoder,bias} BERT's MLM head (decoder tied to the word embeddings)
  every family:
    discriminator_predictions.{dense,dense_prediction}   ELECTRA's discriminator head, one logit per token
so `AutoModel` and `AutoModelForMaskedLM` open our folders without our code (they skip the RTD head),
and any folder of a supported family initialises ours (heads it lacks are reported as newly
initialised).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import RobertaConfig, RobertaForMaskedLM
from transformers.activations import get_activation

from codebert.backbone import MLM_HEADS, from_pretrained, load_config
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

    def to_roberta(self, vocab_size: int, pad_token_id: int = 1, bos_token_id: int = 0, eos_token_id: int = 2) -> RobertaConfig:
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
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            layer_norm_eps=1e-5,
            architectures=["RobertaForMaskedLM"],
        )


class DiscriminatorHead(nn.Module):
    """ELECTRA's discriminator head: dense -> activation -> dense to one logit per token."""

    def __init__(self, config):
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


class PreTrainingHeads:
    """Mixed into a family's `...ForMaskedLM` class: adds the RTD head and CodeBERT's forward.

    The family's own class keeps its encoder and MLM head under its own key names (`roberta.*` +
    `lm_head.*`, `bert.*` + `cls.predictions.*`, decoder tied to the word embeddings), so that
    `AutoModelForMaskedLM` opens our checkpoints without our code; the RTD head adds
    `discriminator_predictions.*`, which plain transformers skips.
    """

    mlm_head_name: str  # the family's MLM head attribute (backbone.MLM_HEADS)

    def __init__(self, config):
        super().__init__(config)
        self.discriminator_predictions = DiscriminatorHead(config)
        self.post_init()

    def post_init(self):
        # The family's __init__ calls this before the RTD head exists: skipped then, so that the
        # whole model is initialised once, at the end, in module order (as a plain class would,
        # and with the same random weights for a seed as before the families were generalised).
        if "discriminator_predictions" in self._modules:
            super().post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mlm_positions: torch.Tensor | None = None,
        rtd: bool = False,
        token_type_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """Encode once; apply the MLM head at `mlm_positions` (a (B, T) bool mask) and/or the RTD head.

        The MLM head runs only on the selected positions: its vocabulary projection is the
        largest matrix product of a small model, and 85% of its rows would be thrown away.
        `token_type_ids`: a pair's segment types where the family has them (None: all zeros).
        """
        hidden = self.base_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state  # (B, T, H)
        mlm_head = getattr(self, self.mlm_head_name)
        mlm_logits = mlm_head(hidden[mlm_positions]) if mlm_positions is not None else None  # (n, V)
        rtd_logits = self.discriminator_predictions(hidden) if rtd else None  # (B, T)
        return EncoderOutput(mlm_logits=mlm_logits, rtd_logits=rtd_logits)


@functools.cache
def pretraining_class(masked_lm_class: type) -> type:
    """`CodeBertForPreTraining` for one family: its masked-LM class with the RTD head mixed in."""
    model_type = masked_lm_class.config_class.model_type
    if model_type not in MLM_HEADS:
        raise UserError(f"model type {model_type!r} is not supported for pre-training (supported: {', '.join(sorted(MLM_HEADS))})")
    return type("CodeBertForPreTraining", (PreTrainingHeads, masked_lm_class), {"mlm_head_name": MLM_HEADS[model_type]})


def class_for(config) -> type:
    # Imported here: the masked-LM class registry of transformers, resolved only when a family is asked for.
    from transformers import MODEL_FOR_MASKED_LM_MAPPING

    if config.model_type not in MLM_HEADS or type(config) not in MODEL_FOR_MASKED_LM_MAPPING:
        raise UserError(f"model type {config.model_type!r} is not supported for pre-training (supported: {', '.join(sorted(MLM_HEADS))})")
    return pretraining_class(MODEL_FOR_MASKED_LM_MAPPING[type(config)])


# The RoBERTa pre-training model, by name: what from-scratch runs build and older code imports.
CodeBertForPreTraining = pretraining_class(RobertaForMaskedLM)


def new_model(cfg: ModelConfig, vocab_size: int, tokenizer=None) -> CodeBertForPreTraining:
    """A randomly initialised RoBERTa-shaped model (pre-training from scratch), with the tokenizer's special ids."""
    if tokenizer is None:
        return CodeBertForPreTraining(cfg.to_roberta(vocab_size))
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return CodeBertForPreTraining(cfg.to_roberta(vocab_size, tokenizer.pad_token_id, bos, eos))


def load_model(path: str | Path, **overrides):
    """The pre-training model of any BERT- or RoBERTa-family folder (ours, roberta-base, codebert-base,
    the packaged MiniLM, a hub id when online).

    A head the folder lacks (MiniLM has no MLM head; no pre-trained model has our RTD head) is
    newly initialised, the MLM decoder tied to the word embeddings, and reported once; encoder
    weights that do not load are an error (`backbone.check_loaded`).
    """
    config = load_config(path, **overrides)
    return from_pretrained(class_for(config), path, config=config)
