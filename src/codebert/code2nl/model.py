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

Beyond the reference, for the CPU recipe (`code2nl finetune --recipe cpu`): a copy distribution
(`Seq2SeqSpec.copy`, See et al. 2017's pointer-generator): a gate mixes the vocabulary distribution
with one attention over the source's sub-words, so that a word of the code (an identifier's part)
can be written before the vocabulary has learnt it: the words a summary shares with its code are
most of what the reference's decoder spends its first thousands of steps learning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
    # Beyond the paper (the CPU recipe): a pointer-generator copy distribution over the source's
    # tokens beside the vocabulary's (decode then returns log-probabilities, see `Seq2Seq.decode`).
    copy: bool = False
    # Token ids never copied (the tokenizer's special tokens: <s>, </s>, padding).
    copy_exclude: list[int] = field(default_factory=list)
    # Sources with camelCase identifiers split into words (`getUserName` -> `get User Name`), as
    # `data.split_identifiers`: a lower-casing WordPiece then sees the words a summary uses.
    split_identifiers: bool = False
    # Beam search never repeats an n-gram of this many tokens (0: the reference's beam, no such rule).
    no_repeat_ngram: int = 0
    # Beam search ranks an ended hypothesis by its summed log-probability over length ** this
    # (`decoding.ended_score`; 0: the reference's sum, which prefers short documents).
    length_penalty: float = 0.0
    # Beam search ends no document before this many tokens (`decoding.block_early_end`; 0: the
    # reference's beam, which may end at any length).
    min_length: int = 0
    # The decoder layers' feed-forward activation: relu, nn.TransformerDecoderLayer's default (the
    # reference's); gelu for a decoder warm-started from the encoder's layers (`warm_start_decoder`).
    decoder_activation: str = "relu"
    # Beyond the paper: the encoder reads the summary of the nearest training function (`exemplars.py`,
    # saved in the model folder) before the code, cut to this many tokens (0: the code alone, the paper's).
    exemplar_tokens: int = 0
    # Beyond the paper (the CPU recipe): the token ids the vocabulary distribution covers (the training
    # targets' commonest, `stage.output_vocabulary`; empty: the whole vocabulary, the reference's). Any
    # other token is written only by copying it from the source (needs `copy`).
    output_vocabulary: list[int] = field(default_factory=list)
    # Beyond the paper (the CPU recipe): targets' camelCase identifiers written as their split words with
    # this token between the parts (`data.encode_joined`; -1: targets as written, the reference's), so the
    # copy writes `getImageType` from the split source's `get image type`; generation joins them back.
    joiner: int = -1
    # Beyond the paper (the CPU recipe): the languages whose documents begin with the function's own name,
    # which the beam then writes before the decoder's first word (`decoding.generate`'s forced prefix):
    # those whose training summaries mostly open with it (`data.name_opening_languages`: csn6's Go).
    open_with_name: list[str] = field(default_factory=list)


