"""What a benchmark records about the machine it ran on, so every committed figure names its device and date.

Imported by the scripts beside it (``python benchmarks/NAME.py`` puts this folder first on ``sys.path``).
"""
from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

__all__ = ["cpu_model", "machine"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """CPU, cores, load before the run, kernel, Python and the UTC date."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_before": os.getloadavg(),
            "kernel": platform.release(), "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
