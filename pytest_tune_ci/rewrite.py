"""Write new values into threshold literals and change nothing else in the file.

Each literal is found through :func:`literals.find` and replaced by its AST
position. Only the characters of the number (and of its sign, when the sign
flips) change; comments, spacing, quotes, trailing commas, other keys and the
line endings stay byte for byte. Files are read as bytes and decoded without
newline translation, so CRLF files stay CRLF.

Number style: an int literal stays an int when the new value is integral
(``5``, not ``5.0``), keeping a ``0x``/``0o``/``0b`` prefix and ``_`` digit
grouping; an int literal given a fractional value becomes a float. Floats are
written as ``repr(float)``, the shortest text that round-trips, so ``1e-3``
may come back as ``0.0012`` and ``1_000.5`` as ``1000.5``.
"""

from __future__ import annotations

import ast
import difflib
import io
import math
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from . import literals
from . import logic
from .errors import RunError
from .literals import Number
from .stages import Location


class RewriteError(RunError):
    """A planned edit cannot be made or did not read back as planned."""


@dataclass(frozen=True)
class Edit:
    location: Location
    value: Number


@dataclass(frozen=True)
class Change:
    """One literal that was (or would be) rewritten."""

    location: Location
    old: Number
    new: Number
    old_text: str
    new_text: str
    line: int  # 1-based line of the literal in the file


@dataclass(frozen=True)
class _Source:
    """Decoded text plus what maps AST positions onto it."""

    text: str
    encoding: str
    line_starts: list[int]  # index in ``text`` where each line begins

    def index(self, lineno: int, byte_col: int) -> int:
        """Text index of an AST position (col offsets count UTF-8 bytes)."""
        start = self.line_starts[lineno - 1]
        end = (
            self.line_starts[lineno]
            if lineno < len(self.line_starts)
            else len(self.text)
        )
        line = self.text[start:end].encode("utf-8")
        return start + len(line[:byte_col].decode("utf-8"))

    def span(self, node: ast.expr) -> tuple[int, int]:
        assert node.end_lineno is not None and node.end_col_offset is not None
        return (
            self.index(node.lineno, node.col_offset),
            self.index(node.end_lineno, node.end_col_offset),
        )


def _line_starts(text: str) -> list[int]:
    # Only CRLF, LF and a lone CR end a Python line; str.splitlines would also
    # split on form feeds and other characters the tokenizer keeps in a line.
    starts = [0]
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\r":
            i += 2 if i + 1 < n and text[i + 1] == "\n" else 1
            starts.append(i)
        elif ch == "\n":
            i += 1
            starts.append(i)
        else:
            i += 1
    return starts


def decode(data: bytes, name: str) -> _Source:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        raise RewriteError(f"{name}: cannot decode the file ({exc})") from None
    return _Source(text, encoding, _line_starts(text))


def parse(text: str, name: str) -> ast.Module:
    try:
        return ast.parse(text, filename=name)
    except SyntaxError as exc:
        raise RewriteError(f"{name}: line {exc.lineno}: {exc.msg}") from None


