"""Find the functions of one source file with tree-sitter: name, span, doc comment, code tokens.

`parse_functions(source, lang)` is pure: bytes in, a list of `Function` out, one per named function
or method (anonymous callbacks have no name to search for and are not returned). It applies no
corpus filter; `filters.py` decides what a corpus keeps, and the search index keeps everything but
stubs (`Function.is_stub`: declarations with nothing implemented).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tree_sitter import Node

from codebert.corpus import docstrings
from codebert.corpus.languages import SPECS, LanguageSpec, parser


@dataclass
class Function:
    name: str  # qualified: Class.method, Go Type.Method, JS left-hand side of an assignment
    kind: str  # the tree-sitter node type (method_declaration, arrow_function, ...)
    start_line: int  # 1-based, first line of the function
    end_line: int  # 1-based, last line
    code: str  # the function's source text as in the file
    code_tokens: list[str]  # leaf tokens without comments and docstring; a literal is one token
    lines: int  # non-blank lines of `code` (what CodeSearchNet's "at least 3 lines" counts)
    docstring: str  # the cleaned doc comment, "" if none
    is_constructor: bool  # by node type (Java/C# constructors); names are checked by filters
    is_method: bool  # defined in a class-like scope or with a receiver (Go)
    has_body: bool  # False for abstract and interface declarations
    has_error: bool  # tree-sitter found a syntax error inside it
    # A declaration without an implementation: no body (abstract and interface methods, Go's
    # assembly-backed functions) or a Python @overload/@abstractmethod whose body is only `...`,
    # `pass` or a docstring. Its code says nothing about what it does.
    is_stub: bool


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def _scope_name(node: Node) -> str:
    # Written as in the source: Ruby's `class Thor::Runner` qualifies as `Thor::Runner.help` (as csn6).
    return _text(node.child_by_field_name("name"))


def _go_receiver_type(node: Node) -> str:
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return ""
    for param in receiver.named_children:
        tp = param.child_by_field_name("type")
        while tp is not None and tp.type in ("pointer_type", "generic_type", "parenthesized_type"):
            inner = tp.child_by_field_name("type") or (tp.named_children[0] if tp.named_children else None)
            tp = inner
        if tp is not None:
            return _text(tp)
    return ""


# JavaScript names a function expression by where it is stored.
_JS_NAME_KINDS = ("identifier", "property_identifier", "private_property_identifier", "member_expression")


def _js_function_name(node: Node) -> tuple[str, Node] | None:
    """(name, anchor) of a JavaScript function, or None if it has no usable name.

    The anchor is the node a doc comment precedes: the declaration statement for
    `const f = () => ...`, the expression statement for `a.b = function`, the pair for `k: function`.
    """
    parent = node.parent
    if node.type in ("function_declaration", "generator_function_declaration", "method_definition"):
        name = node.child_by_field_name("name")
        if name is None or name.type not in _JS_NAME_KINDS:
            return None  # computed keys ([a + b]) and string keys are not names
        anchor = parent if parent is not None and parent.type == "export_statement" else node
        return _text(name), anchor
    if parent is None:
        return None
    if parent.type == "variable_declarator" and parent.child_by_field_name("value") == node:
        name = parent.child_by_field_name("name")
        if name is None or name.type != "identifier":
            return None
        declaration = parent.parent
        anchor = declaration if declaration is not None and declaration.named_child_count == 1 else parent
        if anchor.parent is not None and anchor.parent.type == "export_statement":
            anchor = anchor.parent
        return _text(name), anchor
    if parent.type == "assignment_expression" and parent.child_by_field_name("right") == node:
        left = parent.child_by_field_name("left")
        if left is None or left.type not in _JS_NAME_KINDS:
            return None
        statement = parent.parent
        anchor = statement if statement is not None and statement.type == "expression_statement" else parent
        return _text(left), anchor
    if parent.type == "pair" and parent.child_by_field_name("value") == node:
        key = parent.child_by_field_name("key")
        if key is None or key.type not in _JS_NAME_KINDS:
            return None
        return _text(key), parent
    own = node.child_by_field_name("name")  # `function named() {}` passed as a value
    if own is not None:
        return _text(own), node
    return None


def _name_and_anchor(node: Node, spec: LanguageSpec) -> tuple[str, Node] | None:
    if spec.name == "javascript":
        return _js_function_name(node)
    name = node.child_by_field_name("name")
    if name is None:
        return None
    anchor = node
    if spec.name == "python" and node.parent is not None and node.parent.type == "decorated_definition":
        anchor = node.parent  # the doc of a decorated function is inside it; comments precede decorators
    text = _text(name)
    if spec.name == "go" and node.type == "method_declaration":
        receiver = _go_receiver_type(node)
        text = f"{receiver}.{text}" if receiver else text
    return text, anchor


def _python_docstring_node(node: Node) -> Node | None:
    body = node.child_by_field_name("body")
    if body is None or body.named_child_count == 0:
        return None
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_child_count == 1:
        inner = first.named_children[0]
        if inner.type in ("string", "concatenated_string"):
            return inner
    return None


# Decorators (last dotted part) that mark a Python function as a declaration: typing.overload
# signatures precede the real implementation; abc.abstractmethod is Python's abstract method.
_DECLARATION_DECORATORS = frozenset({"overload", "abstractmethod"})
# Statements that do nothing: a body of only these (and a docstring) implements nothing.
_EMPTY_STATEMENTS = frozenset({"pass_statement", "ellipsis", "string", "concatenated_string", "comment"})


def _is_python_declaration(node: Node) -> bool:
    """An @overload or @abstractmethod Python function whose body is only `...`, `pass`, a docstring."""
    decorated = node.parent
    if decorated is None or decorated.type != "decorated_definition":
        return False
    names = set()
    for decorator in decorated.children:
        if decorator.type == "decorator":
            expression = _text(decorator).lstrip("@").split("(")[0].strip()  # "@typing.overload" -> "typing.overload"
            names.add(expression.rsplit(".", 1)[-1])
    if not names & _DECLARATION_DECORATORS:
        return False
    body = node.child_by_field_name("body")
    for statement in body.named_children if body is not None else []:
        if statement.type == "expression_statement" and statement.named_child_count == 1:
            statement = statement.named_children[0]
        if statement.type not in _EMPTY_STATEMENTS:
            return False
    return True


class _Comments:
    """The file's comments sorted by position, to find the one(s) right above a declaration."""

    def __init__(self, nodes: list[Node], source: bytes):
        self.nodes = sorted(nodes, key=lambda n: n.start_byte)
        self.ends = [n.end_byte for n in self.nodes]
        self.source = source

    def _gap(self, end: int, start: int) -> bytes | None:
        """The bytes between two positions if they are only white space, else None."""
        gap = self.source[end:start]
        return gap if not gap.strip() else None

    def _own_line(self, node: Node) -> bool:
        """True if nothing but white space precedes the comment on its line (not a trailing one)."""
        line_start = self.source.rfind(b"\n", 0, node.start_byte) + 1
        return not self.source[line_start : node.start_byte].strip()

    def before(self, anchor: Node, style: str, marker: str) -> list[Node]:
        """The doc comment(s) right above `anchor`, oldest first."""
        i = bisect.bisect_right(self.ends, anchor.start_byte) - 1
        found: list[Node] = []
        start = anchor.start_byte
        while i >= 0:
            node = self.nodes[i]
            gap = self._gap(node.end_byte, start)
            # A block doc may stand a blank line away from its declaration (as in csn6); a run of
            # line comments must touch it, or a file's header comment would document the first function.
            if gap is None or not self._own_line(node) or (style != "block" and gap.count(b"\n") > 1):
                break
            text = _text(node)
            if style == "block":
                if text.startswith("/**") and not text.startswith("/**/"):
                    found.append(node)
                break  # a block doc is one comment
            if style == "xml" and not text.startswith("///"):
                break
            if style == "lines" and not (text.startswith(marker) or (marker == "//" and text.startswith("/*"))):
                break
            found.append(node)
            start = node.start_byte
            i -= 1
        found.reverse()
        return found


