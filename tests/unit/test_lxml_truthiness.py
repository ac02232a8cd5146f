"""No truth test on an lxml element anywhere in the code base (issue 11, exactly-once item 2).

An lxml element is false when it has no children, so `_child(ref, "ListID") or _child(ref, "FullName")`
skipped a `<ListID>` (it has text, no children) and the bridge matched an invoice against any customer.
This test reads the source with `ast` and refuses every truth test (`or`/`and` operand, `if`, `while`,
`assert`, `not`, conditional expression, comprehension filter) on a value that comes from an element
lookup (`.find()`, `_child()`, `.getparent()`, `.getnext()`, `.getprevious()`, `next()` over children
filtered by `.tag`), directly or through a local name assigned from one. Compare with `is None` / `is not None` instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("include", "plugins", "sandbox", "dags")
#: Calls whose result is an lxml element or None.
ELEMENT_METHODS = {"find", "getparent", "getnext", "getprevious"}
ELEMENT_FUNCTIONS = {"_child", "child", "find_child", "_find_child"}


def _scans_children(node: ast.AST) -> bool:
    """`next((el for el in root if ... el.tag ...), None)`: the first child element matching a tag."""
    if not (isinstance(node, ast.GeneratorExp) and node.generators):
        return False
    filters = [cond for gen in node.generators for cond in gen.ifs]
    return any(isinstance(n, ast.Attribute) and n.attr == "tag" for f in filters for n in ast.walk(f))


def _is_lookup(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in ELEMENT_METHODS
    if isinstance(func, ast.Name) and func.id == "next" and node.args:
        return _scans_children(node.args[0])
    return isinstance(func, ast.Name) and func.id in ELEMENT_FUNCTIONS


def _yields_element(node: ast.AST, names: set[str]) -> bool:
    """Whether `node` may evaluate to an element from a lookup (what a truth test would misread)."""
    if _is_lookup(node):
        return True
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.IfExp):
        return _yields_element(node.body, names) or _yields_element(node.orelse, names)
    if isinstance(node, ast.BoolOp):
        return _yields_element(node.values[-1], names)
    if isinstance(node, ast.NamedExpr):
        return _yields_element(node.value, names)
    return False


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str):
        self.path = path
        self.found: list[str] = []
        self.scopes: list[set[str]] = [set()]

    @property
    def names(self) -> set[str]:
        return self.scopes[-1]

    def _flag(self, node: ast.AST, why: str) -> None:
        self.found.append(f"{self.path}:{node.lineno}: {why}: {ast.unparse(node)}")

    def _tested(self, node: ast.AST, why: str) -> None:
        """`node` is truth-tested as a whole."""
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._tested(value, why)
        elif isinstance(node, ast.NamedExpr):
            self._tested(node.value, why)
        elif _yields_element(node, self.names):
            self._flag(node, why)

    def _function(self, node):
        self.scopes.append(set())
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if _yields_element(node.value, self.names):
                    self.names.add(target.id)
                else:
                    self.names.discard(target.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.generic_visit(node)
        if _yields_element(node.value, self.names):
            self.names.add(node.target.id)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        # Every operand but the last is truth-tested to decide whether to go on.
        for value in node.values[:-1]:
            self._tested(value, f"'{type(node.op).__name__.lower()}' on an lxml element")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._tested(node.operand, "'not' on an lxml element")
        self.generic_visit(node)

    def _test_of(self, node) -> None:
        self._tested(node.test, f"'{type(node).__name__.lower()}' tests an lxml element")
        self.generic_visit(node)

    visit_If = visit_While = visit_IfExp = visit_Assert = _test_of

    def visit_comprehension(self, node: ast.comprehension) -> None:
        for cond in node.ifs:
            self._tested(cond, "comprehension filter tests an lxml element")
        self.generic_visit(node)


def find_truth_tests(source: str, path: str = "<source>") -> list[str]:
    """Every truth test on an lxml lookup result in `source`, as 'path:line: why: code'."""
    finder = _Finder(path)
    finder.visit(ast.parse(source))
    return finder.found


@pytest.mark.parametrize(
    "code",
    [
        'node = _child(cref, "ListID") or _child(cref, "FullName")',
        'if root.find("QBXMLMsgsRq"):\n    pass',
        'el = root.find("X")\nif el:\n    pass',
        'el = root.find("X") if ok else None\nwhile not el:\n    pass',
        'def f(root):\n    ref = _child(root, "CustomerRef")\n    return ref and ref.text',
        "[c for c in items if c.getparent()]",
        'x = "a" if (el := node.find("Y")) else "b"',
        "assert doc.getnext()",
        "body = next((el for el in root if _local(el.tag) == 'Body'), None)\nif not body:\n    pass",
    ],
)
def test_the_finder_catches_each_form(code):
    """Each way of truth-testing an element is reported (so the repository scan below can fail)."""
    assert find_truth_tests(code), code


@pytest.mark.parametrize(
    "code",
    [
        'node = _child(cref, "ListID")\nif node is None:\n    node = _child(cref, "FullName")',
        'el = root.find("X")\nif el is not None and el.text:\n    pass',
        'text = root.findtext("X") or ""',
        'value = flag and root.find("X")',  # the last operand is returned, not tested
        'el = root.find("X")\nel = len(items)\nif el:\n    pass',  # reassigned to a non-element
    ],
)
def test_the_finder_accepts_explicit_none_checks(code):
    assert find_truth_tests(code) == [], code


def test_no_truth_test_on_lxml_elements_in_the_code_base():
    """Scan include/, plugins/, sandbox/ and dags/: a childless element is false, never test it as a bool."""
    found: list[str] = []
    files = [p for top in SCANNED for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 50, f"expected the package sources under {ROOT}, found {len(files)} files"
    for path in files:
        found += find_truth_tests(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == [], "truth tests on lxml elements (use `is None` / `is not None`):\n" + "\n".join(found)
