"""Train one configuration and leave everything about it in its run directory.

    python -m optqual train optimizer=adamw seed=1            # or: python launch.py ..., optqual train ...
    python -m optqual train -m optimizer=sgd,adamw seed=0,1,2

Compose (Hydra) -> check -> set up the machine -> build -> continue from checkpoint.pt, if
any -> train -> test the last weights and those the components kept -> save.
"""

import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from optqual.build import Run, build_run
from optqual.compat import compiled_graphs
from optqual.config.checks import check_config
from optqual.config.schema import register_with_hydra
from optqual.config.upgrade import upgrade
from optqual.engine.checkpoint import CheckpointError, check_same_device, load_checkpoint, save_training_state
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.engine.state import StateMismatch
from optqual.errors import ConfigError
from optqual.files.atomic import DiskFull, remove_leftovers, write_json, write_text
from optqual.files.layout import CHECKPOINT, FINAL, HYDRA_DIR, INITIAL, METRICS, RESOLVED_CONFIG, config_dir, is_run_dir, weights_file
from optqual.files.lock import claimed
from optqual.launch.arguments import check_arguments
from optqual.launch.overrides import check_command
from optqual.launch.directories import discard_unstarted, register_resolvers
from optqual.launch.placement import placed
from optqual.launch.plan import check_plan
from optqual.launch.record import check_same_run, composed, run_log, write_record
from optqual.launch.resources import jobs_at_once
from optqual.models.layers import plain_state_dict
from optqual.models.profile import static_profile
from optqual.recording.dashboards import tracking
from optqual.recording.recorder import save_split, save_weights
from optqual.status import RunStatus
from optqual.system.devices import resolve_device
from optqual.system.machine import set_up_machine
from optqual.system.signals import stop_on_signals

register_with_hydra()
register_resolvers()
log = logging.getLogger("optqual")


def prepare(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path, started: float, job: contextlib.ExitStack) -> Run:
    """Everything that can reject the config, then the job's GPU (held until `job` closes), the
    machine's setup, then the run; writes nothing."""
    check_config(cfg)
    jobs = jobs_at_once(hydra_cfg)
    device, sharing = job.enter_context(placed(resolve_device(cfg.device), jobs, cfg.jobs_per_gpu))
    set_up_machine(cfg.seed, cfg.threads, jobs, device, cfg.precision, sharing)
    return build_run(cfg, dict(hydra_cfg.runtime.choices), run_dir, device, started)


def accept(run_dir: Path, cfg: DictConfig, run: Run) -> bool:
    """Take `run_dir` for this launch: a fresh directory gets the launch's record (.hydra/); one that
    holds a run is continued from its checkpoint.pt, if any, and only by that very run: a run
    continued with other settings would no longer be the run it claims to be. Nothing is written
    before the launch is accepted. True when the run resumes from a checkpoint."""
    removed = remove_leftovers(run_dir)
    if removed:
        log.info("removed what killed writes left: %s", ", ".join(removed))
    holds_run = is_run_dir(run_dir)
    if holds_run:
        check_same_run(run_dir, composed(run_dir / HYDRA_DIR / "config.yaml"), cfg)
    resumed = (run_dir / CHECKPOINT).is_file()
    if resumed:
        saved = load_checkpoint(run_dir)
        check_same_run(run_dir, upgrade(saved["config"]), cfg)
        check_same_device(run_dir, saved, run.device)
        torch.set_num_threads(saved["threads"])
        try:
            run.state.load_state_dict(saved["state"])
        except StateMismatch as err:
            raise CheckpointError(f"{run_dir / CHECKPOINT}: {err}") from err
    log.info(check_plan(run, run_dir, resumed))
    if not holds_run:
        write_record(run_dir, cfg)
    return resumed


class JobFailed(CompactHydraException):
    """A job of a sweep that could not run: recorded as failed in its directory, and the sweep goes on
    (Hydra reports it, in its one line, when the sweep ends)."""


def record_failed_job(run_dir: Path, cfg: DictConfig, err: ConfigError) -> None:
    """A job that failed before it started, as the sweep's summary and `resume` read it."""
    if not is_run_dir(run_dir):  # a directory that holds a run keeps its record
        run_dir.mkdir(parents=True, exist_ok=True)
        write_record(run_dir, cfg)
        write_json(run_dir / METRICS, {"status": RunStatus.FAILED, "error": f"optqual: error: {err}"})


def evaluate_on_test(run: Run, run_dir: Path, precision: str) -> dict:
    """Test loss and accuracy of the last weights (final_model.pt) and of the weights each component
    kept (best_model.pt of early stopping: best_test_acc, ...), and what the components add."""
    model, data = run.training.model, run.training.data

    def test(name: str) -> dict:
        save_weights(run_dir / weights_file(name), plain_state_dict(model))  # quantized weights, under the plain model's names
        scores = evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), precision, run.training.plain_loss)
        prefix = "" if name == FINAL else f"{name}_"
        return {f"{prefix}test_loss": scores["loss"], f"{prefix}test_acc": scores["acc"]}

    results = test(FINAL)
    for extension in run.training.hooks.extensions.values():
        results.update(extension.results())
        for name, weights in extension.solutions().items():
            model.load_state_dict(weights)
            results.update(test(name))
    return results


