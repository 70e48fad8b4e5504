"""What every benchmark records next to its figures: the machine it ran on, and where."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def machine(libraries: Iterable[str] = ("spendstream",)) -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python, library versions and the load at the start."""
    cpu = platform.processor() or "unknown"
    ram_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    libs: dict[str, str | None] = {}
    for dist in libraries:
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            libs[dist] = None
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": libs,
        # A shared machine's figures mean little without the load they were taken under.
        "load_average": os.getloadavg(),
    }


def record(name: str, report: dict[str, Any], line: str) -> None:
    """Write results/<name>.json, put this run's line in RESULTS.md, print both.

    The line this run replaces stays beside it as "the run before" (only the newest such one:
    figures worth keeping longer are relabelled by hand, e.g. "before <change>:"), so a new
    figure never silently erases the one it is compared with.
    """
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = ROOT / "RESULTS.md"
    lines = md.read_text().splitlines() if md.exists() else ["# Benchmark results", ""]
    current, before = f"- {name} (", f"- the run before: {name} ("
    replaced = [ln for ln in lines if ln.startswith(current)]
    lines = [ln for ln in lines if not ln.startswith((current, before))]
    lines += [before + ln[len(current) :] for ln in replaced[-1:]] + [line]
    md.write_text("\n".join(lines) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2, default=str))
    print(line)


_MEASURED = """\
import resource, sys
from spendstream.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    use = resource.getrusage(resource.RUSAGE_SELF)
    print("BENCH_MAXRSS_KB", use.ru_maxrss, file=sys.stderr)
    print("BENCH_CPU_S", use.ru_utime + use.ru_stime, file=sys.stderr)
sys.exit(rc)
"""


@dataclass(frozen=True, slots=True)
class Measured:
    """One ``spendstream`` child process: wall and CPU seconds (its own, every thread),
    peak RSS, and what it printed."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str


def run_spendstream(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of ``spendstream ARGS`` in a child process."""
    m = run_measured(args)
    return m.wall_s, m.peak_rss_mb, m.stdout


def run_measured(args: list[str]) -> Measured:
    """``spendstream ARGS`` in a child process, measured.

    The child reports its own peak and CPU time. RUSAGE_CHILDREN would not do: Linux carries
    the high-water mark across fork and exec, so a child forked from a benchmark holding a
    million generated events would report the parent's size as its own.
    """
    import subprocess
    import sys
    import time

    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"spendstream {' '.join(args)} failed: {proc.stderr[-2000:]}")
    said = dict(
        line.split(maxsplit=1) for line in proc.stderr.splitlines() if line.startswith("BENCH_")
    )
    kb = int(said["BENCH_MAXRSS_KB"])
    return Measured(wall, float(said["BENCH_CPU_S"]), kb / 1024, proc.stdout)


def write_synthetic(path: Path, events: int, seed: int) -> None:
    """The demo's synthetic workload as JSON Lines, generated in a child process so that
    the benchmark itself stays small (see run_spendstream)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from spendstream.synthetic import write_jsonl\n"
        "write_jsonl(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(events), str(seed)], check=True)


@contextlib.contextmanager
def kafka_for_run(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    """``bootstrap`` when given, else a LocalKafka started in ``workdir`` for the run and
    stopped after it: the broker a benchmark measures on."""
    if bootstrap:
        yield bootstrap
        return
    from spendstream.local.kafka import LocalKafka, find_free_ports

    port, cport = find_free_ports(2)
    broker = LocalKafka(workdir, port=port, controller_port=cport)
    try:
        yield broker.start(timeout_s=180)
    finally:
        broker.stop()
