"""Train one configuration and leave everything about it in its run directory.

    python -m optqual train optimizer=adamw seed=1            # or: python launch.py ..., optqual train ...
    python -m optqual train -m optimizer=sgd,adamw seed=0,1,2

Compose (Hydra) -> check -> set up the machine -> build -> continue from checkpoint.pt, if
any -> train -> test the last weights and those the components kept -> save.
"""

import logging
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from optqual import config_dir
from optqual.build import Run, build_run
from optqual.config.checks import check_config
from optqual.config.diff import config_diff
from optqual.config.schema import register_with_hydra
from optqual.config.upgrade import upgrade
from optqual.engine.checkpoint import CheckpointError, load_checkpoint, save_training_state
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.engine.state import StateMismatch
from optqual.errors import ConfigError
from optqual.files.atomic import write_text
from optqual.files.layout import CHECKPOINT, FINAL, INITIAL, RESOLVED_CONFIG, weights_file
from optqual.files.lock import claimed
from optqual.launch.directories import discard_unstarted, register_resolvers
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


def prepare(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path, started: float) -> Run:
    """Everything that can reject the config, then the machine's setup, then the run; writes nothing."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    set_up_machine(cfg.seed, cfg.threads, jobs_at_once(hydra_cfg), device)
    return build_run(cfg, dict(hydra_cfg.runtime.choices), run_dir, device, started)


def restore(run_dir: Path, cfg: DictConfig, run: Run) -> bool:
    """Load `run_dir`'s checkpoint into the run (and the thread count it ran with); False when there is none.

    The checkpoint must come from this very config: a run continued with other settings
    would no longer be the run it claims to be.
    """
    if not (run_dir / CHECKPOINT).is_file():
        return False
    saved = load_checkpoint(run_dir)
    changed = config_diff(upgrade(saved["config"]), OmegaConf.to_container(cfg, resolve=True))
    if changed:
        listed = ", ".join(f"{key}: {before!r} -> {now!r}" for key, before, now in changed[:3])
        raise CheckpointError(f"{run_dir / CHECKPOINT} was written by another config ({listed}); resume it with python -m optqual resume {run_dir}")
    torch.set_num_threads(saved["threads"])
    try:
        run.state.load_state_dict(saved["state"])
    except StateMismatch as err:
        raise CheckpointError(f"{run_dir / CHECKPOINT}: {err}") from err
    return True


def evaluate_on_test(run: Run, run_dir: Path, precision: str) -> dict:
    """Test loss and accuracy of the last weights (final_model.pt) and of the weights each component
    kept (best_model.pt of early stopping: best_test_acc, ...), and what the components add."""
    model, data = run.training.model, run.training.data

    def test(name: str) -> dict:
        save_weights(run_dir / weights_file(name), plain_state_dict(model))  # quantized weights, under the plain model's names
        scores = evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), precision)
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
        run = prepare(cfg, hydra_cfg, run_dir, started)
    except ConfigError as err:
        discard_unstarted(run_dir)  # nothing here that could pass for a run
        sys.exit(f"optqual: error: {err}")
    try:
        with claimed(run_dir):  # one process per run directory: `resume` of a sweep that still runs must not race it
            resumed = restore(run_dir, cfg, run)  # from checkpoint.pt when run_dir holds one
            return fit_and_save(cfg, run, run_dir, resumed)
    except ConfigError as err:
        sys.exit(f"optqual: error: {err}")


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
        save_training_state(run_dir, config, run.state)
        run.recorder.checkpoint_seconds += time.perf_counter() - tic

    lost: dict[str, str] = {}  # what a dashboard failed to store, known once it is closed
    try:
        with tracking(cfg, run.recorder.facts["optimizer"], run_dir, resumed, run.recorder.history, lost) as track, \
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
        run.recorder.write_metrics(RunStatus.INTERRUPTED if isinstance(err, KeyboardInterrupt) else RunStatus.FAILED, error=repr(err),
                                   dashboard_data_lost=lost)
        raise
    ending = {"checkpoints": run.recorder.checkpoints, "checkpoint_seconds": run.recorder.checkpoint_seconds,  # every process's
              "dashboard_data_lost": lost}
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
def main(cfg: DictConfig) -> float:
    """Returns the last validation accuracy: the objective a sampling sweeper maximizes
    (hydra/sweeper=optuna; a diverged or unvalidated run counts as 0)."""
    return train(cfg).get("val_acc") or 0.0