def train(cfg: DictConfig) -> dict:
    """One run in the directory Hydra made for it, and its metrics.json; exits with a one-line
    error on bad config."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    started = time.perf_counter()
    try:
        with run_log() as write_log_in, contextlib.ExitStack() as job:
            run = prepare(cfg, hydra_cfg, run_dir, started, job)
            with claimed(run_dir):  # one process per run directory: `resume` of a sweep that still runs must not race it
                resumed = accept(run_dir, cfg, run)
                write_log_in(run_dir)
                return fit_and_save(cfg, run, run_dir, resumed)
    except ConfigError as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            record_failed_job(run_dir, cfg, err)  # one job cannot run: the sweep goes on
            raise JobFailed(f"optqual: error: job {run_dir.name}: {err}") from None
        discard_unstarted(run_dir)  # what was made for a launch refused at once
        sys.exit(f"optqual: error: {err}")
    except DiskFull as err:  # checkpoint.pt is the last one written whole: resume continues from it once there is room
        sys.exit(f"optqual: error: {err}; free some space, then python -m optqual resume {run_dir}")
    except KeyboardInterrupt:  # Ctrl-C while setting up (training itself stops at a step, optqual/system/signals.py)
        discard_unstarted(run_dir)
        print("optqual: interrupted before training started: nothing was written" if not run_dir.is_dir() else
              f"optqual: interrupted; continue with python -m optqual resume {run_dir}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except BaseException:
        discard_unstarted(run_dir)
        raise


def fit_and_save(cfg: DictConfig, run: Run, run_dir: Path, resumed: bool) -> dict:
    """Train the remaining epochs, checkpointing as configured; record how the run ended in metrics.json."""
    save_split(run_dir, run.training.data.train_indices, run.training.data.val_indices)
    if not (run_dir / RESOLVED_CONFIG).is_file():  # a run of an earlier optqual gets it when resumed
        write_text(run_dir / RESOLVED_CONFIG, OmegaConf.to_yaml(run.config))
    if not resumed:
        save_weights(run_dir / weights_file(INITIAL), plain_state_dict(run.training.model))  # what the analysis measures distance from
    run.recorder.start()
    log.info("run directory %s (%s, %d parameters, %d train images)", run_dir, run.recorder.facts["device"],
             run.recorder.facts["params"], run.recorder.facts["train_images"])
    if resumed:
        log.info("resuming from checkpoint.pt after epoch %d", run.training.epochs_done)
    config = OmegaConf.to_container(cfg, resolve=True)

    def checkpoint() -> None:
        tic = time.perf_counter()
        run.recorder.checkpoints += 1  # before saving: the saved count includes this checkpoint
        save_training_state(run_dir, config, run.state, run.device)
        run.recorder.checkpoint_seconds += time.perf_counter() - tic

    graphs_before = compiled_graphs()  # a joblib worker may have compiled an earlier job's model
    lost: dict[str, str] = {}  # what a dashboard failed to store, known once it is closed
    try:
        with tracking(cfg, run.recorder.facts["experiment"], run.choices, run_dir, resumed, run.recorder.history, lost) as track, \
                stop_on_signals() as stop:
            def on_epoch(record: dict) -> None:
                pictures = record.pop("pictures", {})  # files, not history columns
                run.recorder.add_epoch(record)
                track(record, pictures)

            status = run.training.fit(on_epoch, checkpoint, cfg.checkpoint_every, stop)
            if status.has_results:
                results = evaluate_on_test(run, run_dir, cfg.precision)
                track({"epoch": run.training.epochs_done, **results})
    except BaseException as err:
        error = str(err) if isinstance(err, DiskFull) else repr(err)
        with contextlib.suppress(DiskFull):  # the record of a full disk may not fit either; checkpoint.pt is whole
            run.recorder.write_metrics(RunStatus.INTERRUPTED if isinstance(err, KeyboardInterrupt) else RunStatus.FAILED, error=error,
                                       dashboard_data_lost=lost)
        raise
    ending = {"checkpoints": run.recorder.checkpoints, "checkpoint_seconds": run.recorder.checkpoint_seconds,  # every process's
              "dashboard_data_lost": lost}
    if cfg.compile:  # this process's: a fixed few per run, however many epochs (conf/config.yaml: compile_mode)
        ending["compiled_graphs"] = compiled_graphs() - graphs_before
        log.info("torch.compile compiled %d graphs", ending["compiled_graphs"])
    if status == RunStatus.INTERRUPTED:  # checkpointed at the step boundary; exit like the signal would
        log.warning("stopped by %s; checkpoint written. Continue with: python -m optqual resume %s", stop.name, run_dir)
        run.recorder.write_metrics(status, error=f"stopped by {stop.name}; continue with: python -m optqual resume {run_dir}", **ending)
        sys.exit(128 + stop.signum)
    if status == RunStatus.DIVERGED:  # a result, not a crash: a sweep goes on
        log.warning("diverged in epoch %d -> %s", run.training.epochs_done, run_dir)
        return run.recorder.write_metrics(status, diverged_epoch=run.training.epochs_done, **ending)
    if status == RunStatus.STOPPED_EARLY:
        ending["stopped_epoch"] = run.training.epochs_done
        log.info("early stopping after epoch %d (best: epoch %s)", run.training.epochs_done, results.get("best_epoch"))
    profile = static_profile(cfg.model, run.training.data.facts(), run.training.model, run_dir / weights_file(FINAL))
    metrics = run.recorder.write_metrics(status, **results, **ending, profile=profile)
    log.info("test_acc %.4f  train_loss %.4f  -> %s", metrics["test_acc"], metrics["train_loss"], run_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def run_with_hydra(cfg: DictConfig) -> float:
    """Returns the last validation accuracy: the objective a sampling sweeper maximizes
    (hydra/sweeper=optuna; a diverged or unvalidated run counts as 0)."""
    return train(cfg).get("val_acc") or 0.0


def main() -> None:
    """`python -m optqual train ARGS` (and `python launch.py ARGS`): the command line checked, then Hydra."""
    try:
        check_arguments(sys.argv[1:])
        check_command(sys.argv[1:])
    except ConfigError as err:
        sys.exit(f"optqual: error: {err}")
    run_with_hydra()
