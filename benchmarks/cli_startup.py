"""How long the commands that only describe things take to answer, and what they import.

``invkit --help``, ``invkit plugins`` and ``invkit list`` should answer at once: listing reads
each component's docstring and signature, and needs neither torch nor scipy. Each command is
run ``--repeat`` times as a fresh process; the median wall time is printed, beside the heavy
libraries a listing process ends up importing (none, when nothing regressed).

    python benchmarks/cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

INVKIT = str(Path(sys.executable).with_name("invkit"))
COMMANDS = (["--help"], ["plugins"], ["plugins", "--all"], ["list"], ["list", "measures"])
HEAVY = ("torch", "kornia", "scipy", "timm", "torchvision", "matplotlib", "sklearn")
PROBE = (
    "import sys; from invkit.api import list_components; from invkit.plugins import get_host; "
    "list_components(); get_host().plugins(include_builtins=True); "
    f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
)


def median_seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (default 7)")
    args = parser.parse_args()
    python = median_seconds([sys.executable, "-c", "pass"], args.repeat)
    print(f"python -c pass: {python:.3f} s (the interpreter alone)")
    for command in COMMANDS:
        seconds = median_seconds([INVKIT, *command], args.repeat)
        print(f"invkit {' '.join(command)}: {seconds:.3f} s")
    imported = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(f"heavy libraries imported by listing: {imported or 'none'}")


if __name__ == "__main__":
    main()
