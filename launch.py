"""Train one configuration and leave everything about it in its run directory.

    python launch.py optimizer=adamw seed=1
    python launch.py -m optimizer=sgd,adamw seed=0,1,2

Compose (Hydra) -> check and instantiate -> train -> save. See README.md.
"""

import logging
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from optqual.system.allocator import keep_freed_memory
from optqual.engine.checkpoint import save_training_state, starting_point
from optqual.config import ConfigError, check_config, register_schemas, resolve_device
from optqual.data import ImageData
from optqual.system.reproducibility import data_generator, make_deterministic
from optqual.system.resources import jobs_at_once, share_machine
from optqual.runs.rundir import RunRecorder, claim, discard_unstarted, save_model, save_split
from optqual.system.signals import stop_on_signals
from optqual.runs.sweep import register_resolvers
from optqual.runs.tracking import trackio_run
from optqual.engine.loop import EVAL_BATCH_SIZE, EpochProgress, evaluate, fit

register_schemas()
register_resolvers()
log = logging.getLogger("optqual")


def build(cfg: DictConfig, key: str, **kwargs):
    """hydra.utils.instantiate on cfg[key], with a failure reported as that key's config error."""
    try:
        return instantiate(cfg[key], _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        raise (cause if isinstance(cause, ConfigError) else ConfigError(f"{key}: {cause or err}")) from err


def prepare(cfg: DictConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer, ImageData, torch.device]:
    """Everything that can reject the config, in the order that keeps runs reproducible."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    # CPU kernels split their sums by thread, so the thread count is part of the result
    share_machine(cfg.threads, jobs_at_once(HydraConfig.get()), device)
    keep_freed_memory()  # a CPU step otherwise page-faults its activations back in every time
    make_deterministic(cfg.seed)
    model = build(cfg, "model")  # first draw from the seeded generator: the initial weights
    model.to(device, memory_format=torch.channels_last)  # the layout convolutions run fastest in
    if cfg.compile:
        model.compile()  # in place: state_dict keys stay those of the plain model
    try:
        optimizer = build(cfg, "optimizer")(model.parameters())
    except ValueError as err:  # torch's own range checks (betas, momentum, eps, ...)
        raise ConfigError(f"optimizer: {err}") from err
    data = build(cfg, "data", device=device)
    top_label = int(max(data.train_labels.max(), data.test_labels.max()))
    if top_label >= cfg.model.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes}: the data has labels up to {top_label}")
    return model, optimizer, data, device


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    optimizer_name = hydra_cfg.runtime.choices.optimizer
    started = time.perf_counter()
    try:
        model, optimizer, data, device = prepare(cfg)
    except ConfigError as err:
        discard_unstarted(run_dir)  # nothing here that could pass for a run
        sys.exit(f"optqual: error: {err}")
    try:
        claim(run_dir)  # one process per run directory: `resume` of a sweep that still runs must not race it
        generator = data_generator(cfg.seed, device)
        start = starting_point(run_dir, cfg, model, optimizer, generator)  # from checkpoint.pt when run_dir holds one
    except ConfigError as err:
        sys.exit(f"optqual: error: {err}")

    save_split(run_dir, data.train_indices, data.val_indices)
    recorder = RunRecorder(run_dir, {
        "seed": cfg.seed,
        "optimizer": optimizer_name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": cfg.precision,
        "compile": cfg.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "train_images": len(data.train_labels),
    }, started - start.wall_seconds, start.history)
    log.info("run directory %s (%s, %d parameters, %d train images)", run_dir, device, recorder.facts["params"], len(data.train_labels))
    if start.from_checkpoint:
        log.info("resuming from checkpoint.pt at epoch %d, step %d", start.first_epoch, start.progress.step if start.progress else 0)
    checkpoint_seconds = []

    def checkpoint(progress: EpochProgress | None) -> None:
        tic = time.perf_counter()
        save_training_state(run_dir, cfg, model, optimizer, generator, recorder.history, progress, recorder.wall_seconds())
        checkpoint_seconds.append(time.perf_counter() - tic)

    try:
        with trackio_run(cfg, group=optimizer_name, run_dir=run_dir, resume=start.from_checkpoint) as track, stop_on_signals() as stop:
            def on_epoch(record: dict) -> None:
                recorder.add_epoch(record)
                track(record)

            status = fit(model, optimizer, data, generator, cfg.epochs, cfg.eval_every, on_epoch, checkpoint, cfg.checkpoint_every,
                         stop, cfg.precision, start.first_epoch, start.progress)
            if status == "completed":
                test = evaluate(model, data.eval_batches("test", EVAL_BATCH_SIZE), cfg.precision)
                track({"epoch": cfg.epochs, "test_loss": test["loss"], "test_acc": test["acc"]})
    except BaseException as err:
        recorder.write_metrics("interrupted" if isinstance(err, KeyboardInterrupt) else "failed", error=repr(err))
        raise
    timing = {"checkpoints": len(checkpoint_seconds), "checkpoint_seconds": sum(checkpoint_seconds)}
    if status == "interrupted":  # checkpointed at the step boundary; exit like the signal would
        log.warning("stopped by %s; checkpoint written. Continue with: python -m optqual resume %s", stop.name, run_dir)
        recorder.write_metrics("interrupted", error=f"stopped by {stop.name}; continue with: python -m optqual resume {run_dir}", **timing)
        sys.exit(128 + stop.signum)
    if status == "diverged":  # a result, not a crash: a sweep goes on
        recorder.write_metrics("diverged", diverged_epoch=len(recorder.history), **timing)
        log.warning("diverged in epoch %d -> %s", len(recorder.history), run_dir)
        return
    save_model(run_dir, model)
    metrics = recorder.write_metrics("completed", test_loss=test["loss"], test_acc=test["acc"], **timing)
    log.info("test_acc %.4f  val_acc %.4f  train_loss %.4f  -> %s", metrics["test_acc"], metrics["val_acc"], metrics["train_loss"], run_dir)


if __name__ == "__main__":
    main()
