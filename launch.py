"""Train one configuration and leave everything about it in its run directory.

    python launch.py optimizer=adamw seed=1
    python launch.py -m optimizer=sgd,adamw seed=0,1,2

Compose (Hydra) -> check and build -> continue from checkpoint.pt, if any -> train ->
test the last and the best weights -> save. See README.md.
"""

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from optqual.batch_mix import build_batch_mix
from optqual.clipping import GradClipping
from optqual.config import check_config, register_with_hydra, resolve_device
from optqual.data.images import ImageData
from optqual.early_stopping import EarlyStopping
from optqual.erasing import RandomErasing
from optqual.engine.checkpoint import restore_training_state, save_training_state
from optqual.engine.hooks import Extension, Hooks
from optqual.engine.loop import EVAL_BATCH_SIZE, Training, evaluate, grad_norm_every
from optqual.engine.state import RandomState, TrainingState
from optqual.errors import ConfigError, build
from optqual.models import build_model
from optqual.models.profile import macs_per_parameter, static_profile
from optqual.optim.build import build_optimizer
from optqual.policies import build_policy, with_policy
from optqual.runs.naming import register_resolvers
from optqual.runs.rundir import BEST_MODEL, FINAL_MODEL, INITIAL_MODEL, SPARSITY_DIR, RunRecorder, claimed, discard_unstarted, save_split, save_weights
from optqual.runs.tracking import tracking
from optqual.schedule import build_schedule
from optqual.sparsity.penalties import build_penalty
from optqual.sparsity.quantizer import attach_quantizers, deployed_state_dict, quantizer_groups
from optqual.sparsity.report import SparsityReport
from optqual.status import RunStatus
from optqual.system.allocator import keep_freed_memory
from optqual.system.hardware import hardware
from optqual.system.reproducibility import data_generator, make_deterministic, stream_generator
from optqual.system.resources import jobs_at_once, share_machine
from optqual.system.signals import stop_on_signals

register_with_hydra()
register_resolvers()
log = logging.getLogger("optqual")


@dataclass
class Run:
    training: Training  # the model, optimizer, data and extensions, and where training stands
    state: TrainingState  # everything checkpoint.pt saves and restores
    recorder: RunRecorder  # history.csv and metrics.json
    early_stopping: EarlyStopping  # also keeps the best weights


def extensions(cfg: DictConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: ImageData,
               run_dir: Path) -> dict[str, Extension]:
    """The components that take part in every step and epoch, in the order they are called."""
    parts: dict[str, Extension] = {}
    if cfg.random_erasing.p > 0:  # on each image, before images are mixed
        device = data.train_labels.device
        parts["random_erasing"] = RandomErasing(stream_generator(cfg.seed, "random_erasing", device), **cfg.random_erasing)
    mixing = build_batch_mix(cfg.batch_mix, data.num_classes, stream_generator(cfg.seed, "batch_mix"))
    if mixing is not None:
        parts["batch_mix"] = mixing
    if cfg.clip_grad_norm is not None:
        parts["clipping"] = GradClipping([p for p in model.parameters() if p.requires_grad], cfg.clip_grad_norm)
    penalty = build_penalty(cfg.regularizer, model, data.epoch_steps(cfg.epochs))  # its coefficient follows the updates
    if penalty is not None:
        parts["regularizer"] = penalty
    parts["lr_schedule"] = build_schedule(cfg.scheduler, optimizer, data.epoch_steps(cfg.epochs))  # told every update
    parts["early_stopping"] = EarlyStopping(model, **cfg.early_stopping)
    if reports_sparsity(cfg):  # after every validation, on the weights validation saw
        def test_accuracy() -> float:
            return evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), cfg.precision)["acc"]

        image = torch.zeros(1, data.channels, data.image_size, data.image_size, device=data.train_labels.device)
        parts["sparsity_report"] = SparsityReport(model, image.contiguous(memory_format=torch.channels_last), cfg.sparsity.zero_threshold,
                                                  cfg.sparsity.pictures_every, run_dir / SPARSITY_DIR, test_accuracy, cfg.epochs)
    return parts


def reports_sparsity(cfg: DictConfig) -> bool:
    if cfg.sparsity.enabled is not None:
        return cfg.sparsity.enabled
    return cfg.regularizer.penalty is not None or cfg.quantizer.kind is not None


