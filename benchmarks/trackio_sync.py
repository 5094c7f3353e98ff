"""What keeping Trackio exactly in step with history.csv costs a run.

    python benchmarks/trackio_sync.py                  # 200 epochs, the charts of a ResNet-8 run
    python benchmarks/trackio_sync.py --epochs 1000

A run logs every (epoch, chart) once, reads Trackio's database back when it resumes (to log
what the killed process's writer had not written yet) and once more when it ends (to record
anything Trackio failed to store as lost data: optqual/recording/dashboards.py). The log itself is
Trackio's own cost. This times, in a scratch Trackio directory, the run's logging with and
without the bookkeeping, and the two read-backs, for a run of `--epochs` epochs that logs
the charts a ResNet-8 run logs. Prints one JSON line.
"""

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--charts", type=int, default=24, help="scalars per epoch (ResNet-8: 24 with its layers' grad norms)")
    args = parser.parse_args()
    os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="trackio_sync_")
    import trackio

    from optqual.recording.dashboards import trackio_held

    def one_run(name: str, bookkeeping: bool) -> dict[str, float]:
        trackio.init(project="bench", name=name, resume="never", auto_log_cpu=False, auto_log_gpu=False)
        logged: set[tuple[int, str]] = set()
        tic = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            values = {f"chart/{i}": epoch + i / 100 for i in range(args.charts)}
            if bookkeeping:
                values = {chart: value for chart, value in values.items() if (epoch, chart) not in logged}
                logged.update((epoch, chart) for chart in values)
            trackio.log(values, step=epoch)
        logging = time.perf_counter() - tic
        trackio.finish()
        tic = time.perf_counter()
        held = trackio_held("bench", name)
        read_back = time.perf_counter() - tic
        assert len(held) == args.epochs * args.charts, len(held)
        return {"log_seconds": logging, "read_back_seconds": read_back}

    plain, kept = one_run("plain", bookkeeping=False), one_run("kept", bookkeeping=True)
    print(json.dumps({
        "epochs": args.epochs, "charts": args.charts,
        "log_seconds_plain": round(plain["log_seconds"], 4), "log_seconds_with_bookkeeping": round(kept["log_seconds"], 4),
        "read_back_seconds": round(kept["read_back_seconds"], 4),  # paid once at the end, and once more per resume
    }))


if __name__ == "__main__":
    main()
