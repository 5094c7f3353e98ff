"""Atomic writes: a crash leaves the previous version of a file or none, never half of one.

Every file optqual writes goes through `atomic_write` (temporary file beside the target,
fsync, rename), as bytes, text or strict JSON. `check_writable` asks the question before any
work, so a run does not train for hours and then lose what it writes.
"""

import csv
import errno
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from optqual.errors import ConfigError

_UMASK = os.umask(0o022)  # read once: mkstemp creates 0600 files, run files should be as readable as any
os.umask(_UMASK)


def check_writable(path: Path, key: str) -> None:
    """Fail now, with one line naming `key`, unless `path` is (or can be made) a directory this
    process writes to. Probes with a temporary file that vanishes: nothing is left behind."""
    probed = path
    try:
        probed = next(folder for folder in (path, *path.parents) if folder.exists())  # the folder mkdir would write in
        if not probed.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=probed):
            pass
    except OSError as err:
        where = f" ({probed})" if probed != path else ""
        raise ConfigError(f"{key}={path}: cannot write there: {err.strerror or err}{where}") from None


class DiskFull(OSError):
    """A write that found its filesystem full; the message names the file and the space it needs."""


FULL = 1 << 20  # bytes: a filesystem with less free after a failed write is the cause of the failure


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename it into place.

    A write that fails on a full filesystem (torch's zip writer reports it as 'unexpected pos',
    not as ENOSPC) raises DiskFull, after the temporary file is removed: `path` is as it was."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as err:
        written = Path(temp).stat().st_size if Path(temp).exists() else 0
        full = isinstance(err, Exception) and shutil.disk_usage(path.parent).free < FULL
        Path(temp).unlink(missing_ok=True)
        if full or (isinstance(err, OSError) and err.errno == errno.ENOSPC):
            needed = max(written, path.stat().st_size if path.exists() else 0)
            raise DiskFull(f"{path}: no space left on device: it needs at least {needed / 2**20:.1f} MiB, and "
                           f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB are free there") from err
        raise


def remove_leftovers(directory: Path) -> list[str]:
    """The temporary files (and the record's temporary folder) of writes a kill interrupted in
    `directory`, removed; their names. Only for the holder of the directory's lock: no other
    process writes there then."""
    leftovers = sorted(directory.glob(".*.tmp"))
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return [path.name for path in leftovers]


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def write_csv(path: Path, rows: list[dict]) -> None:
    """A header of every key the rows hold (in order of appearance), a line per row; a key a row lacks stays empty."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def finite_or_none(value: Any) -> Any:
    """NaN and infinity as null: strict JSON has no such numbers (a diverged run's loss)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(finite_or_none(payload), indent=2, allow_nan=False) + "\n")
