"""The literal rewriter: only the targeted numbers change, byte for byte."""

from __future__ import annotations

import ast
import io
import math
import os
import shutil
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from pytest_tune_ci import literals
from pytest_tune_ci import logic
from pytest_tune_ci import rewrite
from pytest_tune_ci.rewrite import Edit
from pytest_tune_ci.rewrite import RewriteError
from pytest_tune_ci.stages import Location


FILE = "tests/test_x.py"


def loc(symbol: str, outer: int | None = None, inner: str | None = None) -> Location:
    return Location(FILE, symbol, outer, inner)


def apply(src: str | bytes, *edits: tuple[Location, float | int]) -> bytes:
    data = src.encode("utf-8") if isinstance(src, str) else src
    out, _ = rewrite.rewrite(data, [Edit(lc, v) for lc, v in edits], name=FILE)
    return out


# -- generated files ----------------------------------------------------------

INNER_KEYS = ["throughput_qps", "latency_mean_s", "rtf_mean", "é_rate", "ключ"]
NAMES = [f"{p}_{i}" for p in ("MMMU_MIN", "_X_P95", "WER_MAX", "N") for i in range(4)]


@st.composite
def number_text(draw: st.DrawFn) -> str:
    """A numeric literal in one of the forms discovery accepts."""
    kind = draw(st.sampled_from(["int", "under", "hex", "float", "exp", "fixed"]))
    if kind in ("int", "under", "hex"):
        n = draw(st.integers(0, 10**7))
        body = {"int": str(n), "under": f"{n:_}", "hex": hex(n)}[kind]
    else:
        x = draw(st.floats(0, 1e6, allow_nan=False, allow_infinity=False))
        body = {"float": repr(x), "exp": f"{x:e}", "fixed": f"{x:.3f}"}[kind]
    sign = draw(st.sampled_from(["", "", "-", "- ", "+"]))
    return sign + body


SP = st.sampled_from(["", " ", "  ", "\t"])
COMMENT = st.sampled_from(["", "  # note", "  # ünïcode, 1.5 here", "# x = 2"])


@dataclass
class Generated:
    lines: list[str]
    locations: list[Location]


@st.composite
def bare(draw: st.DrawFn, name: str) -> Generated:
    ann = draw(st.sampled_from([None, "float", "int", "int | None", "'float'"]))
    target = name if ann is None else f"{name}:{draw(SP)}{ann}"
    line = f"{target}{draw(SP)}={draw(SP)}{draw(number_text())}{draw(COMMENT)}"
    return Generated([line], [loc(name)])


@st.composite
def nested(draw: st.DrawFn, name: str) -> Generated:
    outers = draw(st.lists(st.sampled_from([1, 8, 16, 32]), min_size=0, max_size=3))
    outers = list(dict.fromkeys(outers))
    multiline = draw(st.booleans())
    trailing = draw(st.sampled_from(["", ","]))

    def inner_dict(outer: int | None) -> tuple[str, list[Location]]:
        keys = draw(st.lists(st.sampled_from(INNER_KEYS), min_size=1, max_size=4))
        keys = list(dict.fromkeys(keys))
        parts = []
        for key in keys:
            quote = draw(st.sampled_from(["'", '"']))
            parts.append(
                f"{quote}{key}{quote}{draw(SP)}:{draw(SP)}{draw(number_text())}"
            )
        body = ("," + draw(SP)).join(parts) + draw(st.sampled_from(["", ","]))
        return "{" + body + "}", [loc(name, outer, k) for k in keys]

    if not outers:  # a flat dict: NAME = {"key": 1.5}
        text, locs = inner_dict(None)
        return Generated([f"{name} = {text}{draw(COMMENT)}"], locs)
    lines = [f"{name}{draw(SP)}={draw(SP)}{{"]
    locs: list[Location] = []
    entries = []
    for outer in outers:
        text, found = inner_dict(outer)
        locs += found
        entries.append(f"{outer}{draw(SP)}:{draw(SP)}{text}")
    if multiline:
        for i, entry in enumerate(entries):
            comma = "," if i < len(entries) - 1 else trailing
            lines.append(f"    {entry}{comma}{draw(COMMENT)}")
        lines.append("}")
    else:
        lines[0] += ", ".join(entries) + trailing + "}"
    return Generated(lines, locs)


