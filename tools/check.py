"""The static checks CI runs before the tests: ruff (lint and format), mypy, annotation share.

    .venv/bin/python tools/check.py          # check, as CI does
    .venv/bin/python tools/check.py --fix    # let ruff fix what it can and format, then check

Configuration lives in pyproject.toml ([tool.ruff], [tool.mypy]). Exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ruff, mypy and the annotation share, as CI runs them")
    ap.add_argument("--fix", action="store_true", help="apply ruff's safe fixes and format first")
    args = ap.parse_args(argv)
    ruff, mypy = str(BIN / "ruff"), str(BIN / "mypy")
    if args.fix:
        subprocess.run([ruff, "check", "--fix", "-q", "."], cwd=ROOT)
        subprocess.run([ruff, "format", "-q", "."], cwd=ROOT)
    checks = [
        ("ruff lint", [ruff, "check", "."]),
        ("ruff format", [ruff, "format", "--check", "."]),
        ("mypy", [mypy]),
        ("annotations", [sys.executable, str(ROOT / "tools" / "annotations.py"), "--min", "90"]),
    ]
    failed = []
    for name, cmd in checks:
        print(f"== {name}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print(f"static checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("static checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
