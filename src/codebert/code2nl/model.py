"""The encoder-decoder of code-to-documentation generation, its loss, and its files.

The model is CodeBERT's `code2nl` Seq2Seq: the pre-trained encoder reads the code tokens; a
decoder writes the doc. Conventions of the reference (CodeBERT/code2nl/model.py):
  * decoder: 6 Transformer layers of the encoder's width and heads (`nn.TransformerDecoder`), their
    feed-forward width `nn.TransformerDecoderLayer`'s default, 2048 (run.py passes only d_model
    and nhead), not the encoder's intermediate size;
  * target embeddings are the encoder's embedding module (words and positions), and the output
    projection is tied to the word embeddings after a dense + tanh layer;
  * targets are `<s> doc </s>`, the loss is cross-entropy on the shifted target, padding ignored.
A saved model is the encoder's Hugging Face folder plus DECODER_FILE (decoder and dense layer) and
SPEC_FILE (the Seq2SeqSpec).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from codebert.code2nl.data import Seq2SeqBatch
from codebert.backbone import load_encoder, resolve

SPEC_FILE = "code2nl.json"
DECODER_FILE = "decoder.safetensors"


@dataclass
class Seq2SeqSpec:
    decoder_layers: int = 6  # Transformer decoder layers (the paper: 6)
    max_source_length: int = 256  # code tokens, <s> and </s> included
    max_target_length: int = 64  # doc tokens, <s> and </s> included
    beam_size: int = 10  # beam of generation
    # Decoder feed-forward width; 0: the encoder's intermediate size (what folders written before this
    # field have). New models: 2048, the reference's (`code2nl finetune --decoder-ffn`).
    decoder_ffn: int = 0


class Seq2Seq(nn.Module):
    def __init__(self, encoder, spec: Seq2SeqSpec):
        super().__init__()
        config = encoder.config
        self.encoder, self.spec = encoder, spec
        layer = nn.TransformerDecoderLayer(d_model=config.hidden_size, nhead=config.num_attention_heads,
                                           dim_feedforward=spec.decoder_ffn or config.intermediate_size,
                                           dropout=config.hidden_dropout_prob,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=spec.decoder_layers)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = encoder.embeddings.word_embeddings.weight  # tied, as the reference

    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=source_ids, attention_mask=source_mask).last_hidden_state

    def decode(self, memory: torch.Tensor, source_mask: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the next token after each target prefix."""
        target = self.encoder.embeddings(input_ids=target_ids)
        length = target_ids.shape[1]
        causal = torch.triu(torch.full((length, length), float("-inf"), device=target.device), diagonal=1)
        out = self.decoder(target, memory, tgt_mask=causal, memory_key_padding_mask=source_mask == 0)
        return self.lm_head(torch.tanh(self.dense(out)))

    def forward(self, batch: Seq2SeqBatch) -> torch.Tensor:
        memory = self.encode(batch.source_ids, batch.source_mask)
        logits = self.decode(memory, batch.source_mask, batch.target_ids)
        return seq2seq_loss(logits, batch.target_ids, batch.target_mask)


def seq2seq_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of each target token given the ones before it; padding ignored (mean or sum over tokens)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = target_ids[:, 1:].reshape(-1)
    active = target_mask[:, 1:].reshape(-1).bool()
    return F.cross_entropy(shift_logits[active], shift_labels[active], reduction=reduction)


def save_seq2seq(model: Seq2Seq, tokenizer, folder: Path) -> None:
    """The encoder as a Hugging Face RoBERTa folder, the decoder and head as safetensors, the spec as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = {f"decoder.{k}": v.contiguous() for k, v in model.decoder.state_dict().items()}
    weights.update({f"dense.{k}": v.contiguous() for k, v in model.dense.state_dict().items()})
    save_file(weights, str(folder / DECODER_FILE))
    (folder / SPEC_FILE).write_text(json.dumps(asdict(model.spec), indent=2) + "\n")


def load_seq2seq(folder: str | Path, spec: Seq2SeqSpec | None = None, from_scratch: bool = False, dropout: float | None = None) -> Seq2Seq:
    """A fine-tuned model (folder with code2nl.json), or a new one on a pre-trained encoder."""
    folder = Path(resolve(folder))
    saved = folder / SPEC_FILE
    if saved.is_file():
        spec = Seq2SeqSpec(**json.loads(saved.read_text()))
    encoder = load_encoder(folder, from_scratch=from_scratch, dropout=dropout)  # pre-training heads skipped on purpose
    model = Seq2Seq(encoder, spec or Seq2SeqSpec())
    if saved.is_file():
        weights = load_file(str(folder / DECODER_FILE))
        model.decoder.load_state_dict({k[len("decoder."):]: v for k, v in weights.items() if k.startswith("decoder.")})
        model.dense.load_state_dict({k[len("dense."):]: v for k, v in weights.items() if k.startswith("dense.")})
    return model