UNRELATED = [
    ["import os"],
    ['GREETING = "héllo 1.5"  # not a threshold'],
    ["DERIVED = 3 + 4"],
    [""],
    ["def test_x():", "    assert os.sep  # 0.5 in a comment", "    value = -2.5"],
    ["class Box:", "    LIMIT = 7", ""],
]


@st.composite
def unrelated(draw: st.DrawFn, most: int) -> list[str]:
    blocks = draw(st.lists(st.sampled_from(UNRELATED), max_size=most))
    return [line for block in blocks for line in block]


@st.composite
def source(draw: st.DrawFn) -> tuple[bytes, list[Location]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    lines: list[str] = []
    locations: list[Location] = []
    for name in names:
        lines += draw(unrelated(2))
        part = draw(st.one_of(bare(name), nested(name)))
        lines += part.lines
        locations += part.locations
    lines += draw(unrelated(3))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines) + draw(st.sampled_from([eol, ""]))
    return text.encode("utf-8"), locations


NEW_VALUE = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 4)),
)


@st.composite
def case(draw: st.DrawFn) -> tuple[bytes, list[Location], list[Edit]]:
    data, locations = draw(source())
    chosen = draw(st.lists(st.sampled_from(locations), unique=True, max_size=6))
    edits = [Edit(lc, draw(NEW_VALUE)) for lc in chosen]
    return data, locations, edits


# -- what the property tests compare ------------------------------------------


