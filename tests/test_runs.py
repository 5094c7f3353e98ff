"""launch.py end to end, as a user runs it: what a run leaves, repeats, sweeps, diffs, bad input."""

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import HEAD_NPZ, REPO, cli, launch_here, launch_ok, launched, tiny_overrides
from optqual.components.registry import components as registered
from optqual.models.cifar_resnet import CifarResNet

METRIC_KEYS = {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epochs", "train_seconds",
               "train_images_per_s", "wall_seconds", "params", "seed", "optimizer", "device", "threads", "precision", "compile", "peak_rss_mb", "peak_gpu_mb",
               "versions", "checkpoints", "checkpoint_seconds", "status"}


def history_without_timing(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as file:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(file)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "final_model.pt", weights_only=True)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, tiny_npz) -> dict[str, Path]:
    """SGD seed 3 twice in separate directories, and AdamW seed 3 in the default directory."""
    work = tmp_path_factory.mktemp("runs")
    base = tiny_overrides(tiny_npz)
    launch_ok(work, *base, "seed=3", "hydra.run.dir=sgd_a")
    launch_ok(work, *base, "seed=3", "hydra.run.dir=sgd_b")
    launch_ok(work, *base, "seed=3", "optimizer=adamw")
    (adamw,) = (work / "outputs" / "runs").glob("*/*")
    return {"work": work, "sgd_a": work / "sgd_a", "sgd_b": work / "sgd_b", "adamw": adamw}