class Seq2Seq(nn.Module):
    def __init__(self, encoder, spec: Seq2SeqSpec):
        super().__init__()
        config = encoder.config
        self.encoder, self.spec = encoder, spec
        layer = nn.TransformerDecoderLayer(d_model=config.hidden_size, nhead=config.num_attention_heads,
                                           dim_feedforward=spec.decoder_ffn or config.intermediate_size,
                                           dropout=config.hidden_dropout_prob, activation=spec.decoder_activation,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=spec.decoder_layers)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = encoder.embeddings.word_embeddings.weight  # tied, as the reference
        if spec.copy:
            width = config.hidden_size
            self.copy_query = nn.Linear(width, width)  # the decoder state's query of the copy attention
            self.copy_gate = nn.Linear(2 * width, 1)  # P(generate) from the state and what the copy attention read
        if spec.output_vocabulary and not spec.copy:
            raise ValueError("an output vocabulary needs the copy distribution: other tokens are written only by copying")
        # The vocabulary distribution's tokens (None: all), and each token's place among them (-1: not one);
        # buffers that move with the model and stay out of its files (the spec holds the list).
        ids = torch.tensor(sorted(set(spec.output_vocabulary)), dtype=torch.long) if spec.output_vocabulary else None
        place = None
        if ids is not None:
            place = torch.full((config.vocab_size,), -1, dtype=torch.long)
            place[ids] = torch.arange(len(ids))
        self.register_buffer("output_ids", ids, persistent=False)
        self.register_buffer("output_place", place, persistent=False)
        # The CPU recipe trains the decoder alone: the encoder runs without building a graph.
        self.frozen_encoder = False
        # Training only (`code2nl finetune --label-smoothing`; the reference: 0): the share of the
        # training loss spread over the vocabulary distribution (`forward`); never in a valid loss.
        self.label_smoothing = 0.0

    def output_logits(self, state: torch.Tensor) -> torch.Tensor:
        """The vocabulary scores (..., K) of decoder states: the tied output layer over the whole
        vocabulary (K = V), or over `spec.output_vocabulary` alone (K its size, in `output_ids` order):
        the projection onto 30,522 WordPiece rows was a fifth of a CPU recipe step, and 8,192 of
        them cover 99.8% of csn6's summary tokens."""
        hidden = torch.tanh(self.dense(state))
        if self.output_ids is None:
            return self.lm_head(hidden)
        return F.linear(hidden, self.lm_head.weight[self.output_ids])

    def full_logits(self, state: torch.Tensor) -> torch.Tensor:
        """`output_logits` laid over the whole vocabulary (..., V): -inf on the tokens outside it."""
        logits = self.output_logits(state)
        if self.output_ids is None:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.lm_head.weight.shape[0]), float("-inf"))
        return full.index_copy(-1, self.output_ids, logits)

    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            return self.encoder(input_ids=source_ids, attention_mask=source_mask).last_hidden_state

    def states(self, memory: torch.Tensor, source_mask: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """The decoder's output (B, T, H) at each target position, each seeing the prefix up to it."""
        target = self.encoder.embeddings(input_ids=target_ids)
        length = target_ids.shape[1]
        causal = torch.triu(torch.full((length, length), float("-inf"), device=target.device), diagonal=1)
        return self.decoder(target, memory, tgt_mask=causal, memory_key_padding_mask=source_mask == 0)

    def decode(self, memory: torch.Tensor, source_mask: torch.Tensor, target_ids: torch.Tensor,
               source_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, T, V) of the next token after each target prefix: logits, or with `spec.copy`
        log-probabilities (normalised already, so softmax and cross-entropy read both alike);
        `source_ids` (B, S) are needed for the copy."""
        out = self.states(memory, source_mask, target_ids)
        logits = self.full_logits(out)
        if not self.spec.copy:
            return logits
        if source_ids is None:
            raise ValueError("a copying decoder needs the source ids")
        attention, context = self.copy_read(out, memory, source_ids, source_mask)
        return self.mix_copy(logits, out, attention, context, source_ids)

    def copy_read(self, state: torch.Tensor, memory: torch.Tensor, source_ids: torch.Tensor,
                  source_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each decoder state's copy attention (B, T, S) over the source and what it read (B, T, H)."""
        scores = torch.einsum("btd,bsd->bts", self.copy_query(state), memory) / memory.shape[-1] ** 0.5
        attention = self.copy_attention(scores, source_ids, source_mask)
        return attention, torch.einsum("bts,bsd->btd", attention.to(memory.dtype), memory)

    def copy_attention(self, scores: torch.Tensor, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """The copy attention (B, T, S) from its scores: a softmax over the positions that may be
        copied (not padding, not a special token); all 0 where a source has none."""
        copyable = (source_mask != 0) & ~torch.isin(source_ids, source_ids.new_tensor(self.spec.copy_exclude))
        scores = scores.float().masked_fill(~copyable[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)

    def generate_gate(self, state: torch.Tensor, attention: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """g (B, T, 1), P(generate): sigmoid(gate(decoder state, what the copy attention read)), and
        g = 1 where the attention is all 0 (nothing to copy: the vocabulary alone)."""
        generate = torch.sigmoid(self.copy_gate(torch.cat([state, context.to(state.dtype)], dim=-1)).float())
        return torch.where(attention.sum(dim=-1, keepdim=True) > 0, generate, torch.ones_like(generate))

    def mix_copy(self, logits: torch.Tensor, state: torch.Tensor, attention: torch.Tensor, context: torch.Tensor,
                 source_ids: torch.Tensor) -> torch.Tensor:
        """log(g * softmax(logits) + (1 - g) * copy): the copy is the `attention` (B, T, S) summed onto
        the source's token ids, g = sigmoid(gate(decoder state, what the attention read)), g = 1
        where the attention is all 0 (nothing to copy)."""
        generate = self.generate_gate(state, attention, context)
        probs = generate * torch.softmax(logits.float(), dim=-1)
        index = source_ids[:, None, :].expand(-1, attention.shape[1], -1)
        probs = probs.scatter_add(-1, index, (1 - generate) * attention)
        return torch.log(probs.clamp_min(1e-12))

    def forward(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """The training loss: `seq2seq_loss(decode(...))`'s value, computed on the target tokens alone.

        `decode` scores every position against the whole vocabulary, padding included, and the copy
        then builds, normalises and takes the log of a (B, T, V) distribution: on a CPU those V-sized
        passes and their backward were over half of a step. Here the output layer runs only on the
        positions that count, and a copying decoder's probability of each target token is
        g * exp(logit - logsumexp(logits)) + (1 - g) * (its copy attention), read directly.
        tests/test_code2nl.py checks the value against `decode`'s.
        """
        memory = self.encode(batch.source_ids, batch.source_mask)
        target_ids, source_mask = batch.target_ids, batch.source_mask
        out = self.states(memory, source_mask, target_ids)[:, :-1]
        labels, active = target_ids[:, 1:], batch.target_mask[:, 1:].bool()
        logits = self.output_logits(out[active]).float()  # (tokens, K): padding never reaches the vocabulary
        smoothing = self.label_smoothing if self.training else 0.0
        if not self.spec.copy:
            return F.cross_entropy(logits, labels[active], label_smoothing=smoothing)
        attention, context = self.copy_read(out, memory, batch.source_ids, source_mask)  # (B, T - 1, S), (B, T - 1, H)
        generate = self.generate_gate(out, attention, context)[..., 0][active]
        copied = (attention * (batch.source_ids[:, None, :] == labels[:, :, None])).sum(dim=-1)[active]
        places = labels[active]
        if self.output_ids is not None:  # a token outside the output vocabulary: the vocabulary's share is 0
            places = self.output_place[places]
        vocabulary = torch.exp(logits.gather(1, places.clamp_min(0)[:, None])[:, 0] - torch.logsumexp(logits, dim=-1))
        vocabulary = torch.where(places >= 0, vocabulary, torch.zeros_like(vocabulary))
        loss = -torch.log((generate * vocabulary + (1 - generate) * copied).clamp_min(1e-12)).mean()
        if smoothing:
            loss = (1 - smoothing) * loss + smoothing * uniform_cross_entropy(logits)
        return loss


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The mean over tokens of the cross-entropy of the uniform distribution against softmax(logits)
    over the last axis (K scores): mean_k -log p_k = logsumexp(logits) - mean(logits).

    A copying decoder's label smoothing (Szegedy et al., 2016; Vaswani et al., 2017 train with 0.1):
    (1 - e) * (the mixture's loss of the target) + e * this, on the vocabulary distribution alone. It
    is `F.cross_entropy(..., label_smoothing=e)`'s second term, which the decoder without copy uses
    as it is; spreading it over the copy distribution too would need the (tokens, V) mixture that
    `Seq2Seq.forward` avoids building."""
    return (torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1)).mean()


def warm_start_decoder(model: Seq2Seq) -> None:
    """Each decoder layer i starts as the encoder's layer i (Rothe et al., 2020, "Leveraging
    Pre-trained Checkpoints for Sequence Generation Tasks": BERT2BERT against BERT2RND): its
    self-attention, feed-forward and their layer norms copied; the cross-attention (and its norm)
    stays as initialised, as theirs. Beyond the paper (its decoder starts at random).

    The bottom layers, not the top: the decoder reads the same token embeddings (the encoder's own
    embedding layer) that the encoder's first layers were trained on. Needs a decoder of the
    encoder's shape: its feed-forward width and activation (`decoder_ffn` 0, `decoder_activation`
    the encoder's), no more layers than it has. BERT- and RoBERTa-family encoders (one layout).
    """
    config = model.encoder.config
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"{type(model.encoder).__name__} has no encoder.layer list to start the decoder from")
    if len(model.decoder.layers) > len(layers):
        raise ValueError(f"a decoder of {len(model.decoder.layers)} layers cannot start from an encoder of {len(layers)}")
    if (model.spec.decoder_ffn or config.intermediate_size) != config.intermediate_size or model.spec.decoder_activation != config.hidden_act:
        raise ValueError("a decoder started from the encoder needs its feed-forward width and activation "
                         f"({config.intermediate_size}, {config.hidden_act})")
    with torch.no_grad():
        for decoder_layer, encoder_layer in zip(model.decoder.layers, layers):
            attention = encoder_layer.attention.self
            decoder_layer.self_attn.in_proj_weight.copy_(torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
            decoder_layer.self_attn.in_proj_bias.copy_(torch.cat([attention.query.bias, attention.key.bias, attention.value.bias]))
            for target, source in ((decoder_layer.self_attn.out_proj, encoder_layer.attention.output.dense),
                                   (decoder_layer.norm1, encoder_layer.attention.output.LayerNorm),
                                   (decoder_layer.linear1, encoder_layer.intermediate.dense),
                                   (decoder_layer.linear2, encoder_layer.output.dense),
                                   (decoder_layer.norm3, encoder_layer.output.LayerNorm)):
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)


def seq2seq_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor, reduction: str = "mean",
                 log_probs: bool = False) -> torch.Tensor:
    """Cross-entropy of each target token given the ones before it; padding ignored (mean or sum over tokens).
    `log_probs`: the scores are normalised already (a copying decoder's), read as they are."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = target_ids[:, 1:].reshape(-1)
    active = target_mask[:, 1:].reshape(-1).bool()
    if log_probs:  # the same value as cross_entropy's (a log-softmax of log-probabilities changes nothing), one pass less
        return F.nll_loss(shift_logits[active], shift_labels[active], reduction=reduction)
    return F.cross_entropy(shift_logits[active], shift_labels[active], reduction=reduction)


def _decoder_parts(spec: Seq2SeqSpec) -> tuple[str, ...]:
    """The modules DECODER_FILE holds, each under its own name as key prefix (names never change)."""
    return ("decoder", "dense", "copy_query", "copy_gate") if spec.copy else ("decoder", "dense")


def save_seq2seq(model: Seq2Seq, tokenizer, folder: Path) -> None:
    """The encoder as a Hugging Face RoBERTa folder, the decoder and head as safetensors, the spec as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = {f"{part}.{k}": v.contiguous() for part in _decoder_parts(model.spec) for k, v in getattr(model, part).state_dict().items()}
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
        for part in _decoder_parts(model.spec):
            getattr(model, part).load_state_dict({k[len(part) + 1:]: v for k, v in weights.items() if k.startswith(part + ".")})
    return model
