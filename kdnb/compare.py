"""Compare two runs' ``metrics.json``: ``python -m kdnb.compare RUN_A RUN_B``.

What a refactoring must leave unchanged (issue 19): every score, size and choice a run records,
everything but wall times. Each argument is an output folder (``outputs/<task>``) or a
``metrics.json``. Keys whose name contains ``seconds`` (stage and epoch timings) are ignored;
numbers must be equal (``--tol``: within an absolute tolerance). Prints one line per
difference (the dotted key and both values); exit status 0 if the runs agree, 1 if not, 2 if a
file is missing or not JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

MISSING = "<missing>"


def load_metrics(path: str | Path) -> dict:
    """``metrics.json`` of the run folder ``path`` (or the file itself).

    Raises:
        FileNotFoundError: no such file; ValueError: not valid JSON (naming the file).
    """
    path = Path(path)
    f = path / "metrics.json" if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no metrics.json (run `make report` into that folder first)")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not valid JSON (line {e.lineno}: {e.msg})") from None


def differences(a: Any, b: Any, tol: float = 0.0, ignore: str = "seconds", prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every leaf where ``a`` and ``b`` differ,
    skipping keys that contain ``ignore``; numbers (not booleans) within ``tol`` are equal,
    and two NaNs are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if ignore and ignore in str(k):
                continue
            key = f"{prefix}.{k}" if prefix else str(k)
            out += differences(a.get(k, MISSING), b.get(k, MISSING), tol, ignore, key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, tol, ignore, f"{prefix}[{i}]")]
    number = (int, float)
    if isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool) and not isinstance(b, bool):
        if (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol:
            return []
        return [(prefix, a, b)]
    return [] if a == b else [(prefix, a, b)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdnb.compare", description=__doc__.split("\n")[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--tol", type=float, default=0.0, help="absolute tolerance for numbers (default 0: equal)")
    args = ap.parse_args(argv)
    try:
        a, b = load_metrics(args.run_a), load_metrics(args.run_b)
    except (OSError, ValueError) as e:
        print(f"kdnb.compare: error: {e}", file=sys.stderr)
        return 2
    diffs = differences(a, b, args.tol)
    for key, x, y in diffs:
        print(f"{key}: {x!r} != {y!r}")
    print(f"{len(diffs)} difference(s) between {args.run_a} and {args.run_b} (timings ignored)"
          if diffs else f"identical: {args.run_a} and {args.run_b} (timings ignored)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
