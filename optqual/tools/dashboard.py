"""`python -m optqual dashboard RUN_DIR | SWEEP_DIR`: the Trackio dashboard of a run's or a sweep's
project, opened as it reads best: on its project, unsmoothed (Trackio smooths by 10 by default,
which flattens runs of a few dozen epochs), wherever the runs logged it (Trackio's own
`trackio show` needs TRACKIO_DIR set to that place, or opens an empty dashboard)."""

import contextlib
import io
import os
import time
import webbrowser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from optqual.runs.reader import RunDirError, read_sweep


def dashboard_of(directory: str | Path) -> tuple[str, Path]:
    """The Trackio project and data directory the runs of `directory` logged to (metrics.json)."""
    logged = {(job.metrics["experiment"], job.metrics["trackio_dir"]) for job in read_sweep(directory)
              if job.metrics.get("experiment") and job.metrics.get("trackio_dir")}
    if not logged:
        raise RunDirError(f"{directory}: no run here logged to Trackio (trackio.enabled=false, or none has started)")
    project, data = sorted(logged)[0]
    return project, Path(data)


def unsmoothed(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), ("smoothing", "0")])))


def show(directory: str | Path, port: int | None = None, browser: bool = True) -> None:
    """Serve the dashboard of `directory`'s project until Ctrl-C, its address printed (and opened)."""
    project, data = dashboard_of(directory)
    os.environ["TRACKIO_DIR"] = str(data)  # Trackio reads it once, when imported
    import trackio

    with contextlib.redirect_stdout(io.StringIO()):  # its address without the project's settings below
        _, _, _, url = trackio.show(project=project, open_browser=False, block_thread=False, server_port=port)
    url = unsmoothed(url)
    print(f"the dashboard of project {project} ({data}): {url}\nCtrl-C stops it", flush=True)
    if browser:
        webbrowser.open(url)
    with contextlib.suppress(KeyboardInterrupt):  # the server runs in Trackio's threads until the process ends
        while True:
            time.sleep(3600)
