"""Doc comments: strip their markers, take the summary, tokenise it as CodeSearchNet does."""

from __future__ import annotations

import inspect
import re

# CodeSearchNet's docstring tokeniser (function_parser, `tokenize_docstring`), verbatim: runs of
# characters other than space and punctuation, or runs of one punctuation character.
DOCSTRING_REGEX_TOKENIZER = re.compile(
    r"[^\s,'\"`.():\[\]=*;>{\}+-/\\]+|\\+|\.+|\(\)|{\}|\[\]|\(+|\)+|:+|\[+|\]+|{+|\}+|=+|\*+|;+|>+|\++|-+|/+"
)
# A block-tag line of Javadoc, JSDoc, PHPDoc, YARD or epydoc (`@param x`, `@return`): where the
# summary ends. Inline tags (`{@link Foo}`) are not at a line start and do not cut.
BLOCK_TAG_LINE = re.compile(r"^\s*@[A-Za-z]")
# Compiler directives written as comments, which are not documentation (Go's `//go:generate`,
# `//go:build`, old `// +build` lines, `//line` directives).
GO_DIRECTIVE = re.compile(r"^//(go:|line |\s*\+build)")


def tokenize_docstring(text: str) -> list[str]:
    """CodeSearchNet's regex tokenisation of a doc summary."""
    return [t for t in DOCSTRING_REGEX_TOKENIZER.findall(text) if t]


def summary(doc: str) -> str:
    """The first paragraph of a cleaned doc comment, cut at the first block-tag line."""
    lines: list[str] = []
    for line in doc.strip().splitlines():
        if not line.strip() or BLOCK_TAG_LINE.match(line):
            break
        lines.append(line)
    return "\n".join(lines).strip()


def clean_python_docstring(literal: str) -> str:
    """The text of a Python docstring literal as written (escapes not evaluated), dedented (PEP 257).

    Like CodeSearchNet, the source text is kept: `"newline (b'\\n')"` stays a backslash and an n.
    """
    body = literal.lstrip("rRuUbBfF")
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    if len(body) >= 2 * len(quote) and body.endswith(quote):
        body = body[len(quote) : len(body) - len(quote)]
    return inspect.cleandoc(body)


def clean_block_comment(text: str) -> str:
    """`/** ... */` without its markers and the leading `*` of each line."""
    text = text.strip()
    if text.startswith("/**"):
        text = text[3:]
    elif text.startswith("/*"):
        text = text[2:]
    if text.endswith("*/"):
        text = text[:-2]
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("*"):
            stripped = stripped[1:]
            if stripped.startswith(" "):
                stripped = stripped[1:]
        lines.append(stripped.rstrip())
    return "\n".join(lines).strip()


def clean_line_comments(comments: list[str], marker: str) -> str:
    """A run of line comments (`#`, `//`, `///`) as one text, without markers and directives."""
    lines = []
    for comment in comments:
        text = comment.strip()
        if marker == "//" and GO_DIRECTIVE.match(text):
            continue
        if text.startswith("/*"):  # a block comment inside a Go or C# run
            lines.append(clean_block_comment(text))
            continue
        if text.startswith(marker):
            text = text[len(marker) :]
        lines.append(text[1:] if text.startswith(" ") else text)
    return "\n".join(line.rstrip() for line in lines).strip()


_XML_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.S)
_XML_TAG = re.compile(r"<[^>]+>")


def clean_xml_doc(comments: list[str]) -> str:
    """C#'s `///` XML documentation: the text of <summary> if present, tags removed."""
    text = clean_line_comments(comments, "///")
    match = _XML_SUMMARY.search(text)
    body = match.group(1) if match else text
    # <see cref="Foo"/> carries its name in an attribute; keep it as a word.
    body = re.sub(r'<see\w*\s+\w+="([^"]*)"\s*/>', r"\1", body)
    return "\n".join(line.strip() for line in _XML_TAG.sub("", body).splitlines()).strip()