def _doc_text(spec: LanguageSpec, nodes: list[Node]) -> str:
    texts = [_text(n) for n in nodes]
    if spec.doc_style == "block":
        return docstrings.clean_block_comment(texts[0]) if texts else ""
    if spec.doc_style == "xml":
        return docstrings.clean_xml_doc(texts)
    return docstrings.clean_line_comments(texts, spec.line_marker)


def _code_tokens(node: Node, spec: LanguageSpec, skip: Node | None) -> list[str]:
    """Leaf tokens of `node` in order, literals whole, comments and `skip` (the docstring) left out."""
    tokens: list[str] = []
    skip_id = skip.id if skip is not None else None
    stack = [node]
    while stack:
        current = stack.pop()
        if current.id == skip_id or current.type in spec.comment_types:
            continue
        if current.child_count == 0 or current.type in spec.atomic_types:
            text = _text(current)
            if text:  # zero-width MISSING nodes carry no text
                tokens.append(text)
            continue
        stack.extend(reversed(current.children))
    return tokens


def parse_functions(source: bytes, lang: str) -> tuple[list[Function], bool]:
    """All named functions of a file and whether the file had a syntax error anywhere."""
    spec = SPECS[lang]
    tree = parser(lang).parse(source)
    root = tree.root_node
    comments: list[Node] = []
    found: list[tuple[Node, Node, str, bool]] = []  # (function, anchor, qualified name, is_method)
    # Explicit stack, not recursion: generated or minified files nest deeper than Python's limit.
    stack: list[tuple[Node, tuple[str, ...], bool]] = [(root, (), False)]
    while stack:
        node, scopes, in_function = stack.pop()
        node_type = node.type
        if node_type in spec.comment_types:
            comments.append(node)
            continue
        child_scopes, child_in_function = scopes, in_function
        if node_type in spec.scope_types:
            child_scopes = scopes + (_scope_name(node) or "<anonymous>",)
        elif node_type in spec.function_types:
            named = _name_and_anchor(node, spec)
            if named is not None:
                name, anchor = named
                is_method = bool(scopes) and not in_function or (spec.name == "go" and node_type == "method_declaration")
                qualified = ".".join((*scopes, name)) if scopes and "." not in name else name
                found.append((node, anchor, qualified, is_method))
                # A function defined inside another is named after it (`outer.inner`), as in csn6.
                child_scopes = (*scopes, name)
            child_in_function = True
        for child in reversed(node.children):
            stack.append((child, child_scopes, child_in_function))

    index = _Comments(comments, source)
    functions = []
    for node, anchor, name, is_method in found:
        doc_node = _python_docstring_node(node) if spec.doc_style == "docstring" else None
        if doc_node is not None:
            doc = docstrings.clean_python_docstring(_text(doc_node))
        elif spec.doc_style != "docstring":
            doc = _doc_text(spec, index.before(anchor, spec.doc_style, spec.line_marker))
        else:
            doc = ""
        code = _text(node)
        body = node.child_by_field_name("body")
        has_body = body is not None or spec.name in ("ruby", "javascript")
        functions.append(
            Function(
                name=name,
                kind=node.type,
                start_line=node.start_point[0] + 1,
                end_line=node.end_point[0] + 1,
                code=code,
                code_tokens=_code_tokens(node, spec, doc_node),
                lines=sum(1 for line in code.splitlines() if line.strip()),
                docstring=doc,
                is_constructor=node.type in spec.constructor_types,
                is_method=is_method,
                has_body=has_body,
                has_error=node.has_error,
                is_stub=not has_body or (spec.name == "python" and _is_python_declaration(node)),
            )
        )
    return functions, root.has_error
