"""Per-epoch metrics to the dashboards: Trackio (default; local, offline, under `trackio.dir`)
and TensorBoard (`tensorboard.enabled`; event files under the run's `tensorboard/`), either,
both or neither, each getting the same scalars.

Dashboards group charts into sections by the name's first `/` part and order sections
alphabetically, so the names put what a researcher reads first on top: `accuracy/` (train,
val, test side by side), `loss/` (train, train_ce, reg, val, test), `lr/<group>`, then
`per_layer_grad_norm/<layer>`, `regularizer/` (penalty, coefficient), `run/` (batch size,
epoch seconds, ...), `sharpness/` (tracked in training: hessian, preconditioned, threshold,
ratio) and `sparsity/` (the pruning report's ratios, and its pictures as images; TensorBoard
gets the pictures too). metrics.json and history.csv keep their flat keys
(`test_acc`, `grad_norm.<layer>`, `sparsity.mac_ratio_structured`).
"""

import contextlib
import io
import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from optqual.compat import trackio_dir, trackio_logged
from optqual.errors import ConfigError
from optqual.files.figures import pyplot
from optqual.files.layout import MULTIRUN, TENSORBOARD_DIR

Log = Callable[[dict, Mapping[str, Path]], None]  # an epoch's record, and its pictures: chart name -> PNG
logger = logging.getLogger("optqual")


def dashboard_name(key: str) -> str:
    """A history key's chart name: `val_acc` -> `accuracy/val`, `lr.decay` -> `lr/decay`, ..."""
    for flat, section in (("lr.", "lr"), ("grad_norm.", "per_layer_grad_norm"), ("reg.", "regularizer"), ("sharpness.", "sharpness"),
                          ("sparsity.", "sparsity")):
        if key.startswith(flat):
            return f"{section}/{key[len(flat):]}"
    split, _, metric = key.rpartition("_")
    if split and metric in ("acc", "loss"):
        return f"{'accuracy' if metric == 'acc' else 'loss'}/{split}"
    return "loss/train_ce" if key == "train_ce" else f"run/{key}"