def prepare(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path, started: float) -> Run:
    """Everything that can reject the config, in the order that keeps runs reproducible; writes nothing."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    # CPU kernels split their sums by thread, so the thread count is part of the result
    share_machine(cfg.threads, jobs_at_once(hydra_cfg), device)
    keep_freed_memory()  # a CPU step otherwise page-faults its activations back in every time
    make_deterministic(cfg.seed)
    policy = build_policy(cfg.augment)  # None for augment=crop_flip
    data = with_policy(build(cfg.data, "data", device=device), policy)  # draws nothing from torch's generator
    model = build_model(cfg.model, data.facts())  # the first draw from the seeded generator: the initial weights
    attach_quantizers(cfg.quantizer, model)  # quantizer=deadzone: module.weight is then the quantized weight
    model.to(device, memory_format=torch.channels_last)  # the layout convolutions run fastest in
    if cfg.compile:
        model.compile()  # in place: state_dict keys stay those of the plain model
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr_scale, quantizer_groups(cfg.quantizer, model))
    generator = data_generator(cfg.seed, device)
    parts = extensions(cfg, model, optimizer, data, run_dir)
    norm_every = grad_norm_every(cfg.grad_norm_every, macs_per_parameter(cfg.model, data.facts()))  # counted on the meta device
    training = Training(model, optimizer, data, generator, Hooks(parts), cfg.epochs, cfg.eval_every, cfg.precision,
                        cfg.loss.label_smoothing, norm_every)
    recorder = RunRecorder(run_dir, {
        "seed": cfg.seed,
        "optimizer": hydra_cfg.runtime.choices.optimizer,
        "scheduler": hydra_cfg.runtime.choices.scheduler,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": cfg.precision,
        "compile": cfg.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "grad_norm_every": norm_every,  # what grad_norm_every=auto came to
        "train_images": len(data.train_labels),
        "data": data.facts(),
        "hardware": hardware(device),  # CPU results are bit-identical on one CPU model, not across them
    }, started)
    state = TrainingState()
    for name, part in {"model": model, "optimizer": optimizer, **{f"extension.{n}": e for n, e in parts.items()},
                       "rng": RandomState({"data": generator}), "loop": training, "record": recorder,
                       **({"augment": policy} if policy else {})}.items():
        state.register(name, part)
    return Run(training, state, recorder, parts["early_stopping"])


def evaluate_on_test(run: Run, run_dir: Path, precision: str) -> dict:
    """Test loss and accuracy of the last weights (final_model.pt) and, when validation chose
    some, of the best weights (best_model.pt)."""
    model, data = run.training.model, run.training.data
    save_weights(run_dir / FINAL_MODEL, deployed_state_dict(model))  # quantized weights, under the plain model's names
    last = evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), precision)
    results = {"test_loss": last["loss"], "test_acc": last["acc"]}
    if run.early_stopping.best_weights is not None:
        model.load_state_dict(run.early_stopping.best_weights)
        save_weights(run_dir / BEST_MODEL, deployed_state_dict(model))
        best = evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), precision)
        results.update(run.early_stopping.results(), best_test_loss=best["loss"], best_test_acc=best["acc"])
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
            resumed = restore_training_state(run_dir, cfg, run.state)  # from checkpoint.pt when run_dir holds one
            return fit_and_save(cfg, run, run_dir, resumed)
    except ConfigError as err:
        sys.exit(f"optqual: error: {err}")


def fit_and_save(cfg: DictConfig, run: Run, run_dir: Path, resumed: bool) -> dict:
    """Train the remaining epochs, checkpointing as configured; record how the run ended in metrics.json."""
    save_split(run_dir, run.training.data.train_indices, run.training.data.val_indices)
    if not resumed:
        save_weights(run_dir / INITIAL_MODEL, deployed_state_dict(run.training.model))  # what the analysis measures distance from
    run.recorder.start()
    log.info("run directory %s (%s, %d parameters, %d train images)", run_dir, run.recorder.facts["device"],
             run.recorder.facts["params"], run.recorder.facts["train_images"])
    if resumed:
        log.info("resuming from checkpoint.pt after epoch %d", run.training.epochs_done)
    def checkpoint() -> None:
        tic = time.perf_counter()
        run.recorder.checkpoints += 1  # before saving: the saved count includes this checkpoint
        save_training_state(run_dir, cfg, run.state)
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
    profile = static_profile(cfg.model, run.training.data.facts(), run.training.model, run_dir / FINAL_MODEL)
    report = run.training.hooks.extensions.get("sparsity_report")
    if report is not None:
        ending["sparsity"] = report.last  # the last epoch's weights, whatever best_model.pt holds
    metrics = run.recorder.write_metrics(status, **results, **ending, profile=profile)
    log.info("test_acc %.4f  train_loss %.4f  -> %s", metrics["test_acc"], metrics["train_loss"], run_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Returns the last validation accuracy: the objective a sampling sweeper maximizes
    (hydra/sweeper=optuna; a diverged or unvalidated run counts as 0)."""
    return train(cfg).get("val_acc") or 0.0


if __name__ == "__main__":
    main()
