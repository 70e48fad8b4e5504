"""What every benchmark records next to its figures: the machine it ran on, and where."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable
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
    """Write results/<name>.json and replace this benchmark's line in RESULTS.md."""
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = ROOT / "RESULTS.md"
    lines = md.read_text().splitlines() if md.exists() else ["# Benchmark results", ""]
    lines = [ln for ln in lines if not ln.startswith(f"- {name} ")] + [line]
    md.write_text("\n".join(lines) + "\n")