@pytest.mark.slow
def test_same_seed_repeats_bit_for_bit(runs):
    assert history_without_timing(runs["sgd_a"]) == history_without_timing(runs["sgd_b"])
    a, b = weights(runs["sgd_a"]), weights(runs["sgd_b"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_thread_count_is_pinned_by_config_and_recorded(tmp_path, tiny_npz):
    """CPU kernels split reductions by thread, so the count is part of a run's identity."""
    for name in ("one_a", "one_b"):
        launched(tmp_path, *tiny_overrides(tiny_npz), "threads=1", f"hydra.run.dir={name}", "trackio.enabled=false")
    assert json.loads((tmp_path / "one_a" / "metrics.json").read_text())["threads"] == 1
    a, b = weights(tmp_path / "one_a"), weights(tmp_path / "one_b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("option", ["precision=bf16", "compile=true"])
def test_speed_options_repeat_bit_for_bit(tmp_path, tiny_npz, runs, option):
    for name in ("a", "b"):
        launch_ok(tmp_path, *tiny_overrides(tiny_npz), "seed=3", option, f"hydra.run.dir={name}", "trackio.enabled=false")
    assert history_without_timing(tmp_path / "a") == history_without_timing(tmp_path / "b")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == weights(runs["sgd_a"]).keys()  # a compiled model saves the plain model's keys
    assert all(torch.equal(a[k], b[k]) for k in a)
    if option == "precision=bf16":  # bf16 really changes the arithmetic
        assert not all(torch.equal(a[k], v) for k, v in weights(runs["sgd_a"]).items())
    if option == "compile=true":  # a fixed few, not one per batch size: training, its last batch (then dynamic), evaluation
        assert json.loads((tmp_path / "a" / "metrics.json").read_text())["compiled_graphs"] <= 4


@pytest.mark.slow
def test_sampled_grad_norms_change_the_norms_and_nothing_else(tmp_path, tiny_npz, runs):
    launch_ok(tmp_path, *tiny_overrides(tiny_npz), "seed=3", "grad_norm_every=2", "hydra.run.dir=sampled", "trackio.enabled=false")
    exact, sampled = history_without_timing(runs["sgd_a"]), history_without_timing(tmp_path / "sampled")
    norms = [key for key in exact[0] if key.startswith("grad_norm.")]
    assert [{k: v for k, v in row.items() if k not in norms} for row in exact] == [{k: v for k, v in row.items() if k not in norms} for row in sampled]
    assert all(exact_row[k] != sampled_row[k] for exact_row, sampled_row in zip(exact, sampled) for k in norms)
    a, b = weights(runs["sgd_a"]), weights(tmp_path / "sampled")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_auto_grad_norms_sample_a_fully_connected_model_and_take_every_step_of_a_conv_net(tmp_path, tiny_npz, runs):
    """grad_norm_every=auto (the default) is every step for ResNet-8 and every 8th for the MLP, whose
    step is too small to hide the norms' pass: the same run as grad_norm_every=8, and recorded."""
    assert json.loads((runs["sgd_a"] / "metrics.json").read_text())["grad_norm_every"] == 1
    mlp = [*tiny_overrides(tiny_npz), "model=mlp", "model.hidden=[16]", "data.batch_size=8", "seed=3", "trackio.enabled=false"]
    for every in ("auto", "8", "1"):  # 23 steps an epoch: auto samples steps 0, 8 and 16
        launched(tmp_path, *mlp, f"grad_norm_every={every}", f"hydra.run.dir={every}")
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["grad_norm_every"] == 8
    auto, sampled, exact = (history_without_timing(tmp_path / every) for every in ("auto", "8", "1"))
    assert auto == sampled
    assert all(auto_row[k] != exact_row[k] for auto_row, exact_row in zip(auto, exact) for k in auto_row if k.startswith("grad_norm."))
    a, b = weights(tmp_path / "auto"), weights(tmp_path / "1")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sgd_and_adamw_find_different_solutions(runs):
    a, c = weights(runs["sgd_a"]), weights(runs["adamw"])
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert history_without_timing(runs["sgd_a"]) != history_without_timing(runs["adamw"])


@pytest.mark.slow
def test_single_run_directory_is_named_by_date_time_experiment_optimizer_seed(runs):
    relative = runs["adamw"].relative_to(runs["work"])
    assert re.fullmatch(r"outputs/runs/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}_resnet8_npz_adamw_seed3", relative.as_posix())


@pytest.mark.slow
def test_run_directory_holds_everything(runs, tiny_npz):
    run = runs["adamw"]
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "history.csv", "metrics.json", "final_model.pt", "split_indices.npz", "checkpoint.pt"):
        assert (run / name).is_file(), name
    config = OmegaConf.load(run / ".hydra/config.yaml")
    assert config.optimizer._target_ == "torch.optim.AdamW" and config.seed == 3

    with open(run / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds", "grad_norm.stem.conv", "grad_norm.fc"} <= rows[0].keys()
    assert all(float(r["grad_norm.fc"]) > 0 for r in rows)

    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["optimizer"] == "adamw"
    assert metrics["peak_rss_mb"] > 100 and metrics["precision"] == "fp32" and metrics["compile"] is False
    assert (metrics["peak_gpu_mb"] is None) == (metrics["device"] == "cpu")
    assert metrics["params"] == 78_042 and metrics["seed"] == 3 and metrics["versions"]["torch"] == torch.__version__.split("+")[0]
    assert 0 <= metrics["test_acc"] <= 1 and metrics["val_acc"] == pytest.approx(float(rows[-1]["val_acc"]))

    model = CifarResNet()
    model.load_state_dict(weights(run))

    split = np.load(run / "split_indices.npz")
    assert len(split["train"]) == 180 and len(split["val"]) == 20
    assert len(np.intersect1d(split["train"], split["val"])) == 0


def test_validation_runs_every_n_epochs_and_at_the_end(tmp_path, tiny_npz):
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=5", "eval_every=2", "hydra.run.dir=run", "trackio.enabled=false")
    with open(tmp_path / "run" / "history.csv") as file:
        validated = [int(r["epoch"]) for r in csv.DictReader(file) if r["val_acc"]]
    assert validated == [2, 4, 5]


@pytest.mark.slow
def test_trackio_gets_every_epoch_offline(runs):
    database = runs["work"] / "outputs" / "trackio" / "resnet8_npz.db"
    with sqlite3.connect(database) as db:
        rows = db.execute("select run_name, step, metrics from metrics order by id").fetchall()
    time, _, what = runs["adamw"].name.partition("_resnet8_npz_")  # its directory: <time>_<model>_<data>_<optimizer>_seed<seed>
    name = f"{what} @ {runs['adamw'].parent.name}/{time}"  # what varies first
    assert what == "adamw_seed3"
    adamw = [(step, json.loads(metrics)) for run_name, step, metrics in rows if run_name == name]
    assert [step for step, _ in adamw] == [1, 2, 2]  # two epochs, then the test metrics
    assert "loss/train" in adamw[0][1] and "per_layer_grad_norm/fc" in adamw[0][1] and "accuracy/test" in adamw[-1][1]
    check = (f"import trackio; r = [r for r in trackio.Api().runs('resnet8_npz') if r.name == '{name}'][0];"
             "print(r.config['optimizer'], r.config['optimizer._target_'], r.config['seed'], r.config['sweep'])")
    env = {**os.environ, "TRACKIO_DIR": str(database.parent)}
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-4:] == ["adamw", "torch.optim.AdamW", "3", "None"]


@pytest.mark.slow
def test_ctrl_c_keeps_the_history_checkpoints_and_finishes_trackio(tmp_path, tiny_npz):
    """Ctrl-C mid-training: the epochs done stay on disk, metrics.json says so, Trackio is closed."""
    command = [sys.executable, str(REPO / "launch.py"), *tiny_overrides(tiny_npz), "epochs=1000", "hydra.run.dir=run"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history = tmp_path / "run" / "history.csv"
    deadline = time.monotonic() + 120
    while not (history.is_file() and len(history.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "stopped by SIGINT; checkpoint written" in (tmp_path / "run" / "launch.log").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "SIGINT" in metrics["error"]
    epochs_done = len(history.read_text().splitlines()) - 1
    assert 2 <= metrics["epochs"] == epochs_done < 1000
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "final_model.pt").exists()
    with sqlite3.connect(tmp_path / "outputs" / "trackio" / "resnet8_npz.db") as db:
        logged = db.execute("select count(*) from metrics").fetchone()[0]
    assert logged == epochs_done


def run_diff(*args: str) -> subprocess.CompletedProcess:
    return cli("diff", *args)


@pytest.mark.slow
def test_diff_reports_exactly_the_changed_keys(runs, tmp_path):
    assert run_diff(str(runs["sgd_a"]), str(runs["sgd_b"])).stdout == "identical\n"

    changed = tmp_path / "changed"  # a run of sgd_a's with two settings changed
    shutil.copytree(runs["sgd_a"] / ".hydra", changed / ".hydra")
    config = OmegaConf.load(runs["sgd_a"] / "resolved_config.yaml")  # what the run was built with
    config.optimizer.lr, config.model.widths = 0.05, [16, 32, 128]
    OmegaConf.save(config, changed / "resolved_config.yaml")
    OmegaConf.save(["optimizer.lr=0.05", "model.widths=[16,32,128]"], changed / ".hydra" / "overrides.yaml")
    result = run_diff(str(runs["sgd_a"]), str(changed))
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["model.widths", "optimizer.lr"]
    assert lines[3] == "" and "0.1 -> 0.05" in lines[2] and "[16, 32, 64] -> [16, 32, 128]" in lines[1]
    assert "overrides: optimizer.lr=0.05 model.widths=[16,32,128]" in result.stdout

    optimizers = run_diff(str(runs["sgd_a"]), str(runs["adamw"])).stdout.split("\n\n")[0].splitlines()[1:]
    assert {line.split()[0] for line in optimizers} == {
        "optimizer._target_", "optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "optimizer.dampening",
        "optimizer.nesterov", "optimizer.betas", "optimizer.eps", "optimizer.amsgrad"}


@pytest.mark.slow
def test_diff_refuses_a_directory_that_is_not_a_run(runs, tmp_path):
    result = run_diff(str(runs["sgd_a"]), str(tmp_path))
    assert result.returncode == 2 and "is not a run directory" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer=adamx"], "optqual: error: optimizer=adamx: no such option (did you mean optimizer=adam?); the options of "
                              "optimizer: adam, adamw, lion, muon, nesterov, rmsprop, sam, sgd"),
        (["epochs=abc"], "optqual: error: epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        (["optimizer.lr=-0.1"], "optqual: error: optimizer.lr=-0.1: must lie in (0, inf)"),
        (["epochs=0"], "optqual: error: epochs=0: must lie in [1, inf)"),
        (["data.batch_size=0"], "optqual: error: data.batch_size=0: must lie in [1, inf)"),
        (["data.val_fraction=1.5"], "optqual: error: data.val_fraction=1.5: must lie in (0, 1)"),
        (["device=gpu"], "optqual: error: device=gpu: unknown device"),
        (["threads=0"], "optqual: error: threads=0: must lie in [1, inf)"),
        (["precision=fp8"], "optqual: error: precision=fp8: must be one of fp32, tf32, bf16, fp16"),
        (["data=npz", "data.path=missing.npz"], "optqual: error: data.path=missing.npz: no such file"),
        (["data=npz"], "optqual: error: data.path is required"),
        (["data.root=nothing_here", "data.download=false"], "optqual: error: data.root=nothing_here: CIFAR-10 not found"),
        (["optimizer=adamw", "optimizer.betas=[1.5,0.9]"], "optqual: error: optimizer.betas=[1.5, 0.9]: each must lie in [0, 1)"),
        (["scheduler=cosine", "scheduler.warmup_epochs=300"], "optqual: error: scheduler.warmup_epochs=300.0: must be shorter than the run"),
        (["early_stopping.monitor=val_f1"], "optqual: error: early_stopping.monitor=val_f1: no such validation metric"),
        (["optimizer=sam", "optimizer@optimizer.base=adamx"], "optqual: error: optimizer@optimizer.base=adamx: no such option (did you mean optimizer@optimizer.base=adam?)"),
        (["optimizer=sam", "optimizer@optimizer.base=sam"], "optqual: error: optimizer.base=sam: SAM needs a base optimizer to wrap, not SAM"),
        (["scheduler=plateau", "eval_every=null"], "optqual: error: scheduler=plateau: steps on a validation metric, but validation is off"),
        (["clip_grad_norm=-0.5"], "optqual: error: clip_grad_norm=-0.5: must lie in (0, inf)"),
        (["seed=-1"], "optqual: error: seed=-1: must lie in [0, 4294967296)"),
        (["experiment_name=a/b"], "optqual: error: experiment_name=a/b: must not hold '/' or '\\': it names the sweep directory"),
        (["seed=4294967296"], "optqual: error: seed=4294967296: must lie in [0, 4294967296)"),
        (["+optimizer.foo=1"], "optqual: error: optimizer.foo=1: the run has no key optimizer.foo;"),
        (["+model.foo=1"], "optqual: error: model.foo=1: the run has no key model.foo;"),  # before the data loads
        (["lr_scale=0"], "optqual: error: lr_scale=0.0: must lie in (0, inf)"),
        (["scheduler=cosine", "+scheduler.bogus=2"], "optqual: error: scheduler.bogus=2: the run has no key scheduler.bogus;"),
        (["data=npz", "data.path=/my", "data/x.npz"], "optqual: error: 'data/x.npz' is not an override (KEY=VALUE): a value with a "
                                                      "space needs quotes, e.g. data.path='/my data/x.npz'"),
        (["-m", "seed=range(3,3)"], "optqual: error: seed=range(3,3) gives the sweep no job"),
        (["-m", "optimizer=glob(zzz*)"], "optqual: error: optimizer=glob(zzz*) gives the sweep no job"),
    ],
)
def test_bad_input_fails_cleanly_before_any_work(tmp_path, overrides, message):
    result = launch_here(tmp_path, *overrides, "trackio.enabled=false")
    assert result.returncode != 0
    first_line = result.stderr.strip().splitlines()[0]
    assert message in first_line, result.stderr
    if message.startswith("optqual: error:"):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(tmp_path.iterdir()), "a rejected run left something behind (files, or the folders made for it)"


@pytest.mark.parametrize("overrides, message", [
    (["hydra.run.dir=blocker/run"], "hydra.run.dir=blocker/run: cannot write there: Not a directory (blocker)"),
    (["hydra.run.dir=/proc/optqual_run"], "hydra.run.dir=/proc/optqual_run: cannot write there: No such file or directory (/proc)"),
    (["hydra.run.dir=blocker"], "hydra.run.dir=blocker: cannot write there: Not a directory"),
    (["trackio.enabled=true", "trackio.dir=blocker/trackio"], "trackio.dir=blocker/trackio: cannot write there: Not a directory (blocker)"),
    (["-m", "seed=0,1", "hydra.sweep.dir=blocker/sweep"], "hydra.sweep.dir=blocker/sweep: cannot write there: Not a directory (blocker)"),
    (["-m", "seed=0,1", "trackio.enabled=true", "trackio.dir=blocker/t"], "trackio.dir=blocker/t: cannot write there: Not a directory (blocker)"),
])
def test_an_output_location_that_cannot_be_written_is_one_line_before_any_work(tmp_path, tiny_npz, overrides, message):
    """A file where a directory must go stands for every unwritable place (root writes through permissions)."""
    (tmp_path / "blocker").write_text("a file, not a directory")
    result = launch_here(tmp_path, *overrides, *tiny_overrides(tiny_npz))
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("optqual: error: job #0 (" if "-m" in overrides and "trackio.dir" in message else "optqual: error: ")
    assert line.endswith(message), line
    assert [p.name for p in tmp_path.rglob("*")] == ["blocker"], "nothing may be written"


def test_a_run_whose_directory_name_is_taken_gets_the_next_one(tmp_path, tiny_npz):
    """The name is claimed when the run starts (the callback), with an atomic mkdir: never a shared directory."""
    (tmp_path / "run").mkdir()
    launched(tmp_path, *tiny_overrides(tiny_npz), "epochs=1", "hydra.run.dir=${optqual_fresh_dir:run}", "trackio.enabled=false")
    assert (tmp_path / "run_2" / "metrics.json").is_file() and not list((tmp_path / "run").iterdir())


def test_a_working_directory_without_room_for_outputs_is_one_line(tmp_path, tiny_npz):
    (tmp_path / "outputs").write_text("a file where outputs/ would go")
    result = launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("optqual: error: hydra.run.dir=outputs/runs/") and line.endswith("cannot write there: Not a directory (outputs)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_working_directory_is_one_line(tmp_path, tiny_npz):
    tmp_path.chmod(0o555)
    try:
        result = launch_here(tmp_path, *tiny_overrides(tiny_npz), "trackio.enabled=false")
    finally:
        tmp_path.chmod(0o755)
    assert result.returncode == 1 and "cannot write there: Permission denied" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_help_lists_the_groups_a_run_composes_and_cfg_resolve_writes_nothing(tmp_path):
    result = launch_here(tmp_path, "--help")
    groups, components = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0].split("== Components ==")
    listed = [line.split(":")[0] for line in groups.splitlines() if ": " in line]
    assert listed == ["optimizer", "model", "data", "loss", "experiment"]  # no schema/..., no hydra/..., no analysis
    assert "optimizer: adam, adamw, lion, muon, nesterov, rmsprop, sam, sgd" in groups
    named = [line.split(":")[0] for line in components.splitlines() if line and not line.startswith(" ") and ": " in line]
    assert named == [component.name for component in registered()]  # in the order they are called
    assert "    regularizer/schedule: constant, cosine_anneal, linear_warmup" in components
    assert "scheduler: cosine, multistep, none, onecycle, plateau, step (default none)  [after_step, on_epoch_end]" in components

    shown = launch_here(tmp_path, "optimizer=adamw", "seed=3", "--cfg", "hydra", "--resolve")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert re.search(r"dir: outputs/runs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d_resnet8_cifar10_adamw_seedunset", shown.stdout)  # `--cfg hydra` has no seed
    assert not list(tmp_path.iterdir()), "showing the config writes nothing"


@pytest.mark.slow
@pytest.mark.skipif(not HEAD_NPZ.is_file(), reason=f"real CIFAR-10 images not found at {HEAD_NPZ}")
def test_sgd_learns_real_cifar10_images(tmp_path):
    """5085 real training images, 1017 real test images: well above the 10% of chance."""
    launched(tmp_path, "data=npz", f"data.path={HEAD_NPZ}", "epochs=6", "hydra.run.dir=run", "trackio.enabled=false")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.35, metrics


@pytest.mark.parametrize("option, message", [
    ("lr: abc", "optqual: error: optimizer: "),
    ("lr: 0.1\nmomentum: fast", "optqual: error: optimizer: "),
])
def test_an_option_without_a_schema_is_still_checked_in_one_line(tmp_path, option, message):
    """The README invites new options; one without a schema and with a value of the wrong type
    is refused by the range checks or by its constructor, in one line, before any work."""
    extra = tmp_path / "extra" / "optimizer"
    extra.mkdir(parents=True)
    (extra / "custom.yaml").write_text(f"_target_: torch.optim.SGD\n_partial_: true\n{option}\n")
    result = launch_here(tmp_path, f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "optimizer=custom", "trackio.enabled=false")
    assert result.returncode != 0 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "extra" not in p.parts]


@pytest.mark.slow
def test_a_run_records_its_hardware_and_diff_shows_a_difference(runs, tmp_path):
    """The same command on another x86 CPU model gives other numbers: the run directory says which made it."""
    recorded = json.loads((runs["sgd_a"] / "metrics.json").read_text())["hardware"]
    assert recorded["cpu"] and recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert recorded["onednn"] and recorded["mkl"] and set(recorded["cpu_isa"]) <= {
        "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_fp16"}
    other = tmp_path / "other"
    (other / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml"):
        (other / ".hydra" / name).write_text((runs["sgd_a"] / ".hydra" / name).read_text())
    metrics = json.loads((runs["sgd_a"] / "metrics.json").read_text())
    metrics["hardware"] = {**recorded, "cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_isa": [*recorded["cpu_isa"], "amx_tile"]}
    (other / "metrics.json").write_text(json.dumps(metrics))
    lines = run_diff(str(runs["sgd_a"]), str(other)).stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["hardware.cpu", "hardware.cpu_isa"]
    assert "-> 'Intel(R) Xeon(R) Platinum 8480+'" in lines[1]


def test_a_tools_options_and_overrides_come_in_any_order(tmp_path):
    """`analyze DIR --force probe_size=512` is `analyze DIR probe_size=512 --force`; an unknown option is still refused."""
    for order in (["--force", "probe_size=8"], ["probe_size=8", "--force"]):
        result = cli("analyze", str(tmp_path), *order)
        assert result.returncode == 2 and result.stderr.startswith(f"optqual analyze: error: {tmp_path} is neither a sweep directory")
    refused = cli("analyze", str(tmp_path), "probe_size=8", "--forse")
    assert refused.returncode == 2 and "unrecognized arguments: --forse" in refused.stderr
