"""What each language's tree-sitter grammar calls a function, a class, a comment and a string.

One `LanguageSpec` per language; the extractor (`functions.py`) is generic and reads only these.
Grammars come from the per-language wheels (`tree-sitter-python`, ...), loaded lazily so that a
process pays only for the languages it parses.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Literal

from tree_sitter import Language, Parser

DocStyle = Literal["docstring", "block", "lines", "xml"]


@dataclass(frozen=True)
class LanguageSpec:
    name: str  # CodeSearchNet's language name, also the corpus folder name
    extensions: tuple[str, ...]  # file name endings parsed as this language
    module: str  # the grammar wheel's module
    entry: str  # the function in it that returns the grammar
    function_types: frozenset[str]  # node types that are functions or methods
    scope_types: frozenset[str]  # class-like nodes whose name qualifies the methods inside
    doc_style: DocStyle  # where the doc comment lives (see functions.find_doc)
    line_marker: str  # the marker of a line comment in a doc run ("#", "//", "///")
    comment_types: frozenset[str]  # comment nodes: never code tokens
    atomic_types: frozenset[str]  # literals kept whole as one code token
    constructor_types: frozenset[str]  # node types that are constructors by themselves
    special_names: frozenset[str]  # constructors and toString-like methods, left out by name


def _names(*names: str) -> frozenset[str]:
    return frozenset(names)


SPECS: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        name="python",
        extensions=(".py",),
        module="tree_sitter_python",
        entry="language",
        function_types=_names("function_definition"),
        scope_types=_names("class_definition"),
        doc_style="docstring",
        line_marker="#",
        comment_types=_names("comment"),
        atomic_types=_names("string", "concatenated_string"),
        constructor_types=_names(),
        # Dunder methods are left out by pattern (see filters.is_special_name).
        special_names=_names(),
    ),
    "java": LanguageSpec(
        name="java",
        extensions=(".java",),
        module="tree_sitter_java",
        entry="language",
        function_types=_names("method_declaration", "constructor_declaration"),
        scope_types=_names(
            "class_declaration", "interface_declaration", "enum_declaration", "record_declaration"
        ),
        doc_style="block",
        line_marker="//",
        comment_types=_names("block_comment", "line_comment"),
        atomic_types=_names("string_literal", "character_literal", "text_block"),
        constructor_types=_names("constructor_declaration"),
        special_names=_names("toString", "hashCode", "equals", "clone", "finalize", "valueOf", "compareTo"),
    ),
    "javascript": LanguageSpec(
        name="javascript",
        extensions=(".js", ".mjs", ".cjs", ".jsx"),
        module="tree_sitter_javascript",
        entry="language",
        function_types=_names(
            "function_declaration",
            "generator_function_declaration",
            "function_expression",
            "generator_function",
            "arrow_function",
            "method_definition",
        ),
        scope_types=_names("class_declaration", "class"),
        doc_style="block",
        line_marker="//",
        comment_types=_names("comment", "html_comment"),
        atomic_types=_names("string", "template_string", "regex"),
        constructor_types=_names(),
        special_names=_names("constructor", "toString", "valueOf", "toJSON", "inspect"),
    ),
    "php": LanguageSpec(
        name="php",
        extensions=(".php",),
        module="tree_sitter_php",
        entry="language_php",
        function_types=_names("function_definition", "method_declaration"),
        scope_types=_names("class_declaration", "interface_declaration", "trait_declaration", "enum_declaration"),
        doc_style="block",
        line_marker="//",
        comment_types=_names("comment"),
        atomic_types=_names("string", "encapsed_string", "heredoc", "nowdoc"),
        constructor_types=_names(),
        # PHP magic methods (__construct, __toString, ...) are left out by pattern.
        special_names=_names(),
    ),
    "ruby": LanguageSpec(
        name="ruby",
        extensions=(".rb",),
        module="tree_sitter_ruby",
        entry="language",
        function_types=_names("method", "singleton_method"),
        scope_types=_names("class", "module"),
        doc_style="lines",
        line_marker="#",
        comment_types=_names("comment"),
        atomic_types=_names("string", "heredoc_body", "regex", "subshell", "delimited_symbol"),
        constructor_types=_names(),
        special_names=_names(
            "initialize", "to_s", "inspect", "to_str", "hash", "eql?", "==", "===", "<=>", "equal?"
        ),
    ),
    "go": LanguageSpec(
        name="go",
        extensions=(".go",),
        module="tree_sitter_go",
        entry="language",
        function_types=_names("function_declaration", "method_declaration"),
        scope_types=_names(),
        doc_style="lines",
        line_marker="//",
        comment_types=_names("comment"),
        atomic_types=_names("interpreted_string_literal", "raw_string_literal", "rune_literal"),
        constructor_types=_names(),
        # Only as methods (`func (e *E) Error()`); a plain function named String is kept.
        special_names=_names("String", "Error", "GoString"),
    ),
    # Not a pre-training language: the paper's unseen language (§4.4), extracted the same way.
    "csharp": LanguageSpec(
        name="csharp",
        extensions=(".cs",),
        module="tree_sitter_c_sharp",
        entry="language",
        function_types=_names("method_declaration", "constructor_declaration"),
        scope_types=_names(
            "class_declaration", "struct_declaration", "interface_declaration", "record_declaration"
        ),
        doc_style="xml",
        line_marker="///",
        comment_types=_names("comment"),
        atomic_types=_names(
            "string_literal",
            "verbatim_string_literal",
            "raw_string_literal",
            "interpolated_string_expression",
            "character_literal",
        ),
        constructor_types=_names("constructor_declaration"),
        special_names=_names("ToString", "GetHashCode", "Equals", "Finalize", "CompareTo"),
    ),
}

# The six languages of CodeSearchNet and of the paper's pre-training.
DEFAULT_LANGUAGES = ("python", "java", "javascript", "php", "ruby", "go")


def language_for(path_name: str, languages: tuple[str, ...] | list[str]) -> str | None:
    """The language a file name belongs to among `languages`, by its ending, or None."""
    lower = path_name.lower()
    for lang in languages:
        if lower.endswith(SPECS[lang].extensions):
            return lang
    return None


@functools.cache
def grammar(lang: str) -> Language:
    spec = SPECS[lang]
    module = importlib.import_module(spec.module)
    return Language(getattr(module, spec.entry)())


@functools.cache
def parser(lang: str) -> Parser:
    """One parser per language per process (parsers are not shared across worker processes)."""
    return Parser(grammar(lang))
