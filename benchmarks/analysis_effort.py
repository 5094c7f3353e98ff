"""How long `python -m optqual analyze RUN effort=full|quick` takes for one run, per measure.

    python benchmarks/analysis_effort.py RUN_DIR [--threads 2]

Analyzes the run twice in a scratch copy (so its own analysis/ is untouched), with --force, once
per effort, in processes of their own with `--threads` torch threads (OMP_NUM_THREADS and
MKL_NUM_THREADS too), and prints one JSON line: the wall seconds of each command, the seconds
of each measure (from its saved result), and the top eigenvalue and trace each effort found.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    report = {"run": str(args.run), "threads": args.threads, "cpu": os.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / args.run.name
        shutil.copytree(args.run, copy, ignore=shutil.ignore_patterns("analysis"))
        for effort in ("full", "quick"):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "optqual", "analyze", str(copy), f"effort={effort}", "--force"], env=env, check=True,
                           capture_output=True)
            seconds = {path.stem: round(json.loads(path.read_text())["seconds"], 1) for path in sorted((copy / "analysis").glob("*.json"))}
            sharpness = json.loads((copy / "analysis" / "sharpness.json").read_text())["result"]
            report[effort] = {"wall_seconds": round(time.perf_counter() - started, 1), "measure_seconds": seconds,
                              "top_eigenvalue": round(sharpness["top_eigenvalue"], 2), "trace": round(sharpness["trace"], 1),
                              "trace_stderr": round(sharpness["trace_stderr"], 1)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
