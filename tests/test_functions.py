"""Extraction of functions from hand-written files in each language: names, docs, tokens."""

from __future__ import annotations

import pytest

from codebert.corpus.filters import doc_summary_tokens, function_reason
from codebert.corpus.functions import parse_functions
from conftest import SAMPLES

FILES = {
    "python": "pyproj/pkg/memory.py",
    "java": "javaproj/src/StringUtil.java",
    "javascript": "jsproj/lib/util.js",
    "php": "phpproj/src/Money.php",
    "ruby": "rubyproj/lib/greeter.rb",
    "go": "goproj/stack.go",
}


def functions(lang):
    fns, had_error = parse_functions((SAMPLES / FILES[lang]).read_bytes(), lang)
    assert not had_error
    return {fn.name: fn for fn in fns}


# (language, qualified name, first summary tokens, reason it is left out or None)
EXPECTED = [
    ("python", "parse_memory", ["Parse", "a", "memory", "string"], None),
    ("python", "undocumented_total", [], None),
    ("python", "test_parse_memory", ["Check", "that"], "test_name"),
    ("python", "short", ["Too", "short"], "too_short"),
    ("python", "Cache.__init__", ["Create", "an"], "constructor_or_special"),
    ("python", "Cache.size_in_bytes", ["Return", "the", "total"], None),
    ("python", "Cache.__repr__", ["Show"], "constructor_or_special"),
    ("java", "StringUtil.StringUtil", ["Creates"], "constructor_or_special"),
    ("java", "StringUtil.reverse", ["Reverses", "the", "characters"], None),
    ("java", "StringUtil.countVowels", [], None),
    ("java", "StringUtil.toString", ["Returns"], "constructor_or_special"),
    ("java", "StringUtil.hashPrefix", ["Computes"], "no_body"),
    ("java", "StringUtil.Inner.join", ["Joins", "the", "parts"], None),
    ("javascript", "add", ["Adds", "two", "numbers"], None),
    ("javascript", "clamp", ["Clamps", "a", "value"], None),
    ("javascript", "Formatter.prototype.formatDate", ["Formats", "a", "date"], None),
    ("javascript", "capitalize", ["Capitalises"], None),
    ("javascript", "Stack.constructor", [], "constructor_or_special"),
    ("javascript", "Stack.push", ["Pushes", "an", "item"], None),
    ("php", "format_money", ["Formats", "an", "amount"], None),
    ("php", "Wallet.__construct", ["Creates"], "constructor_or_special"),
    ("php", "Wallet.deposit", ["Adds", "an", "amount"], None),
    ("php", "Wallet.balance", [], None),
    ("ruby", "Greeting.Greeter.initialize", ["Creates"], "constructor_or_special"),
    ("ruby", "Greeting.Greeter.greet", ["Builds", "a", "greeting"], None),
    ("ruby", "Greeting.Greeter.shout", [], None),
    ("ruby", "Greeting.Greeter.to_s", ["Returns"], "constructor_or_special"),
    ("go", "Stack.Push", ["Push", "adds"], None),
    ("go", "Stack.Pop", ["Pop", "removes"], None),
    ("go", "Stack.String", ["String", "returns"], "constructor_or_special"),
    ("go", "sum", [], None),
]


@pytest.mark.parametrize("lang,name,summary_start,reason", EXPECTED, ids=[f"{e[0]}:{e[1]}" for e in EXPECTED])
def test_names_summaries_and_filters(lang, name, summary_start, reason):
    fn = functions(lang)[name]
    tokens = doc_summary_tokens(fn)
    assert tokens[: len(summary_start)] == summary_start
    if not summary_start:
        assert tokens == []
    assert function_reason(fn, lang) == reason


def test_every_named_function_is_found_and_anonymous_ones_are_not():
    for lang in FILES:
        found = set(functions(lang))
        expected = {name for (l, name, _, _) in EXPECTED if l == lang}
        assert expected <= found, (lang, expected - found)
    # The anonymous forEach callback in util.js has no name to search for.
    assert len(functions("javascript")) == 6


