"""The tokenizer: trained and saved so transformers opens it, exact round trips, the pair layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from codebert.config import load_config
from codebert.corpus import build
from codebert.errors import UserError
from codebert.backbone import load_tokenizer
from codebert.inputs import ROBERTA, Layout, truncate_pair_lengths
from codebert.pretrain.tokenizer import SPECIAL_TOKENS, TrainTokenizerConfig, main
from conftest import SAMPLES


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    build.main(load_config(build.ExtractConfig, None, {"paths": [str(SAMPLES)], "out": str(root / "corpus"),
                                                       "progress": "false", "valid_fraction": "0", "test_fraction": "0"}))
    figures = main(TrainTokenizerConfig(data=root / "corpus", out=root / "tok", vocab_size=600, min_frequency=1))
    assert figures["vocab_size"] == 600
    return root / "tok"


def test_transformers_opens_it_with_roberta_special_ids(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 1, 2, 4)
    assert len(tok) == 600


def codesearch_utils_ids(tok, nl: str, code: str, max_seq_length: int) -> list[int]:
    """The ids CodeBERT's codesearch/utils.py (convert_examples_to_features) builds for a pair, rewritten
    step by step: NL tokens cut to 50, the pair truncated longest-first to max_seq_length - 3, then
    [cls] + NL + [sep] + CODE + [sep]."""
    tokens_a = tok.tokenize(nl)[:50]
    tokens_b = tok.tokenize(code)
    while len(tokens_a) + len(tokens_b) > max_seq_length - 3:  # _truncate_seq_pair
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
    tokens = [tok.cls_token] + tokens_a + [tok.sep_token] + tokens_b + [tok.sep_token]
    return tok.convert_tokens_to_ids(tokens)


def test_pairs_are_laid_out_as_codebert_scripts_build_them(tokenizer_dir):
    assert ROBERTA.pair([10, 11], [20, 21, 22], 512).input_ids == [0, 10, 11, 2, 20, 21, 22, 2]  # <s> NL </s> CODE </s>
    tok = load_tokenizer(tokenizer_dir)
    layout = Layout.of(tok)
    assert layout == ROBERTA and layout.second_type == 0  # RoBERTa: one segment type, no token types
    nl_text = "return the sum of the two numbers given " * 8  # over 50 tokens: the NL cut applies
    code_text = "def add(a, b): return a + b " * 12
    nl, code = (tok(t, add_special_tokens=False)["input_ids"] for t in (nl_text, code_text))
    assert len(nl) > 50
    for window in (512, 200, 64):
        assert layout.pair(nl, code, window, nl_length=50).input_ids == codesearch_utils_ids(tok, nl_text, code_text, window)
    assert layout.pairs([(np.array(nl), np.array(code))], 200, nl_length=50).token_type_ids is None


def test_the_tokenizers_own_pair_template_stays_an_option(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    ids = tok("return the sum", "def add(a, b): return a + b")["input_ids"]
    nl = tok("return the sum", add_special_tokens=False)["input_ids"]
    code = tok("def add(a, b): return a + b", add_special_tokens=False)["input_ids"]
    layout = Layout.of(tok, "tokenizer")
    assert ids == layout.pair(nl, code, 512).input_ids
    assert ids[0] == 0 and ids[len(nl) + 1 : len(nl) + 3] == [2, 2] and ids[-1] == 2
    with pytest.raises(UserError, match="pair layout"):
        Layout.of(tok, "roberta")


def test_a_bert_tokenizer_gets_berts_layout(tiny_bert_dir):
    tok = load_tokenizer(tiny_bert_dir)
    layout = Layout.of(tok)
    cls, sep, pad, mask = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id
    assert (layout.prefix, layout.middle, layout.suffix, layout.pad_id, layout.mask_id) == ((cls,), (sep,), (sep,), pad, mask)
    assert Layout.of(tok, "tokenizer") == layout  # BERT's own template has one separator already
    nl = tok("return the sum", add_special_tokens=False)["input_ids"]
    code = tok("def add(a, b): return a + b", add_special_tokens=False)["input_ids"]
    reference = tok("return the sum", "def add(a, b): return a + b")
    pair = layout.pair(nl, code, 512)
    assert pair.input_ids == reference["input_ids"]
    # Token type 1 on CODE [SEP], as BERT and codesearch/utils.py (sequence_b_segment_id) mark a pair.
    assert pair.token_types == reference["token_type_ids"] == [0] * (len(nl) + 2) + [1] * (len(code) + 1)
    batch = layout.pairs([(np.array(nl), np.array(code)), (np.array(nl[:1]), np.array(code[:2]))], 512)
    assert batch.token_type_ids[0].tolist() == pair.token_types
    assert batch.token_type_ids[1].tolist()[:6] == [0, 0, 0, 1, 1, 1] and batch.token_type_ids[1, 6:].eq(0).all()  # padding: 0
    assert layout.single(code, 512) == tok("def add(a, b): return a + b")["input_ids"]
    # Padding is BERT's id 0; the attention mask comes from the lengths, not from the ids.
    ids, attention = layout.singles([np.array(nl), np.array(code)], 64)
    assert ids[0, len(nl) + 2 :].eq(pad).all() and attention.sum(1).tolist() == [len(nl) + 2, len(code) + 2]


CODE_SAMPLES = [
    'def parse_memory(s):\n    """Parse 1g, 200m."""\n    units = {\'g\': 1024}\n\treturn int(s[:-1])\n',
    "  leading spaces and trailing   \n\n\n",
    "func (s *Stack) Push(v int) { s.items = append(s.items, v) } // ünïcödé ✓ 中文 🙂",
    "<?php echo \"$a\\n\"; ?>\r\nwindows line\r\n",
    "",
]


@pytest.mark.parametrize("text", CODE_SAMPLES)
def test_decoding_an_encoding_gives_back_the_exact_text(tokenizer_dir, text):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert 3 not in ids  # byte-level BPE never needs <unk>


def test_every_sample_function_round_trips(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    for path in SAMPLES.rglob("*.*"):
        text = path.read_text(encoding="utf-8")
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text, path


def reference_truncation(a: int, b: int, budget: int) -> tuple[int, int]:
    """BERT's _truncate_seq_pair, as CodeBERT's code-search scripts use it, on lengths."""
    while a + b > budget:
        if a > b:
            a -= 1
        else:
            b -= 1
    return a, b


def test_truncation_is_longest_first_like_the_reference():
    for a in range(0, 30):
        for b in range(0, 30):
            for budget in range(0, 40):
                assert truncate_pair_lengths(a, b, budget) == reference_truncation(a, b, budget), (a, b, budget)


def test_build_pair_truncates_to_max_length_and_reports_segments():
    pair = ROBERTA.pair(list(range(10, 30)), list(range(100, 200)), max_length=20)
    assert len(pair.input_ids) == 20
    assert pair.input_ids[pair.nl] == list(range(10, 19)) and pair.input_ids[pair.code] == list(range(100, 108))  # 17 = 9 + 8
    assert pair.input_ids[0] == 0 and pair.input_ids[pair.nl.stop : pair.code.start] == [2]


def test_a_local_roberta_style_folder_loads(tmp_path, tokenizer_dir):
    # vocab.json + merges.txt alone is how roberta-base and codebert-base ship their tokenizer.
    folder = tmp_path / "roberta-like"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((tokenizer_dir / name).read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    tok = load_tokenizer(folder)
    assert tok.decode(tok("x = 1", add_special_tokens=False)["input_ids"]) == "x = 1"


def test_bad_tokenizer_paths_are_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a tokenizer folder"):
        load_tokenizer(tmp_path / "empty")


def test_config_rejects_tiny_vocab_and_missing_data(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(TrainTokenizerConfig, None, {"data": str(tmp_path / "nope"), "out": "x", "vocab_size": "10"})
    assert "--vocab-size" in str(err.value) and "no such folder" in str(err.value)
