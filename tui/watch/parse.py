"""Watch expressions: tokenizer and recursive-descent parser (never Python `eval`).

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := "-" unary | postfix
    postfix := atom ("[" index ("," index)* "]")*
    index   := expr | [expr] ":" [expr]
    atom    := NUMBER | STRING | NAME | NAME "(" [expr ("," expr)*] ")" | "(" expr ")"
    compare := expr ("<" | "<=" | ">" | ">=" | "=" | "==" | "!=") expr     (breakpoint conditions)

NAME is a word with dots (`entropy`, `logits`, `blocks.10.hook_resid_post`); STRING is a token
text in single or double quotes (`" Paris"`, backslash escapes `\\"` `\\\\`). `parse()` returns an
immutable tree; errors are one-line `ExprError`s saying where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 500
MAX_DEPTH = 40


class ExprError(ValueError):
    """A malformed or unusable expression; the message is one line."""


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple


@dataclass(frozen=True)
class Slice:
    start: object | None
    stop: object | None


@dataclass(frozen=True)
class Index:
    target: object
    items: tuple  # expressions or Slice


@dataclass(frozen=True)
class Unary:
    op: str
    operand: object


@dataclass(frozen=True)
class Binary:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Compare:
    op: str  # < <= > >= == !=
    left: object
    right: object


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op><=|>=|==|!=|[-+*/()\[\],:<>=])
    )""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) tokens; kind is num, name, str, op or end."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise ExprError(f"unexpected {text[col]!r} at column {col + 1}")
        kind = m.lastgroup
        assert kind is not None  # every alternative of the token pattern is a named group
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


def _unquote(literal: str) -> str:
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *ops: str) -> bool:
        kind, text, _ = self.tok
        return kind == "op" and text in ops

    def expect(self, op: str) -> None:
        if not self.at(op):
            self.fail(f"expected {op!r}")
        self.take()

    def fail(self, what: str):
        kind, text, col = self.tok
        found = "the end" if kind == "end" else repr(text)
        raise ExprError(f"{what} at column {col + 1}, found {found}")

    def nested(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested deeper than {MAX_DEPTH}")

    # -- grammar --------------------------------------------------------------------------------
    def expr(self):
        self.nested()
        node = self.term()
        while self.at("+", "-"):
            op = self.take()[1]
            node = Binary(op, node, self.term())
        self.depth -= 1
        return node

    def term(self):
        node = self.unary()
        while self.at("*", "/"):
            op = self.take()[1]
            node = Binary(op, node, self.unary())
        return node

    def unary(self):
        if self.at("-", "+"):
            op = self.take()[1]
            self.nested()
            operand = self.unary()
            self.depth -= 1
            return operand if op == "+" else Unary("-", operand)
        return self.postfix()

    def postfix(self):
        node = self.atom()
        while self.at("["):
            self.take()
            items = [self.index()]
            while self.at(","):
                self.take()
                items.append(self.index())
            self.expect("]")
            node = Index(node, tuple(items))
        return node

    def index(self):
        start = None if self.at(":") else self.expr()
        if not self.at(":"):
            if start is None:
                self.fail("expected an index")
            return start
        self.take()
        stop = None if self.at(",", "]") else self.expr()
        return Slice(start, stop)

    def atom(self):
        kind, text, _ = self.tok
        if kind == "num":
            self.take()
            return Num(float(text))
        if kind == "str":
            self.take()
            return Str(_unquote(text))
        if kind == "name":
            self.take()
            if self.at("("):
                self.take()
                args = []
                if not self.at(")"):
                    args.append(self.expr())
                    while self.at(","):
                        self.take()
                        args.append(self.expr())
                self.expect(")")
                return Call(text, tuple(args))
            return Name(text)
        if self.at("("):
            self.take()
            node = self.expr()
            self.expect(")")
            return node
        self.fail("expected a number, a name, a token text in quotes or '('")

    def end(self) -> None:
        if self.tok[0] != "end":
            self.fail("unexpected text")


COMPARISONS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "==", "==": "==", "!=": "!="}


def parse(text: str):
    """The tree of a watch expression (an `ExprError` when malformed)."""
    if not text.strip():
        raise ExprError("empty expression")
    p = _Parser(text)
    node = p.expr()
    p.end()
    return node


def parse_comparison(text: str) -> Compare:
    """`expr OP expr` (a breakpoint condition); `=` means `==`."""
    if not text.strip():
        raise ExprError("empty condition")
    p = _Parser(text)
    left = p.expr()
    if not p.at(*COMPARISONS):
        p.fail("expected a comparison (< <= > >= = !=)")
    op = COMPARISONS[p.take()[1]]
    right = p.expr()
    p.end()
    return Compare(op, left, right)


def unparse(node) -> str:
    """Canonical text of a tree (parses back to an equal tree)."""
    if isinstance(node, Num):
        v = node.value
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(node, Str):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Call):
        return f"{node.func}({', '.join(unparse(a) for a in node.args)})"
    if isinstance(node, Index):
        return f"{_wrap(node.target)}[{', '.join(_item(i) for i in node.items)}]"
    if isinstance(node, Unary):
        return f"-{_wrap(node.operand)}"
    if isinstance(node, Binary):
        return f"{_wrap(node.left, node.op)} {node.op} {_wrap(node.right, node.op, right=True)}"
    if isinstance(node, Compare):
        return f"{unparse(node.left)} {node.op} {unparse(node.right)}"
    raise TypeError(node)


def _item(item) -> str:
    if isinstance(item, Slice):
        return f"{'' if item.start is None else unparse(item.start)}:{'' if item.stop is None else unparse(item.stop)}"
    return unparse(item)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _wrap(node, parent_op: str | None = None, right: bool = False) -> str:
    text = unparse(node)
    if isinstance(node, Binary):
        mine, outer = _PRECEDENCE[node.op], _PRECEDENCE.get(parent_op or "", 3)
        if mine < outer or (right and mine == outer):
            return f"({text})"
    if isinstance(node, Unary) and parent_op is None:
        return f"({text})"
    return text