def scalars(record: dict) -> dict[str, float]:
    """The record's numbers under their dashboard names (the epoch is the step, not a chart)."""
    return {dashboard_name(key): value for key, value in record.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def sweep_of(run_dir: Path) -> str | None:
    """The name of the sweep a run directory belongs to (its parent holds multirun.yaml), or None."""
    return run_dir.parent.name if (run_dir.parent / MULTIRUN).is_file() else None


def trackio_held(project: str, name: str) -> set[tuple[int, str]]:
    """(step, chart) of every value Trackio's database holds for the run."""
    return {(row["step"], chart) for row in trackio_logged(project, name) for chart in row if chart not in ("step", "timestamp")}


def run_name(run_dir: Path, project: str, choices: Mapping[str, str]) -> str:
    """Trackio's name of a run: what varies first, as the dashboard's narrow run list cuts names
    short at the end. In a sweep, the job's overrides with a group's option shown alone
    (`adamw,seed=1` for `optimizer=adamw,seed=1`); alone, the optimizer and seed (`sgd_seed42`);
    then when it (or its sweep) started, which tells apart the runs of several sweeps of one
    project and lets a resumed run find its own. A directory not named by optqual keeps its name."""
    sweep = run_dir.parent if sweep_of(run_dir) else None
    named = sweep or run_dir
    started, found, rest = named.name.partition(f"_{project}")
    when = f"{named.parent.name}/{started}" if found else named.name  # outputs/.../<date>/<time>_<project>...
    if sweep:
        parts = [part.partition("=") for part in run_dir.name.split(",")]  # a list's comma too: a part without "=" stays
        shown = [value if key in choices and sep else f"{key}{sep}{value}" for key, sep, value in parts]
        return f"{','.join(shown)} @ {when}"
    return f"{rest.removeprefix('_')} @ {when}" if found and rest.startswith("_") else run_dir.name


def flat_config(cfg: DictConfig, choices: Mapping[str, str]) -> dict:
    """The run's config as the dashboard can group and filter runs by it: the option of each group
    (`optimizer: adamw`) and every value under its dotted key (`optimizer.lr`), scalars all
    (Trackio offers no nested value to group by)."""
    flat = {}

    def walk(node: object, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{key}.{name}" if key else str(name))
        else:
            flat[key] = node if node is None or isinstance(node, (bool, int, float, str)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return {**{group: option for group, option in choices.items() if option is not None and "/" not in group}, **flat}


@contextlib.contextmanager
def trackio_run(cfg: DictConfig, project: str, choices: Mapping[str, str], run_dir: Path, resume: bool, history: list[dict],
                lost: dict[str, str]) -> Iterator[Log]:
    """Open a Trackio run in `project` and yield its `log(record)`; the run is finished even if
    training fails.

    The run is named by what varies (run_name); its group is its optimizer, and its config is
    flat (flat_config) plus `run_dir` (absolute) and `sweep` (the sweep's directory name, None
    for a single run), so the dashboard can group runs by optimizer or any key and filter one
    sweep's runs.

    Trackio writes in the background, half a second behind: a process killed just after a
    checkpoint dies with epochs the checkpoint holds but Trackio's database does not. So a
    resumed run reads back what the database holds, logs what `history` (restored from the
    checkpoint) has beyond it, and logs each (epoch, chart) once: an epoch trained again
    after the checkpoint is not logged twice (resume is bit-identical: its values are the
    ones already there). At the end, what was logged is read back; anything missing goes
    into `lost["trackio"]` (metrics.json) and the log, never silently.
    """
    # Trackio reads its data directory from the environment once, when it is imported
    wanted = Path(cfg.trackio.dir).resolve()
    os.environ["TRACKIO_DIR"] = str(wanted)
    import trackio

    if trackio_dir().resolve() != wanted:  # only when runs share one process
        raise ConfigError(f"trackio.dir={cfg.trackio.dir}: this process already logs to {trackio_dir()}; "
                          "Trackio takes one directory per process")

    config = flat_config(cfg, choices) | {"run_dir": str(run_dir.resolve()), "sweep": sweep_of(run_dir)}
    name = run_name(run_dir, project, choices)
    with contextlib.redirect_stdout(io.StringIO()):  # its hint `trackio show --project` opens an empty dashboard without TRACKIO_DIR
        trackio.init(project=project, name=name, group=choices["optimizer"], config=config, resume="allow" if resume else "never",
                     auto_log_cpu=False, auto_log_gpu=False)
    logger.info("dashboard: python -m optqual dashboard %s", run_dir.parent if sweep_of(run_dir) else run_dir)
    logged = trackio_held(project, name) if resume else set()  # what the stopped process's Trackio wrote
    sent: set[tuple[int, str]] = set()

    def log(record: dict, pictures: Mapping[str, Path] = {}) -> None:
        step = record["epoch"]
        values = {chart: value for chart, value in scalars(record).items() if (step, chart) not in logged}
        values.update({chart: trackio.Image(path, caption=path.name) for chart, path in pictures.items() if (step, chart) not in logged})
        if values:
            trackio.log(values, step=step)
            logged.update((step, chart) for chart in values)
            sent.update((step, chart) for chart in values)

    try:
        for record in history:
            log(record)
        yield log
    finally:
        trackio.finish()  # waits for Trackio's writer
        missing = sorted(sent - trackio_held(project, name))
        if missing:
            lost["trackio"] = (f"{len(missing)} of {len(sent)} values logged are not in {wanted} "
                               f"(project {project}, run {name}; the first: epoch {missing[0][0]} {missing[0][1]})")
            logger.warning("Trackio lost data: %s", lost["trackio"])


@contextlib.contextmanager
def tensorboard_run(run_dir: Path, resume: bool, epochs_done: int) -> Iterator[Log]:
    """A TensorBoard writer in the run's `tensorboard/`; a resumed run first drops what was logged
    after its checkpoint (`purge_step`), so no epoch appears twice."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=epochs_done + 1 if resume else None)

    def log(record: dict, pictures: Mapping[str, Path] = {}) -> None:
        for name, value in scalars(record).items():
            writer.add_scalar(name, value, global_step=record["epoch"])
        for name, path in pictures.items():
            writer.add_image(name, pyplot().imread(path), global_step=record["epoch"], dataformats="HWC")
        writer.flush()

    try:
        yield log
    finally:
        writer.close()


@contextlib.contextmanager
def tracking(cfg: DictConfig, project: str, choices: Mapping[str, str], run_dir: Path, resume: bool, history: list[dict],
             lost: dict[str, str]) -> Iterator[Log]:
    """`log(record)` to every dashboard the config turns on (Trackio, TensorBoard, both, neither),
    for a run of `project` (the Trackio project) composed of `choices` (each group's option) that
    starts, or resumes with `history` restored from its checkpoint. Once they are closed, `lost`
    says what a dashboard failed to store."""
    with contextlib.ExitStack() as stack:
        logs = []
        if cfg.trackio.enabled:
            logs.append(stack.enter_context(trackio_run(cfg, project, choices, run_dir, resume, history, lost)))
        if cfg.tensorboard.enabled:  # its writer flushes every epoch: nothing to catch up
            logs.append(stack.enter_context(tensorboard_run(run_dir, resume, len(history))))

        def log_everywhere(record: dict, pictures: Mapping[str, Path] = {}) -> None:
            for log in logs:
                log(record, pictures)

        yield log_everywhere