def _spans(text: str, nodes: list[ast.expr]) -> list[tuple[int, int]]:
    """Absolute text offsets of AST nodes (their cols count UTF-8 bytes)."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    lines = text.splitlines(keepends=True)

    def at(row: int, byte_col: int) -> int:
        return starts[row - 1] + len(lines[row - 1].encode()[:byte_col].decode())

    out = []
    for node in nodes:
        assert node.end_lineno is not None and node.end_col_offset is not None
        out.append(
            (at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset))
        )
    return sorted(out)


def _targeted(text: str, edits: list[Edit]) -> list[tuple[int, int]]:
    module = ast.parse(text)
    nodes = []
    for edit in edits:
        lit = literals.find(module, edit.location)
        assert lit is not None
        nodes.append(lit.node)
    return _spans(text, nodes)


def _outside(text: str, spans: list[tuple[int, int]]) -> list[str]:
    pieces, pos = [], 0
    for start, end in spans:
        pieces.append(text[pos:start])
        pos = end
    pieces.append(text[pos:])
    return pieces


def _token_skeleton(data: bytes, spans: list[tuple[int, int]]) -> list[tuple[int, str]]:
    """Tokens with each targeted literal folded into one placeholder."""
    text = data.decode("utf-8")
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    out: list[tuple[int, str]] = []
    inside: set[int] = set()
    for tok in tokenize.tokenize(io.BytesIO(data).readline):
        if tok.type == tokenize.ENCODING:
            continue
        pos = starts[tok.start[0] - 1] + tok.start[1] if tok.start[0] else 0
        hit = next((i for i, (s, e) in enumerate(spans) if s <= pos < e), None)
        if hit is None:
            out.append((tok.type, tok.string))
            continue
        assert tok.type == tokenize.NUMBER or tok.string in "-+", tok
        if hit not in inside:
            inside.add(hit)
            out.append((-1, "<literal>"))
    return out


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case())
def test_only_targeted_literals_change(
    generated: tuple[bytes, list[Location], list[Edit]],
) -> None:
    data, locations, edits = generated
    old_text = data.decode("utf-8")
    old_values = literals.read_values(old_text, locations)
    out, changes = rewrite.rewrite(data, edits, name=FILE)
    new_text = out.decode("utf-8")

    # It parses and reads back exactly: planned values, the others untouched.
    new_values = literals.read_values(new_text, locations)
    planned = {e.location: e.value for e in edits}
    for lc in locations:
        want = planned.get(lc, old_values[lc])
        assert new_values[lc] == want, lc
        old = old_values[lc]
        if lc in planned and isinstance(old, int) and float(want).is_integer():
            assert isinstance(new_values[lc], int), "an int literal stays an int"
    assert {c.location for c in changes} == {
        e.location for e in edits if e.value != old_values[e.location]
    }

    # Only the characters of the changed literals moved: the text between them
    # (comments, spacing, quotes, commas, CRLF) is identical, and so are the
    # tokens except the numbers and their signs.
    changed = [e for e in edits if e.value != old_values[e.location]]
    old_spans = _targeted(old_text, changed)
    new_spans = _targeted(new_text, changed)
    assert _outside(old_text, old_spans) == _outside(new_text, new_spans)
    assert _token_skeleton(data, old_spans) == _token_skeleton(out, new_spans)
    assert logic.logic_hash(old_text, locations) == logic.logic_hash(
        new_text, locations
    )

    # A second apply of the same plan is a no-op.
    again, more = rewrite.rewrite(out, edits, name=FILE)
    assert again == out
    assert more == []


# -- unit tests ---------------------------------------------------------------


def test_nested_value_with_other_outer_keys_and_comments() -> None:
    src = (
        "_MMMU_P95 = {\n"
        "    8: {'throughput_qps': 1.318, \"latency_mean_s\": 10.32},  # tp2\n"
        "    16: {'throughput_qps': 1.318,  \"latency_mean_s\" : 10.32,},\n"
        "}\n"
    )
    out = apply(src, (loc("_MMMU_P95", 16, "throughput_qps"), 1.29))
    assert out.decode() == src.replace(
        "16: {'throughput_qps': 1.318", "16: {'throughput_qps': 1.29"
    )


def test_non_ascii_before_the_literal_on_the_same_line() -> None:
    src = 'X = {"ключ": 1.5, "é": 2.5}  # ünï\n'
    out = apply(src, (loc("X", None, "é"), 0.25), (loc("X", None, "ключ"), 3.0))
    assert out.decode() == 'X = {"ключ": 3.0, "é": 0.25}  # ünï\n'


@pytest.mark.parametrize(
    ("src", "value", "expected"),
    [
        ("X = -0.5\n", 0.7, "X = 0.7\n"),
        ("X = -0.5\n", -0.7, "X = -0.7\n"),
        ("X = - 3  # c\n", -4, "X = - 4  # c\n"),
        ("X = - 3\n", 4, "X = 4\n"),
        ("X = +2\n", 5, "X = +5\n"),
        ("X = +2\n", -5, "X = -5\n"),
        ("X = 0.5\n", -0.25, "X = -0.25\n"),
        ("X = 4\n", 5.0, "X = 5\n"),
        ("X = 4\n", 4.5, "X = 4.5\n"),
        ("X = 4.0\n", 5, "X = 5.0\n"),
        ("X = 0.56\n", 0.5612, "X = 0.5612\n"),
        ("X = 0.56\n", 0.1 + 0.2, "X = 0.30000000000000004\n"),
        ("X = 1e-3\n", 0.0012, "X = 0.0012\n"),
        ("X = 1_000\n", 1500, "X = 1_500\n"),
        ("X = 0x10\n", 32, "X = 0x20\n"),
        ("X: int | None = 3\n", 2, "X: int | None = 2\n"),
        ("X = (0.5)\n", 0.25, "X = (0.25)\n"),
    ],
)
def test_number_forms(src: str, value: float, expected: str) -> None:
    assert apply(src, (loc("X"), value)).decode() == expected


def test_equal_value_keeps_the_text() -> None:
    # 0.50 == 0.5 and 4 == 4.0: the literal is left exactly as written.
    src = "X = 0.50\nY = 4\n"
    out, changes = rewrite.rewrite(
        src.encode(), [Edit(loc("X"), 0.5), Edit(loc("Y"), 4.0)], name=FILE
    )
    assert out == src.encode()
    assert changes == []


@pytest.mark.parametrize("eol", ["\r\n", "\r", "\n"])
def test_line_endings_kept(eol: str) -> None:
    src = eol.join(["A = 1.5", "B = {16: {'q': 2.0}}  # c", "def f():", "    pass", ""])
    out = apply(src.encode(), (loc("B", 16, "q"), 2.5), (loc("A"), 1))
    assert out == src.replace("2.0", "2.5").replace("1.5", "1.0").encode()


def test_bom_and_latin1_cookie_survive() -> None:
    bom = "X = 0.5  # é\n".encode("utf-8-sig")
    assert apply(bom, (loc("X"), 0.6)) == "X = 0.6  # é\n".encode("utf-8-sig")
    latin = "# -*- coding: latin-1 -*-\nS = 'é'; X = 0.5\n".encode("latin-1")
    out = apply(latin, (loc("X"), 0.75))
    assert out == latin.replace(b"0.5", b"0.75")


def test_missing_literal_is_an_error() -> None:
    with pytest.raises(
        RewriteError, match=r"tests/test_x.py: X\[16\]\['q'\]: the file"
    ):
        apply("X = {8: {'q': 1.0}}\n", (loc("X", 16, "q"), 2.0))


def test_one_literal_two_values_is_an_error() -> None:
    with pytest.raises(RewriteError, match="same literal"):
        apply("A = B = 0.5\n", (loc("A"), 0.6), (loc("B"), 0.7))
    assert apply("A = B = 0.5\n", (loc("A"), 0.6), (loc("B"), 0.6)) == b"A = B = 0.6\n"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1.0"])
def test_bad_values_are_refused(bad: object) -> None:
    with pytest.raises(RewriteError, match="expected a"):
        apply("X = 0.5\n", (loc("X"), bad))  # type: ignore[arg-type]


def test_syntax_error_names_the_file_and_line() -> None:
    with pytest.raises(RewriteError, match=r"tests/test_x.py: line 2"):
        apply("X = 0.5\ndef (:\n", (loc("X"), 0.6))


def test_write_file_keeps_mode_and_writes_once(tmp_path: Path) -> None:
    path = tmp_path / "t.py"
    path.write_bytes(b"X = 0.5\r\nY = {16: {'q': 1}}\r\n")
    os.chmod(path, 0o640)
    changes = rewrite.write_file(
        path, [Edit(loc("X"), 0.6), Edit(loc("Y", 16, "q"), 2)], name="t.py"
    )
    assert path.read_bytes() == b"X = 0.6\r\nY = {16: {'q': 2}}\r\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [(c.old, c.new, c.new_text, c.line) for c in changes] == [
        (0.5, 0.6, "0.6", 1),
        (1, 2, "2", 2),
    ]
    assert rewrite.write_file(path, [Edit(loc("X"), 0.6)], name="t.py") == []
    assert not list(tmp_path.glob("*.tune-tmp"))


def test_write_file_restores_when_read_back_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.py"
    original = b"X = 0.5  # keep me\n"
    path.write_bytes(original)
    real = rewrite.atomic.write_bytes
    calls: list[bytes] = []

    def corrupting(target: Path, data: bytes, **kw: object) -> None:
        calls.append(data)
        # The first write lands wrong on disk (a concurrent editor, a bad disk).
        real(target, data.replace(b"0.6", b"0.7") if len(calls) == 1 else data)

    monkeypatch.setattr(rewrite.atomic, "write_bytes", corrupting)
    with pytest.raises(RewriteError, match=r"reads back 0.7, planned 0.6.*restored"):
        rewrite.write_file(path, [Edit(loc("X"), 0.6)], name="t.py")
    assert path.read_bytes() == original


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_unified_diff_applies_with_git(tmp_path: Path) -> None:
    before = b"A = 1.5\r\nB = 2  # c\r\nC = 3"
    after = apply(before, (loc("A"), 1.25), (loc("C"), 4))
    (tmp_path / "t.py").write_bytes(before)
    patch = rewrite.unified_diff("t.py", before, after)
    (tmp_path / "p.patch").write_text(patch, newline="")
    subprocess.run(
        ["git", "apply", "--unsafe-paths", "p.patch"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "t.py").read_bytes() == after