def check_value(value: object, what: str) -> Number:
    """``value`` as a finite int or float, else a :class:`RewriteError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RewriteError(f"{what}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise RewriteError(f"{what}: expected a finite number, got {value!r}")
    return value


def _int_text(n: int, like: str) -> str:
    """``n`` (>= 0) in the base and digit grouping of the literal ``like``."""
    prefix = like[:2].lower()
    spec = {"0x": "x", "0o": "o", "0b": "b"}.get(prefix, "d")
    grouped = "_" in like
    body = format(n, f"_{spec}" if grouped else spec)
    if spec == "d":
        return body
    if like[2:].upper() == like[2:] and like[2:].lower() != like[2:]:
        body = body.upper()
    return like[:2] + body


def format_number(value: Number, *, int_literal: bool, like: str = "") -> str:
    """Text of ``abs(value)`` for a literal that is now ``like``.

    The sign is the caller's business: it decides whether a ``-`` token
    already in the file is kept.
    """
    magnitude = abs(value)
    if int_literal and (isinstance(value, int) or float(value).is_integer()):
        return _int_text(int(magnitude), like)
    return repr(float(magnitude))


def _negative(value: Number) -> bool:
    return math.copysign(1.0, value) < 0


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    text: str


def _plan_splice(src: _Source, lit: literals.Literal, value: Number) -> _Splice:
    node = lit.node
    start, end = src.span(node)
    operand = node.operand if isinstance(node, ast.UnaryOp) else node
    o_start, o_end = src.span(operand)
    number = format_number(value, int_literal=lit.is_int, like=src.text[o_start:o_end])
    if isinstance(node, ast.UnaryOp):
        keep_sign = isinstance(node.op, ast.USub) == _negative(value)
        if keep_sign:
            return _Splice(o_start, o_end, number)
    return _Splice(start, end, f"-{number}" if _negative(value) else number)


def rewrite(
    data: bytes, edits: Sequence[Edit], *, name: str = "<source>"
) -> tuple[bytes, list[Change]]:
    """The file's bytes with every edit made, and the changes, in file order.

    Pure: nothing is written. Edits whose value the literal already has are
    left out, so applying the same edits twice is a no-op. The result is
    re-parsed and checked before it is returned.
    """
    src = decode(data, name)
    module = parse(src.text, name)
    by_span: dict[tuple[int, int], tuple[_Splice, Change]] = {}
    for edit in edits:
        loc = edit.location
        value = check_value(edit.value, f"{name}: {loc.ref}")
        lit = literals.find(module, loc)
        if lit is None:
            raise RewriteError(f"{name}: {loc.ref}: the file has no such literal")
        if lit.value == value:  # also 5 == 5.0 and 0.0 == -0.0: keep the text
            continue
        splice = _plan_splice(src, lit, value)
        start, end = src.span(lit.node)
        change = Change(
            location=loc,
            old=lit.value,
            new=_as_written(value, lit.is_int),
            old_text=src.text[start:end],
            new_text=splice.text,
            line=lit.node.lineno,
        )
        key = (start, end)
        if key in by_span and by_span[key][1].new != change.new:
            other = by_span[key][1].location.ref
            raise RewriteError(
                f"{name}: line {change.line}: {loc.ref} and {other} are the same "
                f"literal but are given different values"
            )
        by_span[key] = (splice, change)

    text = src.text
    for splice, _ in sorted(by_span.values(), key=lambda sc: -sc[0].start):
        text = text[: splice.start] + splice.text + text[splice.end :]
    try:
        out = text.encode(src.encoding)
    except UnicodeEncodeError as exc:  # pragma: no cover - numbers are ASCII
        raise RewriteError(f"{name}: cannot encode the result ({exc})") from None
    changes = [c for _, c in sorted(by_span.values(), key=lambda sc: sc[0].start)]
    problems = verify(out, edits, name=name, original=data)
    if problems:
        raise RewriteError("; ".join(problems))
    return out, changes


def _as_written(value: Number, int_literal: bool) -> Number:
    """The value as the rewritten literal will hold it."""
    if int_literal and (isinstance(value, int) or float(value).is_integer()):
        return int(value)
    return float(value)


def verify(
    data: bytes,
    edits: Sequence[Edit],
    *,
    name: str = "<source>",
    original: bytes | None = None,
) -> list[str]:
    """Problems with ``data``: it must parse, and read back the planned values.

    With ``original``, its logic hash must also be unchanged: nothing but the
    located literals may differ.
    """
    try:
        src = decode(data, name)
        module = parse(src.text, name)
    except RewriteError as exc:
        return [str(exc)]
    problems: list[str] = []
    for edit in edits:
        lit = literals.find(module, edit.location)
        if lit is None:
            problems.append(f"{name}: {edit.location.ref}: literal lost")
        elif lit.value != edit.value:
            problems.append(
                f"{name}: {edit.location.ref}: reads back {lit.value!r}, "
                f"planned {edit.value!r}"
            )
    if original is not None and not problems:
        locations = [e.location for e in edits]
        before = logic.logic_hash(decode(original, name).text, locations)
        if logic.logic_hash(src.text, locations) != before:
            problems.append(f"{name}: the rewrite changed more than the literals")
    return problems


def write_file(path: Path, edits: Sequence[Edit], *, name: str) -> list[Change]:
    """Make ``edits`` in ``path`` in one atomic write, then read it back.

    If the file on disk does not read back the planned values, the original
    bytes are restored and :class:`RewriteError` is raised.
    """
    try:
        original = path.read_bytes()
    except OSError as exc:
        raise RewriteError(f"{name}: cannot read ({exc.strerror})") from None
    new, changes = rewrite(original, edits, name=name)
    if not changes:
        return []
    atomic.write_bytes(path, new)
    try:
        problems = verify(path.read_bytes(), edits, name=name)
    except OSError as exc:
        problems = [f"{name}: cannot read back ({exc.strerror})"]
    if problems:
        atomic.write_bytes(path, original)
        raise RewriteError("; ".join(problems) + " (file restored)")
    return changes


def unified_diff(name: str, before: bytes, after: bytes) -> str:
    """A ``git apply``-able diff of one file; line endings are kept as they are."""
    a = decode(before, name).text
    b = decode(after, name).text
    a_lines = _split_keep(a)
    b_lines = _split_keep(b)
    out: list[str] = []
    for line in difflib.unified_diff(
        a_lines, b_lines, fromfile=f"a/{name}", tofile=f"b/{name}", lineterm=""
    ):
        if line.startswith(("---", "+++", "@@")):
            out.append(line.rstrip("\r\n") + "\n")
            continue
        if line.endswith(("\n", "\r")):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _split_keep(text: str) -> list[str]:
    starts = _line_starts(text)
    bounds = [*starts, len(text)] if starts[-1] != len(text) else starts
    return [text[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
