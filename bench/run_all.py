"""Run every benchmark (or those named) and join their results into bench/RESULTS.md."""

import re
import subprocess
import sys
import time
from pathlib import Path

from common import COMMIT_LINE, RESULTS_DIR, machine

BENCH_DIR = Path(__file__).resolve().parent
ORDER = ["pipeline", "throughput", "per_recipient", "schedules", "large", "leak", "admin"]


def main(names: list[str]) -> int:
    """Run the named benchmarks (all by default); `--collect` only joins existing results."""
    failed = []
    collect_only = "--collect" in names
    names = [name for name in names if name != "--collect"]
    for name in [] if collect_only else names or ORDER:
        script = BENCH_DIR / f"bench_{name}.py"
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=BENCH_DIR.parent).returncode != 0:
            failed.append(name)
    sections = [(RESULTS_DIR / f"{name}.md") for name in ORDER]
    header = [
        "# Benchmark results",
        "",
        f"Joined {time.strftime('%Y-%m-%d %H:%M %Z')} on {machine()}, from the latest run of each benchmark "
        "(`make bench` runs them all; each section below was measured in its own run, and names the commit, "
        "the date and the machine it was measured on).",
        "Every figure is measured against a baseline in the same run; ratios are subject ÷ baseline.",
        "",
    ]
    body = [with_commit(path.read_text()) for path in sections if path.exists()]
    (BENCH_DIR / "RESULTS.md").write_text("\n".join(header + body))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def with_commit(section: str) -> str:
    """The section as its benchmark wrote it, commit included; one from before commits were recorded says so."""
    if COMMIT_LINE in section or re.search(r"Measured on [0-9a-f]{7,}", section):  # the latter: an older wording
        return section
    return f"{section.rstrip()}\n\n{COMMIT_LINE}: not recorded (measured before the benchmarks recorded it).\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
