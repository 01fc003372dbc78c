"""mypy against a baseline: fail on a type error that mypy-baseline.txt does not list.

The baseline keys each error by file and message, without its line number, so an edit
elsewhere in the file does not break the check; a file's error counts as new once it
occurs more often than the baseline says. Errors that went away pass, and are counted:
``make typecheck-baseline`` then writes the smaller baseline.

    python .ci/typecheck.py                   # what `make typecheck` runs
    python .ci/typecheck.py --write-baseline  # what `make typecheck-baseline` runs
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "mypy-baseline.txt"
HEADER = """\
# Type errors mypy finds today ([tool.mypy] in pyproject.toml), by file and message.
# `make typecheck` fails on any error not listed here. Fix them, then shrink this list
# with `make typecheck-baseline`; add to it only knowingly. A new mypy or library
# (`make lock-upgrade`) can reword errors: read the difference, then rewrite it.
"""
ERROR = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+)(?::\d+)?: error: (?P<message>.*)$")
LINE_NUMBER = re.compile(r"\bline \d+")  # "already defined on line 12"


def key(path: str, message: str) -> str:
    """The baseline's form of an error: no line numbers, even inside the message."""
    return Path(path).as_posix() + ": " + LINE_NUMBER.sub("line N", message)


def run_mypy() -> tuple[Counter[str], dict[str, list[str]]]:
    """Run mypy as configured; return the errors by key, and mypy's own lines for each key."""
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 2: mypy could not run (bad config, crash)
        sys.exit(f"mypy failed to run (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    found: Counter[str] = Counter()
    lines: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            k = key(match["path"], match["message"])
            found[k] += 1
            lines.setdefault(k, []).append(line)
    return found, lines


def errors(n: int) -> str:
    return f"{n} type error" + ("" if n == 1 else "s")


def read_baseline() -> Counter[str]:
    if not BASELINE.exists():
        return Counter()
    return Counter(line for line in BASELINE.read_text().splitlines() if line.strip() and not line.startswith("#"))


def main(argv: list[str]) -> int:
    found, lines = run_mypy()
    if argv == ["--write-baseline"]:
        BASELINE.write_text(HEADER + "".join(f"{k}\n" for k in sorted(found.elements())))
        print(f"{BASELINE.name}: {errors(sum(found.values()))} in {len({k.split(':')[0] for k in found})} files")
        return 0
    if argv:
        sys.exit(__doc__)
    baseline = read_baseline()
    new = found - baseline
    gone = baseline - found
    if new:
        print(f"mypy: {errors(sum(new.values()))} not in {BASELINE.name}:")
        for k, count in sorted(new.items()):
            # Which occurrence is the new one is unknown: show every line with this error.
            for line in lines[k]:
                print(f"  {line}")
            if len(lines[k]) > count:
                print(f"    ({count} of these {len(lines[k])} are new)")
        return 1
    total = sum(found.values())
    if gone:
        print(
            f"mypy: {errors(sum(gone.values()))} fewer than {BASELINE.name} lists, {total} left:"
            " `make typecheck-baseline` records it"
        )
    else:
        print(f"mypy: no new type errors ({total} known, listed in {BASELINE.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
