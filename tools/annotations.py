"""Share of public functions and methods with complete type annotations.

    python tools/annotations.py [--min 90] [PATH ...]      (default: automl_bilevel plugins)

A function counts as annotated when its return and every parameter (except ``self``/``cls``) carry
an annotation. Public: neither the function nor any enclosing class or function starts with ``_``
(dunder methods such as ``__init__`` count as public). Prints the share per folder and in total;
with ``--min`` exits 1 when the total is below it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _annotated(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> bool:
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    if (
        method
        and args
        and args[0].arg in ("self", "cls")
        and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    ):
        args = args[1:]
    extra = [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
    return fn.returns is not None and all(a.annotation is not None for a in [*args, *extra])


def functions(path: Path) -> list[tuple[str, bool]]:
    """(qualified name, annotated) for every public function or method in one file."""
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                if _public(child.name):
                    visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if _public(child.name):
                    out.append((f"{prefix}{child.name}", _annotated(child, in_class)))
                # functions nested in functions are implementation details: not counted

    visit(ast.parse(path.read_text(), filename=str(path)), "", False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", default=["automl_bilevel", "automl_bilevel_plugins"])
    ap.add_argument("--min", type=float, default=None, help="fail when the total share (percent) is below this")
    ap.add_argument("--missing", action="store_true", help="list the functions that lack annotations")
    args = ap.parse_args(argv)
    total_n = total_ok = 0
    for folder in args.paths:
        n = ok = 0
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name, annotated in functions(path):
                n, ok = n + 1, ok + annotated
                if args.missing and not annotated:
                    print(f"  missing: {path.relative_to(ROOT)}:{name}")
        print(f"{folder + '/':<16} {ok:>4} / {n:<4} public functions annotated ({100 * ok / max(n, 1):.1f}%)")
        total_n, total_ok = total_n + n, total_ok + ok
    share = 100 * total_ok / max(total_n, 1)
    print(f"{'total':<16} {total_ok:>4} / {total_n:<4} ({share:.1f}%)")
    if args.min is not None and share < args.min:
        print(f"annotation share {share:.1f}% is below the required {args.min:g}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
