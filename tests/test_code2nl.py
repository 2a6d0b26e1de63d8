"""Code-to-documentation: the Seq2Seq model learns, beam search, saving, CodeNN files, BLEU agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codebert.cli import main as cli_main
from codebert.code2nl import stage as code2nl
from codebert.code2nl.data import read_codenn, wrap
from codebert.code2nl.decoding import IncrementalDecoder, beam_search, plain_beam_search
from codebert.code2nl.model import Seq2SeqSpec, load_seq2seq
from codebert.inputs import pad_sequences
from codebert.bleu import corpus_bleu, read_predictions, read_references
from codebert.config import load_config, read_preset
from codebert.errors import UserError
from codebert.backbone import load_tokenizer
from conftest import CORPUS


def finetune_config(model, out, **flags):
    flags = {"model": str(model), "data": str(CORPUS), "out": str(out), "progress": "false", "threads": "1", **flags}
    return load_config(code2nl.Code2nlFinetuneConfig, read_preset("tiny", "code2nl"), flags)


@pytest.fixture(scope="module")
def c2n_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("c2n") / "run"
    figures = code2nl.finetune_main(finetune_config(tiny_model_dir, out, max_steps="30", eval_every="15"))
    return out, figures


def sequence_log_prob(model, source_ids, source_mask, tokens):
    memory = model.encode(source_ids, source_mask)
    target = torch.tensor([[0, *tokens, 2]])
    logits = model.decode(memory, source_mask, target)
    lp = torch.log_softmax(logits.float(), -1)[0, :-1]
    return float(lp[torch.arange(len(tokens) + 1), target[0, 1:]].sum())


def test_finetuning_saves_a_folder_that_reloads_to_the_same_model(c2n_run):
    out, figures = c2n_run
    best = out / "best"
    assert {"config.json", "model.safetensors", "decoder.safetensors", "code2nl.json", "tokenizer.json"} <= {p.name for p in best.iterdir()}
    assert figures["best_metric"] == "loss"  # auto on a CPU: the reference's checkpoint-best-ppl rule
    valid = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"valid_loss"' in line]
    assert len(valid) == 2 and figures["best_valid_loss"] == min(r["valid_loss"] for r in valid)  # the lowest, not the highest
    assert all(r["valid_shuffled_loss"] - r["valid_loss"] == pytest.approx(r["valid_shuffle_gain"]) for r in valid)
    model = load_seq2seq(best).eval()
    # The reference's decoder layer: nn.TransformerDecoderLayer's default feed-forward width, 2048.
    assert json.loads((best / "code2nl.json").read_text())["decoder_ffn"] == 2048
    assert model.decoder.layers[0].linear1.out_features == 2048
    again = load_seq2seq(best).eval()
    ids = torch.tensor([[0, 10, 11, 12, 2]])
    mask = torch.ones_like(ids)
    target = torch.tensor([[0, 20, 21]])
    with torch.no_grad():
        assert torch.equal(model.decode(model.encode(ids, mask), mask, target), again.decode(again.encode(ids, mask), mask, target))
    assert model.lm_head.weight.data_ptr() == model.encoder.embeddings.word_embeddings.weight.data_ptr()  # tied


def test_beam_search_finds_at_least_the_greedy_score(c2n_run):
    out, _ = c2n_run
    model = load_seq2seq(out / "best").eval()
    tokenizer = load_tokenizer(out / "best")
    ids, mask = pad_sequences([wrap(np.array(tokenizer("def f ( x ) : return x + 1")["input_ids"][1:-1]), 64)], 1)
    greedy = beam_search(model, ids, mask, beam=1, max_length=12)[0]
    wide = beam_search(model, ids, mask, beam=6, max_length=12)[0]
    with torch.no_grad():
        if len(greedy) < 11 and len(wide) < 11:  # both ended with </s>: comparable complete hypotheses
            assert sequence_log_prob(model, ids, mask, wide) >= sequence_log_prob(model, ids, mask, greedy) - 1e-4
        # greedy = the argmax at every step
        prefix = [0]
        memory = model.encode(ids, mask)
        for _ in range(11):
            nxt = int(model.decode(memory, mask, torch.tensor([prefix]))[0, -1].argmax())
            if nxt == 2:
                break
            prefix.append(nxt)
    assert greedy == prefix[1:]


# An output vocabulary for the tiny model: the end token and a band of ids that leaves out the
# tests' source tokens 40-60, so that those are written only by copying.
VOCABULARY = [2, *range(3, 40), *range(61, 200)]


def random_seq2seq(tiny_model_dir, seed=0, copy=False, vocabulary=()):
    torch.manual_seed(seed)
    spec = Seq2SeqSpec(decoder_layers=2, copy=copy, copy_exclude=[0, 1, 2] if copy else [], output_vocabulary=list(vocabulary))
    return load_seq2seq(tiny_model_dir, spec, dropout=0.0).eval()


def check_cached_decoder(model, device: torch.device, tolerance: float) -> None:
    """The cached decoder's logits against the full decode's, step by step, on `device`."""
    model = model.to(device)
    vocab = model.encoder.config.vocab_size
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded sources: the cached cross-attention must skip padding too
    mask[2, 4:] = 0
    ids[mask == 0] = 1
    targets = torch.randint(5, vocab, (3, 7), generator=generator)
    targets[:, 0] = 0
    targets[0, 3] = 1  # a generated padding token: RoBERTa positions skip it, the cache must as well
    ids, mask, targets = ids.to(device), mask.to(device), targets.to(device)
    with torch.no_grad():
        memory = model.encode(ids, mask)
        full = model.decode(memory, mask, targets, ids)
        decoder = IncrementalDecoder(model, memory, mask, ids)
        for t in range(targets.shape[1]):
            torch.testing.assert_close(decoder.step(targets[:, t]), full[:, t], atol=tolerance, rtol=tolerance)
        # re-ordered and repeated rows carry their own caches
        decoder.select(torch.tensor([2, 2, 0], device=device))
        again = torch.cat([targets[[2, 2, 0]], torch.tensor([[7], [8], [9]], device=device)], dim=1)
        expected = model.decode(memory[[2, 2, 0]], mask[[2, 2, 0]], again, ids[[2, 2, 0]])[:, -1]
        torch.testing.assert_close(decoder.step(again[:, -1]), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("copy, vocabulary", [(False, ()), (True, ()), (True, VOCABULARY)])
def test_the_cached_decoder_gives_the_logits_of_the_full_decode(tiny_model_dir, copy, vocabulary):
    check_cached_decoder(random_seq2seq(tiny_model_dir, copy=copy, vocabulary=vocabulary), torch.device("cpu"), 1e-4)


def test_an_output_vocabulary_writes_its_tokens_and_copies_the_rest(tiny_model_dir):
    model = random_seq2seq(tiny_model_dir, seed=2, copy=True, vocabulary=VOCABULARY)
    ids = torch.tensor([[0, 50, 51, 50, 2]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        probs = model.decode(model.encode(ids, mask), mask, torch.tensor([[0, 7]]), ids).exp()[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(2), atol=1e-4, rtol=0)
    outside = torch.ones(probs.shape[-1], dtype=torch.bool)
    outside[VOCABULARY] = False
    outside[[50, 51]] = False
    assert (probs[:, outside] < 1e-10).all()  # neither in the vocabulary nor in the source: never written
    assert (probs[:, [50, 51]] > 1e-4).all() and (probs[:, VOCABULARY] > 0).all()  # copied; the vocabulary's own
    with pytest.raises(ValueError, match="copy"):
        random_seq2seq(tiny_model_dir, vocabulary=VOCABULARY)


def test_the_output_vocabulary_is_the_commonest_target_tokens_and_the_ones_always_kept():
    targets = [np.array([5, 5, 7, 9]), np.array([7, 5, 11]), np.array([9, 13])]
    assert code2nl.output_vocabulary(targets, 2, [2, 103]) == [2, 5, 7, 103]  # 5 (3 times), 7 (2; ties: the smaller id)
    assert code2nl.output_vocabulary(targets, 100, [-1]) == [5, 7, 9, 11, 13]  # no joiner (-1): nothing more


def test_the_copy_distribution_is_a_distribution_that_writes_the_sources_own_tokens(tiny_model_dir):
    import dataclasses

    model = random_seq2seq(tiny_model_dir, seed=2, copy=True)
    ids = torch.tensor([[0, 50, 51, 50, 2], [0, 60, 2, 1, 1]])
    mask = (ids != 1).long()
    targets = torch.tensor([[0, 7, 8], [0, 9, 9]])
    with torch.no_grad():
        memory = model.encode(ids, mask)
        probs = model.decode(memory, mask, targets, ids).exp()
        copying = model.spec
        model.spec = dataclasses.replace(copying, copy=False)
        vocabulary = torch.softmax(model.decode(memory, mask, targets), dim=-1)
        model.spec = copying
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3), atol=1e-4, rtol=0)
    # g * vocabulary + (1 - g) * copy: a token the source lacks keeps g times its vocabulary probability
    ratio = probs / vocabulary
    gate = ratio[..., 7:8]
    assert ((gate > 0) & (gate < 1)).all()
    assert (ratio[0, :, [50, 51]] > gate[0] + 1e-3).all() and (ratio[1, :, 60] > gate[1, :, 0] + 1e-3).all()
    # the special tokens (<s>, </s>, padding) are never copied, nor a token of another source
    torch.testing.assert_close(ratio[..., [0, 1, 2]], gate.expand(-1, -1, 3), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ratio[0, :, 60], gate[0, :, 0], atol=1e-4, rtol=1e-4)


def loss_batch():
    """Three sources and their targets for the training-loss tests: a target token the source has
    (41, 42: outside VOCABULARY, so only copied), one it has not (9), and a padded target."""
    from codebert.code2nl.data import Seq2SeqBatch

    ids, mask = pad_sequences([[0, 40, 41, 42, 41, 2], [0, 44, 2], [0, 45, 46, 47, 2]], 1)
    targets, target_mask = pad_sequences([[0, 41, 9, 42, 2], [0, 44, 44, 2], [0, 2]], 1)
    return Seq2SeqBatch(ids, mask, targets, target_mask)


@pytest.mark.parametrize("copy, vocabulary", [(False, ()), (True, ()), (True, VOCABULARY)])
def test_the_training_loss_is_the_loss_of_decodes_scores(tiny_model_dir, copy, vocabulary):
    from codebert.code2nl.model import seq2seq_loss

    model = random_seq2seq(tiny_model_dir, seed=6, copy=copy, vocabulary=vocabulary)
    batch = loss_batch()
    ids, mask, targets, target_mask = batch.source_ids, batch.source_mask, batch.target_ids, batch.target_mask
    fast = model(batch)
    fast_grads = torch.autograd.grad(fast, [model.dense.weight, *([model.copy_gate.weight] if copy else [])])
    slow = seq2seq_loss(model.decode(model.encode(ids, mask), mask, targets, ids), targets, target_mask, log_probs=copy)
    slow_grads = torch.autograd.grad(slow, [model.dense.weight, *([model.copy_gate.weight] if copy else [])])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("copy, vocabulary", [(False, ()), (True, ()), (True, VOCABULARY)])
def test_label_smoothing_spreads_its_share_over_the_vocabulary_in_training_alone(tiny_model_dir, copy, vocabulary):
    model = random_seq2seq(tiny_model_dir, seed=6, copy=copy, vocabulary=vocabulary)  # no dropout: train() changes nothing else
    batch = loss_batch()
    ids, mask, targets, target_mask = batch.source_ids, batch.source_mask, batch.target_ids, batch.target_mask
    plain = model(batch)
    model.label_smoothing = 0.2
    torch.testing.assert_close(model(batch), plain, atol=0, rtol=0)  # evaluation: the loss as it is
    smoothed = model.train()(batch)
    # 0.8 * the target's loss + 0.2 * the mean over the vocabulary distribution's K tokens of -log p
    states = model.states(model.encode(ids, mask), mask, targets)[:, :-1][target_mask[:, 1:].bool()]
    log_probs = torch.log_softmax(model.output_logits(states).float(), dim=-1)
    assert log_probs.shape[-1] == (len(vocabulary) or model.encoder.config.vocab_size)
    torch.testing.assert_close(smoothed, 0.8 * plain + 0.2 * (-log_probs).mean(), atol=1e-5, rtol=1e-5)


def test_finetuning_smooths_the_training_loss_it_is_given_and_rejects_a_share_outside_0_1(tmp_path, tiny_model_dir, monkeypatch):
    from codebert.code2nl import model as seq2seq

    calls = []
    uniform = seq2seq.uniform_cross_entropy
    monkeypatch.setattr(seq2seq, "uniform_cross_entropy", lambda logits: calls.append(logits.shape) or uniform(logits))
    flags = {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path / "run"), "progress": "false",
             "threads": "1", "recipe": "cpu", "max_steps": "2", "eval_every": "0", "max_source_length": "64",
             "max_target_length": "16", "valid_examples": "8", "precision": "fp32"}
    code2nl.finetune_main(load_config(code2nl.Code2nlFinetuneConfig, None, {**flags, "label_smoothing": "0.1"}))
    assert len(calls) == 2  # once a training step (the copying decoder's path); validation never smooths
    with pytest.raises(UserError, match="label-smoothing"):
        load_config(code2nl.Code2nlFinetuneConfig, None, {**flags, "label_smoothing": "1"})


@pytest.mark.parametrize("copy, repeats, alpha, vocabulary", [(False, 0, 0.0, ()), (True, 0, 0.0, ()), (True, 2, 0.0, ()),
                                                               (True, 0, 1.0, ()), (False, 2, 2.0, ()), (True, 0, 0.0, VOCABULARY)])
def test_beam_search_of_a_copying_decoder_equals_the_plain_search(tiny_model_dir, copy, repeats, alpha, vocabulary):
    model = random_seq2seq(tiny_model_dir, seed=4, copy=copy, vocabulary=vocabulary)
    ids, mask = pad_sequences([[0, 40, 41, 42, 43, 2], [0, 44, 2], [0, 45, 46, 47, 2]], 1)
    for beam in (1, 3):
        batched = beam_search(model, ids, mask, beam=beam, max_length=8, no_repeat_ngram=repeats, length_penalty=alpha)
        alone = [plain_beam_search(model, ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())], beam, 8,
                                   no_repeat_ngram=repeats, length_penalty=alpha) for i in range(3)]
        assert batched == alone
        if repeats:
            for hyp in batched:
                pairs = list(zip(hyp, hyp[1:]))
                assert len(pairs) == len(set(pairs))  # no bigram twice


def test_a_length_penalty_ranks_an_ended_document_by_its_log_probability_per_token():
    from codebert.code2nl.decoding import ended_score

    short, long = (-2.0, 1), (-6.0, 6)  # (summed log-probability, tokens with </s>)
    assert ended_score(*short, 0.0) > ended_score(*long, 0.0)  # the reference's sum: the short one
    assert ended_score(*long, 1.0) > ended_score(*short, 1.0)  # -1 a token against -2
    assert ended_score(-6.0, 4, 0.5) == -3.0


def test_a_repeated_ngram_is_blocked_and_nothing_else():
    from codebert.code2nl.decoding import block_repeats

    rows = block_repeats(torch.zeros(3, 10), [[5, 6, 7, 5, 6], [5, 6, 5], [1, 2]], 3)
    assert torch.isinf(rows[0, 7]) and torch.isinf(rows).sum() == 1  # 5 6 -> 7 was written: not again; nothing else banned
    assert torch.equal(block_repeats(torch.zeros(2, 4), [[1, 1, 1], [2]], 0), torch.zeros(2, 4))  # 0: the reference's beam
    assert torch.isinf(block_repeats(torch.zeros(1, 4), [[3, 3]], 2)[0, 3])  # 3 3 written: a third 3 would repeat it


@pytest.mark.parametrize("trained", [True, False])
def test_batched_beam_search_equals_searching_each_source_alone(c2n_run, tiny_model_dir, trained):
    # trained: hypotheses end with </s>; random: most run to max_length (the other stopping rule)
    out, _ = c2n_run
    model = load_seq2seq(out / "best").eval() if trained else random_seq2seq(tiny_model_dir, seed=3)
    tokenizer = load_tokenizer(out / "best") if trained else load_tokenizer(tiny_model_dir)
    sources = ["def f ( x ) : return x + 1", "def get ( self ) : return self . value",
               "def add ( a , b ) :\n    total = a + b\n    return total", "x", "public int size ( ) { return n ; }"]
    ids, mask = pad_sequences([wrap(np.array(tokenizer(s)["input_ids"][1:-1]), 64) for s in sources], 1)
    for beam in (1, 4):
        batched = beam_search(model, ids, mask, beam=beam, max_length=10)
        with torch.no_grad():
            alone = [plain_beam_search(model, ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())], beam, 10)
                     for i in range(len(sources))]
        assert batched == alone


@pytest.mark.parametrize("copy", [False, True])
def test_a_least_length_keeps_every_document_open_until_it_has_that_many_tokens(tiny_model_dir, copy):
    model = random_seq2seq(tiny_model_dir, seed=5, copy=copy)
    # </s> made likely at every step (a trained decoder's habit of ending after a few tokens)
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + 50.0 * (torch.arange(logits.shape[-1]) == 2))
    ids, mask = pad_sequences([[0, 40, 41, 42, 43, 2], [0, 44, 2], [0, 45, 46, 47, 2]], 1)
    assert max(len(h) for h in beam_search(model, ids, mask, beam=3, max_length=12)) < 4  # without the rule: short
    for beam in (1, 3):
        batched = beam_search(model, ids, mask, beam=beam, max_length=12, min_length=6)
        assert all(len(h) >= 6 and 2 not in h for h in batched)  # none ended early, </s> not written inside
        alone = [plain_beam_search(model, ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())], beam, 12,
                                   min_length=6) for i in range(3)]
        assert batched == alone


def test_a_decoder_started_from_the_encoder_computes_the_encoders_layers_where_its_source_is_silent(tiny_model_dir):
    from transformers import AutoConfig

    from codebert.code2nl.model import warm_start_decoder

    act = AutoConfig.from_pretrained(tiny_model_dir).hidden_act
    torch.manual_seed(0)
    model = load_seq2seq(tiny_model_dir, Seq2SeqSpec(decoder_layers=2, decoder_ffn=0, decoder_activation=act), dropout=0.0).eval()
    token = torch.tensor([[57]])
    expected = model.encoder(input_ids=token, output_hidden_states=True).hidden_states[2]
    memory = torch.randn(1, 3, model.encoder.config.hidden_size)
    with torch.no_grad():
        for layer in model.decoder.layers:  # the cross-attention silenced: what is left is the encoder's layer
            layer.multihead_attn.out_proj.weight.zero_()
            layer.multihead_attn.out_proj.bias.zero_()
        started_at_random = model.decoder(model.encoder.embeddings(input_ids=token), memory)
        warm_start_decoder(model)
        started = model.decoder(model.encoder.embeddings(input_ids=token), memory)
    torch.testing.assert_close(started, expected, atol=1e-3, rtol=0)
    assert (started_at_random - expected).abs().max() > 0.1
    with pytest.raises(ValueError, match="feed-forward width and activation"):
        warm_start_decoder(load_seq2seq(tiny_model_dir, Seq2SeqSpec(decoder_layers=1, decoder_ffn=128, decoder_activation=act)))


def test_finetuning_with_a_decoder_started_from_the_encoder(tmp_path, tiny_model_dir):
    figures = code2nl.finetune_main(finetune_config(tiny_model_dir, tmp_path / "run", decoder_init="encoder", max_steps="4",
                                                    eval_every="0", save_every="0"))
    spec = load_seq2seq(tmp_path / "run" / "best").spec
    assert (spec.decoder_ffn, spec.decoder_activation) == (0, "gelu") and figures["step"] == 4
    with pytest.raises(UserError, match="cannot start from an encoder of 2"):
        code2nl.finetune_main(finetune_config(tiny_model_dir, tmp_path / "deep", decoder_init="encoder", decoder_layers="3"))


def test_the_model_memorises_a_few_docs(tmp_path, tiny_model_dir):
    decoder = "run"
    cfg = finetune_config(tiny_model_dir, tmp_path / decoder, max_records="8", batch_size="8",
                          max_steps="120", learning_rate="0.01", log_every="10", valid_examples="4")
    code2nl.finetune_main(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / decoder / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses[-1] < 0.25 * losses[0]  # measured with the 2048-wide feed-forward: 5.8 -> ~0.7 in 120 steps at this rate


def test_evaluate_writes_files_that_codebert_bleu_scores_the_same(c2n_run, tmp_path):
    out, _ = c2n_run
    cfg = load_config(code2nl.Code2nlEvaluateConfig, None, {"model": str(out / "best"), "data": str(CORPUS),
                                                            "out": str(tmp_path), "max_records": "10", "progress": "false"})
    figures = code2nl.evaluate_main(cfg)
    score, scored = corpus_bleu(read_references(tmp_path / "references.txt"), read_predictions(tmp_path / "predictions.txt"))
    assert scored == 10 and score == pytest.approx(figures["python"], abs=1e-9)
    docs = [line.split("\t", 1)[1] for line in (tmp_path / "predictions.txt").read_text().splitlines()]
    assert (figures["distinct_predictions"], figures["predictions"]) == (len(set(docs)), 10)
    assert figures["python_shuffled_loss"] - figures["python_loss"] == pytest.approx(figures["python_shuffle_gain"])
    assert "Does the decoder read its source?" in code2nl.evaluate_render(figures)


def test_a_model_saved_before_the_ffn_field_keeps_the_encoders_width(tiny_model_dir):
    model = load_seq2seq(tiny_model_dir, Seq2SeqSpec(decoder_layers=1))  # a code2nl.json without decoder_ffn reads as this
    assert model.decoder.layers[0].linear1.out_features == model.encoder.config.intermediate_size


def test_sources_and_docs_are_read_as_run_py_reads_them():
    from codebert.code2nl.data import source_text, target_text

    code = ["def", "f", "(", ")", ":", "return", '"""a\nb"""', "\t", "+", "1"]
    doc = ["Adds", "one\nto", " the ", "value"]
    # run.py: ' '.join(code_tokens).replace('\n', ' '), then ' '.join(code.strip().split()); the doc's '\n' removed
    assert source_text(code) == 'def f ( ) : return """a b""" + 1'
    assert target_text(doc) == "Adds oneto the value"


def test_the_shuffle_diagnostic_is_zero_for_a_decoder_that_cannot_read_a_difference(c2n_run):
    from codebert.code2nl.data import EncodedPairs
    from codebert.inputs import Layout

    out, _ = c2n_run
    model, tokenizer = load_seq2seq(out / "best").eval(), load_tokenizer(out / "best")
    layout = Layout.of(tokenizer)
    encode = lambda text: np.array(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    targets = [encode(t) for t in ("Return the sum .", "Open a file .", "Sort it .")]
    same = encode("def f ( x ) : return x")
    identical = code2nl.source_shuffle_losses(model, EncodedPairs([same] * 3, targets), layout, 2, torch.device("cpu"))
    assert identical["shuffle_gain"] == pytest.approx(0.0, abs=1e-5)  # every source the same: shuffling changes nothing
    own = [encode(c) for c in ("def add ( a , b ) : return a + b", "def load ( p ) : return open ( p )", "x . sort ( )")]
    varied = code2nl.source_shuffle_losses(model, EncodedPairs(own, targets), layout, 2, torch.device("cpu"))
    assert varied["shuffle_gain"] != pytest.approx(0.0, abs=1e-5) and varied["loss"] > 0


@pytest.mark.parametrize("distinct, total, constant", [(1, 600, True), (30, 600, True), (31, 600, False), (1, 1, False), (2, 10, False)])
def test_a_generator_is_called_constant_at_five_percent_distinct_documents(distinct, total, constant):
    assert code2nl.is_constant(distinct, total) is constant


def test_codenn_lines_and_three_references_per_id(tmp_path):
    data = tmp_path / "valid.txt"
    data.write_text("7\t100\tHow to sort a list\tlist.Sort();\t1\nbroken line\n8\t101\tRead a file\tFile.ReadAllText(p);\t0\n")
    refs = tmp_path / "ref.txt"
    refs.write_text("7\tHow to sort a list\n7\tsorting a list in c#\n7\tsort list\n")
    pairs = read_codenn(data, refs)
    assert pairs.ids == ["7", "8"] and pairs.sources[1] == "File.ReadAllText(p);"
    assert pairs.targets == [["How to sort a list", "sorting a list in c#", "sort list"], ["Read a file"]]


def test_generate_writes_a_summary_for_every_function_of_a_source_tree(c2n_run, tmp_path, capsys):
    import json

    from conftest import SAMPLES

    out, _ = c2n_run
    code = cli_main(["code2nl", "generate", "--model", str(out / "best"), "--data", str(SAMPLES), "--format", "tree",
                     "--out", str(tmp_path / "gen"), "--beam-size", "2", "--no-progress", "--json"])
    assert code == 0
    printed = capsys.readouterr().out
    figures = json.loads(printed.strip().splitlines()[-1])
    summaries = figures["summaries"]
    assert len(summaries) == figures["predictions"] > 20  # every function with a body, in every language
    assert {s["language"] for s in summaries} >= {"python", "go", "java"}
    parse = next(s for s in summaries if s["name"] == "parse_memory")
    assert parse["location"].endswith("memory.py:6-15") and parse["summary"] and parse["docstring"]
    lines = (tmp_path / "gen" / "predictions.txt").read_text().splitlines()
    assert len(lines) == len(summaries) and lines[0].split("\t")[0] == summaries[0]["location"]
    assert cli_main(["code2nl", "evaluate", "--model", str(out / "best"), "--data", str(SAMPLES), "--format", "tree",
                     "--out", str(tmp_path / "x")]) == 2
    assert "no reference summaries" in capsys.readouterr().err


def test_the_ir_baseline_gives_each_function_its_nearest_training_summary(tmp_path, monkeypatch):
    from codebert.backbone import PACKAGED_MINILM
    from codebert.code2nl.data import read_csn
    from codebert.experiments.ir_baseline import BiEncoder, Code2nlBaselineConfig, main
    from conftest import CORPUS

    flags = {"model": PACKAGED_MINILM, "data": str(CORPUS), "out": str(tmp_path), "max_records": "8", "progress": "false", "threads": "1"}
    figures = main(load_config(Code2nlBaselineConfig, None, flags))
    # the training functions' vectors are kept: a second run encodes the test functions alone, and agrees
    encoded, vectors = [], BiEncoder.vectors
    monkeypatch.setattr(BiEncoder, "vectors", lambda self, texts, *a, **k: encoded.append(len(texts)) or vectors(self, texts, *a, **k))
    again = main(load_config(Code2nlBaselineConfig, None, flags))
    assert encoded == [8] and again["python"] == figures["python"]
    monkeypatch.undo()
    train = read_csn(CORPUS, "train", ["python"], 0)
    lines = (tmp_path / "predictions.txt").read_text().splitlines()
    assert len(lines) == 8 == figures["python_examples"] and figures["python_train"] == len(train.ids)
    assert all(line.split("\t", 1)[1] in {t[0] for t in train.targets} for line in lines)  # every one a training summary
    assert 0 <= figures["python"] <= 100 and figures["macro_bleu"] == figures["python"]
    # the nearest one: a training function documented by itself is given its own summary
    same = main(load_config(Code2nlBaselineConfig, None, {"model": PACKAGED_MINILM, "data": str(CORPUS), "out": str(tmp_path / "t"),
                                                          "split": "train", "max_records": "5", "progress": "false", "threads": "1"}))
    assert same["python"] > 90


def test_the_cpu_recipe_trains_the_decoder_alone_and_keeps_the_options_given(tmp_path, tiny_model_dir):
    flags = {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path / "run"), "progress": "false",
             "threads": "1", "recipe": "cpu", "max_steps": "12", "eval_every": "6", "learning_rate": "0.003",
             "max_source_length": "64", "max_target_length": "16", "valid_examples": "8", "precision": "fp32"}
    figures = code2nl.finetune_main(load_config(code2nl.Code2nlFinetuneConfig, None, flags))
    assert figures["recipe"] == "cpu"
    saved = json.loads((tmp_path / "run" / "best" / "run_config.json").read_text())
    # The recipe's values where no option was given, the user's where one was.
    assert (saved["frozen_encoder"], saved["copy"], saved["split_identifiers"], saved["decoder_layers"]) == (True, True, True, 2)
    assert (saved["learning_rate"], saved["max_steps"], saved["batch_size"]) == (0.003, 12, code2nl.CPU_RECIPE["batch_size"])
    spec = json.loads((tmp_path / "run" / "best" / "code2nl.json").read_text())
    assert spec["copy"] and spec["split_identifiers"] and set(spec["copy_exclude"]) >= {0, 1, 2} and spec["no_repeat_ngram"] == 3
    assert spec["length_penalty"] == code2nl.CPU_RECIPE["length_penalty"] > 0  # its beam ranks ended documents per token
    assert spec["beam_size"] == code2nl.CPU_RECIPE["beam_size"] < 10  # narrower than the paper's beam: measured on valid
    assert spec["open_with_name"] == []  # read from the summaries: the fixture's Python ones do not open with the name
    # summaries' identifiers joined with the mask token; a vocabulary distribution over the training summaries' tokens
    assert spec["joiner"] == load_tokenizer(tiny_model_dir).mask_token_id >= 0
    assert spec["joiner"] in spec["output_vocabulary"] and 2 in spec["output_vocabulary"]
    start, trained = load_seq2seq(tiny_model_dir), load_seq2seq(tmp_path / "run" / "final")
    for (name, before), after in zip(start.encoder.state_dict().items(), trained.encoder.state_dict().values()):
        assert torch.equal(before, after), name  # the encoder held still
    assert trained.copy_gate.weight.abs().sum() > 0


def test_the_top_encoder_layer_trains_beside_a_frozen_encoder_at_its_own_rate(tmp_path, tiny_model_dir, monkeypatch):
    from codebert.training import loop

    groups = []
    param_groups = loop._param_groups
    monkeypatch.setattr(loop, "_param_groups", lambda *a: groups.extend(param_groups(*a)) or groups)
    flags = {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path / "run"), "progress": "false",
             "threads": "1", "recipe": "cpu", "max_steps": "4", "eval_every": "0", "learning_rate": "0.003",
             "max_source_length": "64", "max_target_length": "16", "valid_examples": "8", "precision": "fp32",
             "encoder_train_layers": "1", "encoder_lr_scale": "0.1"}
    code2nl.finetune_main(load_config(code2nl.Code2nlFinetuneConfig, None, flags))
    start, trained = load_seq2seq(tiny_model_dir).encoder.state_dict(), load_seq2seq(tmp_path / "run" / "final").encoder.state_dict()
    top = f"encoder.layer.{len(load_seq2seq(tiny_model_dir).encoder.encoder.layer) - 1}."
    moved = {name for name in start if not torch.equal(start[name], trained[name])}
    assert moved and all(name.startswith(top) for name in moved)  # the top layer alone; embeddings and the rest held
    rates = sorted({g["initial_lr"] for g in groups if g["params"]})  # (the schedule has moved "lr" since)
    assert rates == pytest.approx([0.0003, 0.003])  # the layer at 0.1 of the decoder's rate


@pytest.mark.parametrize("recipe, device, expected", [("auto", "cpu", "cpu"), ("auto", "cuda", "paper"), ("paper", "cpu", "paper"),
                                                      ("cpu", "cuda", "cpu")])
def test_the_recipe_follows_the_device_unless_named(tiny_model_dir, tmp_path, recipe, device, expected):
    cfg = load_config(code2nl.Code2nlFinetuneConfig, None, {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path),
                                                           "recipe": recipe})
    assert cfg.resolved_recipe(torch.device(device)) == expected
    assert code2nl.apply_recipe(cfg, "paper") is cfg  # the paper's recipe is the defaults as they are


def test_turning_off_the_copy_or_the_split_turns_off_the_recipe_options_that_need_it(tiny_model_dir, tmp_path):
    flags = {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path), "recipe": "cpu"}
    cfg = code2nl.apply_recipe(load_config(code2nl.Code2nlFinetuneConfig, None, {**flags, "copy": "false", "split_identifiers": "false"}), "cpu")
    assert (cfg.copy, cfg.output_vocabulary, cfg.split_identifiers, cfg.join_identifiers) == (False, 0, False, False)
    assert not cfg.validate()
    cfg = code2nl.apply_recipe(load_config(code2nl.Code2nlFinetuneConfig, None, flags), "cpu")
    assert (cfg.output_vocabulary, cfg.join_identifiers) == (code2nl.CPU_RECIPE["output_vocabulary"], True)
    with pytest.raises(UserError, match="output-vocabulary"):
        load_config(code2nl.Code2nlFinetuneConfig, None, {**flags, "output_vocabulary": "100"})  # without --copy


def test_the_presets_make_the_papers_tables_with_the_papers_recipe():
    for preset in ("tiny", "small", "minilm"):
        assert read_preset(preset, "code2nl")["recipe"] == "paper"


def test_identifiers_are_split_into_the_words_a_summary_uses():
    from codebert.code2nl.data import split_identifiers

    assert split_identifiers("getHTTPResponse ( userName ) ; parse_url2 ( XMLParser )") == \
        "get HTTP Response ( user Name ) ; parse_url2 ( XML Parser )"


def test_a_summarys_identifiers_are_written_from_the_split_sources_words_and_joined_back(tiny_model_dir):
    from codebert.code2nl.data import encode_joined, joined_text, split_identifiers
    from codebert.inputs import encode_texts

    tokenizer = load_tokenizer(tiny_model_dir)
    joiner = tokenizer.mask_token_id
    summary = "getImageType returns the HTTPResponse of userName ."
    ids = encode_joined(tokenizer, [summary], joiner)[0].tolist()
    assert ids.count(joiner) == 4  # get|Image|Type, HTTP|Response, user|Name
    # each part is a token sequence the split source has, so the copy can write it
    source = encode_texts(tokenizer, [split_identifiers("String getImageType ( HTTPResponse userName )")])[0].tolist()
    parts = [tokenizer.encode(" " + w, add_special_tokens=False) for w in ("Image", "Type", "Response", "Name")]
    assert all(any(source[i : i + len(p)] == p for i in range(len(source))) for p in parts)
    # and the way back writes the summary as the tokenizer would have written it whole
    whole = tokenizer.decode(encode_texts(tokenizer, [summary])[0].tolist(), skip_special_tokens=True).strip()
    assert joined_text(tokenizer, ids, joiner) == whole
    assert joined_text(tokenizer, ids, -1) != whole  # without the joiner rule: the parts stay apart


def test_batches_of_pairs_are_sorted_by_target_length_within_a_source_bin():
    from codebert.code2nl.data import EncodedPairs

    pairs = EncodedPairs([np.zeros(n) for n in (100, 100, 100, 10)], [np.zeros(n) for n in (30, 3, 12, 1)])
    assert np.argsort(pairs.lengths(128), kind="stable").tolist() == [3, 1, 2, 0]


@pytest.mark.parametrize("copy", [False, True])
def test_a_forced_prefix_opens_every_document_and_the_batched_search_still_equals_the_plain_one(tiny_model_dir, copy):
    model = random_seq2seq(tiny_model_dir, seed=6, copy=copy)
    ids, mask = pad_sequences([[0, 40, 41, 42, 43, 2], [0, 44, 2], [0, 45, 46, 47, 2]], 1)
    prefixes = [[50, 51, 52], [], [53]]  # the second source has no name to open with
    free = beam_search(model, ids, mask, beam=3, max_length=10)
    for beam in (1, 3):
        batched = beam_search(model, ids, mask, beam=beam, max_length=10, prefixes=prefixes)
        assert [h[: len(p)] for h, p in zip(batched, prefixes)] == prefixes
        alone = [plain_beam_search(model, ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())], beam, 10,
                                   prefix=prefixes[i]) for i in range(3)]
        assert batched == alone
    assert beam_search(model, ids, mask, beam=3, max_length=10, prefixes=prefixes)[1] == free[1]  # no prefix: as without the rule
    assert free[0][:3] != [50, 51, 52]  # the rule, not the model, wrote it


def test_a_document_goes_on_after_its_forced_name(tiny_model_dir):
    from codebert.code2nl.decoding import AFTER_PREFIX

    model = random_seq2seq(tiny_model_dir, seed=6)
    # </s> made likely at every step (a briefly trained decoder ends right after a name: "Pop .")
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + 50.0 * (torch.arange(logits.shape[-1]) == 2))
    ids, mask = pad_sequences([[0, 40, 41, 42, 43, 2], [0, 44, 2]], 1)
    docs = beam_search(model, ids, mask, beam=3, max_length=12, prefixes=[[50, 51], []])
    assert docs[0][:2] == [50, 51] and len(docs[0]) == 2 + AFTER_PREFIX and 2 not in docs[0]
    assert docs[1] == []  # no name: the document may end at once, as before


def test_the_languages_that_open_with_the_functions_name_are_read_from_the_summaries():
    from codebert.code2nl.data import Pairs, name_opening_languages, short_name

    summaries = {"go": ["RemoveUser removes a user .", "removeuser drops it", "Len returns the length", "Returns the size"],
                 "java": ["Gets the name .", "getName returns the name", "Returns it", "Sets it"],
                 "python": ["Return the value ."] * 4}
    names = {"go": ["RemoveUser", "RemoveUser", "Len", "Size"], "java": ["getName"] * 4, "python": ["value"] * 4}
    languages = [lang for lang in summaries for _ in range(4)]
    pairs = Pairs([str(i) for i in range(12)], ["code"] * 12, [[s] for lang in summaries for s in summaries[lang]], languages,
                  [""] * 12, [n for lang in names for n in names[lang]])
    assert name_opening_languages(pairs) == ["go"]  # 3 of 4 (case aside); java 1 of 4 (not more than half); python none
    assert name_opening_languages(pairs, share=0.8) == []
    assert short_name("Permissions.Validate") == "Validate" and short_name("get_user") == "get_user"


def test_generation_writes_the_functions_name_as_written_before_a_go_document(tiny_model_dir):
    from codebert.code2nl.decoding import document_text, generate

    tokenizer = load_tokenizer(tiny_model_dir)
    model = random_seq2seq(tiny_model_dir, seed=7, copy=True)
    model.spec.joiner = tokenizer.mask_token_id
    sources = ["func (s *Server) RemoveUser(id int) error { return s.db.Delete(id) }", "def remove_user(self, id): pass"]
    names, languages = ["RemoveUser", "remove_user"], ["go", "python"]
    docs = generate(model, tokenizer, sources, beam=2, names=names, languages=languages, open_with_name=["go"])
    assert docs[0].startswith("RemoveUser") and not docs[1].startswith("remove_user")
    plain = generate(model, tokenizer, sources, beam=2, names=names, languages=languages)  # the model's: none
    assert plain == generate(model, tokenizer, sources, beam=2)
    model.spec.open_with_name = ["go"]
    assert generate(model, tokenizer, sources, beam=2, names=names, languages=languages) == docs
    # a decoder that goes on with the name glues its next part to it, as `joined_text` does
    joiner = tokenizer.mask_token_id
    name_ids = tokenizer.encode("Get", add_special_tokens=False)
    more = tokenizer.encode(" s", add_special_tokens=False)
    assert document_text(tokenizer, [*name_ids, joiner, *more], joiner, name_ids, "Get").startswith("Gets")


def test_open_with_name_takes_model_none_or_known_languages(tmp_path):
    def problems(value):
        cfg = code2nl.Code2nlEvaluateConfig(model=tmp_path, data=tmp_path, out=tmp_path / "o", open_with_name=value)
        return [p for p in cfg.validate() if "--open-with-name" in p]

    assert problems("model") == problems("none") == problems("go") == problems("go, java") == []
    assert "golang" in problems("golang")[0] and problems(" ") and problems("go,,")
    spec = Seq2SeqSpec(open_with_name=["go"])
    resolved = [code2nl.Code2nlEvaluateConfig(model=tmp_path, data=tmp_path, out=tmp_path, open_with_name=v).name_openers(spec)
                for v in ("model", "none", "java, go")]
    assert resolved == [["go"], [], ["go", "java"]]