def test_summary_is_first_paragraph_cut_at_block_tags():
    js = doc_summary_tokens(functions("javascript")["add"])
    assert js == ["Adds", "two", "numbers", "together", "and", "returns", "the", "sum", "."]
    java = doc_summary_tokens(functions("java")["StringUtil.reverse"])
    assert "@param" not in java and "intact" in java  # the inline {@link} does not cut the summary
    ruby = doc_summary_tokens(functions("ruby")["Greeting.Greeter.greet"])
    assert ruby[-3:] == ["punctuation", "mark", "."]  # two comment lines, the blank # line ends it
    python = functions("python")["parse_memory"]
    assert ">>>" not in " ".join(doc_summary_tokens(python))
    assert python.docstring.startswith("Parse a memory string") and ">>> parse_memory" in python.docstring


def test_code_tokens_leave_out_comments_and_docstrings_and_keep_literals_whole():
    py = functions("python")["parse_memory"]
    assert "Parse a memory string" not in " ".join(py.code_tokens)
    assert '"invalid format: "' in py.code_tokens
    total = functions("python")["undocumented_total"]
    assert not any(t.startswith("#") for t in total.code_tokens)
    java = functions("java")["StringUtil.reverse"]
    assert not any("walk from the end" in t for t in java.code_tokens)
    assert '""' in java.code_tokens
    assert "`sum: ${a + b}`" in functions("javascript")["add"].code_tokens
    assert "/T/" in functions("javascript")["Formatter.prototype.formatDate"].code_tokens
    assert '"$units."' in functions("php")["format_money"].code_tokens
    assert '"Hello, #{@name}#{mark}"' in functions("ruby")["Greeting.Greeter.greet"].code_tokens
    go = functions("go")["Stack.Push"]
    assert "`raw string`" in go.code_tokens
    assert "go:noinline" not in go.docstring  # compiler directives are not documentation


def test_spans_and_code_text():
    fn = functions("go")["Stack.Pop"]
    assert (fn.start_line, fn.end_line) == (19, 26)
    assert fn.code.startswith("func (s *Stack) Pop()") and fn.code.endswith("}")


def test_csharp_is_extracted_with_its_xml_summary():
    source = b"""
namespace N {
  class C {
    /// <summary>Returns the larger of two numbers.</summary>
    /// <param name="a">first</param>
    public int Max(int a, int b) {
      if (a > b) return a;
      return b;
    }
  }
}
"""
    (fn,) = parse_functions(source, "csharp")[0]
    assert fn.name == "C.Max"
    assert doc_summary_tokens(fn) == ["Returns", "the", "larger", "of", "two", "numbers", "."]


STUBS = {
    "python": (b"import abc\nfrom typing import overload\n\n\nclass Reader:\n"
               b"    @overload\n    def read(self, n: int) -> bytes: ...\n\n"
               b"    @typing.overload\n    def read(self, n: None) -> str:\n        \"\"\"Read the whole stream as text.\"\"\"\n\n"
               b"    def read(self, n=None):\n        data = self.raw.read(n)\n        return data\n\n"
               b"    @abc.abstractmethod\n    def close(self):\n        \"\"\"Close the stream and free it.\"\"\"\n        pass\n\n"
               b"    @abc.abstractmethod\n    def flush(self):\n        return self.raw.flush()\n",
               ["read", "read", "close"], ["read", "flush"]),
    "java": (b"interface Shape {\n  /** Area of the shape. */\n  double area();\n  default String name() { return \"shape\"; }\n}\n"
             b"abstract class Base {\n  abstract void run();\n}\n",
             ["area", "run"], ["name"]),
    "php": (b"<?php\nabstract class Job {\n  /** Run the job. */\n  abstract public function run($input);\n"
            b"  public function name() { return 'job'; }\n}\ninterface Named { public function label(); }\n",
            ["run", "label"], ["name"]),
}


@pytest.mark.parametrize("lang", STUBS)
def test_declarations_without_an_implementation_are_stubs(lang):
    source, stubs, implemented = STUBS[lang]
    fns, had_error = parse_functions(source, lang)
    assert not had_error
    assert [fn.name.rsplit(".", 1)[-1] for fn in fns if fn.is_stub] == stubs
    assert [fn.name.rsplit(".", 1)[-1] for fn in fns if not fn.is_stub] == implemented
    # A corpus keeps none of them: a doc paired with a bare signature is no training pair.
    assert all(function_reason(fn, lang) == "no_body" for fn in fns if fn.is_stub)
