"""Shared helpers for the benchmarks: timing, machine details, tables, result files.

Every benchmark measures its subject against a baseline in the same run and reports the
ratio with the absolute figures beside it: this 2-core machine is shared and noisy, so
absolute numbers alone mean little. Each benchmark writes `bench/results/<name>.md`;
`bench/run_all.py` joins them into `bench/RESULTS.md`. Each section names the commit it was
measured on (COMMIT, taken when the benchmark starts).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


COMMIT_LINE = "Measured on commit"


def current_commit() -> str:
    """`git rev-parse --short HEAD`, with "+dirty" when tracked files differ from it (results aside)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # The results a benchmark writes are not the code it measures: a second benchmark is not "dirty" for them.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results", ":!bench/RESULTS.md")
    return head + ("+dirty" if changed else "")


COMMIT = current_commit()


def setup_django(settings_module: str = "project.settings") -> None:
    """Configure Django for a benchmark process (call before importing models)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    # The benchmarks' data sources are servers on loopback (also for the workers they start,
    # which inherit this environment), whatever DEBUG is.
    os.environ.setdefault("REPORTING_ALLOWED_SOURCE_HOSTS", "127.0.0.1,localhost")
    import django

    django.setup()


@dataclass
class Timing:
    best: float
    median: float
    runs: int


def measure(function: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> Timing:
    """Wall-clock seconds of `function`: best and median of `repeat` runs after `warmup`."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return Timing(best=min(samples), median=statistics.median(samples), runs=repeat)


def interleaved(
    subject: Callable[[], object], baseline: Callable[[], object], *, repeat: int = 5
) -> tuple[Timing, Timing]:
    """Time `subject` and `baseline` alternately, so that noise hits both alike."""
    subject(), baseline()  # warm up both
    subject_samples, baseline_samples = [], []
    for _ in range(repeat):
        for function, samples in ((baseline, baseline_samples), (subject, subject_samples)):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
    as_timing = lambda samples: Timing(min(samples), statistics.median(samples), repeat)  # noqa: E731
    return as_timing(subject_samples), as_timing(baseline_samples)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {total_kb / 1_048_576:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}; Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}; {system}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (also readable as printed text)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
    line = lambda row: "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * width for width in widths) + " |", *map(line, cells)])


def write_result(name: str, title: str, body: str) -> Path:
    """Print a benchmark's section and keep it for bench/RESULTS.md, with its command and the commit it was measured on.

    A body that names its commits itself (a benchmark keeping figures from earlier runs) keeps its own line.
    """
    RESULTS_DIR.mkdir(exist_ok=True)
    if "Command:" not in body:  # how to measure it again: this very command line
        script = Path(sys.argv[0]).name
        body = f"{body.strip()}\n\nCommand: `{' '.join(['.venv/bin/python', f'bench/{script}', *sys.argv[1:]])}`."
    if COMMIT_LINE not in body:
        body = f"{body.strip()}\n\n{COMMIT_LINE} `{COMMIT}`, {time.strftime('%Y-%m-%d %H:%M %Z')}, on {machine()}."
    text = f"## {title}\n\n{body.strip()}\n"
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text)
    print(text)
    return path


def ratio(subject: float, baseline: float) -> str:
    return f"{subject / baseline:.2f}×" if baseline else "n/a"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
