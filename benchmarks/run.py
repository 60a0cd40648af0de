"""Run every benchmark in this folder and print its figures (``make bench``).

Each ``bench_*.py`` is a script that measures its contestants in one process and prints a table;
this runner runs them one after the other with the interpreter it was started with.
``--json`` collects each benchmark's ``--json`` object into one JSON document; other options
(``--events 1000``) are handed to every benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object for all benchmarks")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. bus")
    args, passthrough = parser.parse_known_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.names]
    results: dict[str, object] = {}
    status = 0
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        cmd = [sys.executable, str(script), *(["--json"] if args.json else []), *passthrough]
        if not args.json:
            print(f"== {name} ==", flush=True)
        proc = subprocess.run(cmd, check=False, capture_output=args.json, text=True)  # noqa: S603
        status = status or proc.returncode
        if args.json:
            results[name] = json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr
    if args.json:
        print(json.dumps(results, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
