"""Fair comparisons: each group's tuned value selected on validation, groups compared with Welch's t-test."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from conftest import cli, launch_here, tiny_overrides
from optqual.tools.significance import compare, seeds_needed
from optqual.tools.summary import write_summary

# (optimizer, lr) -> per seed (val_acc, test_acc): validation prefers sgd lr=0.1, test would prefer lr=1.0;
# adamw's validation best is its largest lr (the edge of its grid)
RESULTS = {
    ("sgd", "0.01"): [(0.50, 0.50), (0.52, 0.51)],
    ("sgd", "0.1"): [(0.70, 0.60), (0.72, 0.62)],
    ("sgd", "1.0"): [(0.60, 0.75), (0.61, 0.76)],
    ("adamw", "0.0001"): [(0.40, 0.40), (0.42, 0.41)],
    ("adamw", "0.001"): [(0.55, 0.55), (0.57, 0.56)],
    ("adamw", "0.01"): [(0.65, 0.50), (0.66, 0.52)],
}


def fake_sweep(directory: Path, pending: tuple[str, str, int] | None = None, results: dict = RESULTS) -> Path:
    """A sweep directory of finished jobs with these results (one left pending, if asked)."""
    directory.mkdir(exist_ok=True)
    OmegaConf.save({"hydra": {"overrides": {"task": ["optimizer=sgd,adamw", "optimizer.lr=...", "seed=0,1"]}}}, directory / "multirun.yaml")
    for (optimizer, lr), seeds in results.items():
        for seed, (val_acc, test_acc) in enumerate(seeds):
            if pending == (optimizer, lr, seed):
                continue
            job = directory / f"optimizer={optimizer},optimizer.lr={lr},seed={seed}"
            (job / ".hydra").mkdir(parents=True)
            overrides = [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}"]
            OmegaConf.save({"optimizer": {"lr": float(lr)}, "seed": seed}, job / ".hydra" / "config.yaml")
            OmegaConf.save(overrides, job / ".hydra" / "overrides.yaml")
            (job / "metrics.json").write_text(json.dumps({"status": "completed", "epochs": 3, "val_acc": val_acc, "test_acc": test_acc,
                                                          "train_loss": 1.0 - val_acc, "wall_seconds": 1.0}))
    return directory


def test_the_tuned_value_is_selected_on_validation_never_on_test(tmp_path):
    summary = write_summary(fake_sweep(tmp_path), tune=["optimizer.lr"])
    selected = {group.label: group.selected for group in summary.groups}
    assert selected == {"optimizer=sgd": "optimizer.lr=0.1", "optimizer=adamw": "optimizer.lr=0.01"}
    sgd = next(group for group in summary.groups if group.label == "optimizer=sgd")
    assert sgd.stats("test_acc").mean == pytest.approx(0.61)  # the selected setting's test accuracy, not the best test
    text = (tmp_path / "summary.md").read_text()
    assert "optimizer=adamw: the selected optimizer.lr=0.01 is the largest value tried, so the tuning is incomplete" in text
    assert "optimizer=sgd: the selected" not in text  # sgd's choice lies inside its grid
    assert (tmp_path / "sensitivity.png").stat().st_size > 10_000
    with open(tmp_path / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert {row["job"] for row in rows if row["selected"] == "True"} == {
        "optimizer=sgd,optimizer.lr=0.1,seed=0", "optimizer=sgd,optimizer.lr=0.1,seed=1",
        "optimizer=adamw,optimizer.lr=0.01,seed=0", "optimizer=adamw,optimizer.lr=0.01,seed=1"}


def test_curves_show_each_groups_selected_setting_and_nothing_else(tmp_path):
    """curves.png says "mean over seeds": its numbers (curves.csv) are those of the selected
    setting's seeds, not an average over every learning rate tried."""
    fake_sweep(tmp_path)
    for job in tmp_path.glob("optimizer=*"):
        lr, seed = float(job.name.split("optimizer.lr=")[1].split(",")[0]), int(job.name[-1])
        (job / "history.csv").write_text("epoch,train_loss,val_acc\n" + "".join(f"{e},{lr * 10 + seed + e},{lr + seed}\n" for e in (1, 2)))
    write_summary(tmp_path, tune=["optimizer.lr"])
    with open(tmp_path / "curves.csv") as file:
        rows = list(csv.DictReader(file))
    assert {row["curve"] for row in rows} == {"optimizer=sgd, selected optimizer.lr=0.1", "optimizer=adamw, selected optimizer.lr=0.01"}
    sgd = [row for row in rows if row["curve"].startswith("optimizer=sgd") and row["column"] == "train_loss"]
    assert sgd[0]["runs"] == "optimizer=sgd,optimizer.lr=0.1,seed=0;optimizer=sgd,optimizer.lr=0.1,seed=1"
    assert [(float(r["epoch"]), int(r["n"]), float(r["mean"]), float(r["min"]), float(r["max"])) for r in sgd] == [
        (1.0, 2, 2.5, 2.0, 3.0), (2.0, 2, 3.5, 3.0, 4.0)]  # lr 0.1: 1 + seed + epoch over seeds 0 and 1


def test_a_partial_tuned_sweep_is_summarised_as_partial(tmp_path):
    (tmp_path / "jobs.yaml").write_text(OmegaConf.to_yaml([[f"optimizer={o}", f"optimizer.lr={lr}", f"seed={s}"]
                                                            for (o, lr) in RESULTS for s in (0, 1)]))
    fake_sweep(tmp_path, pending=("sgd", "0.1", 1))
    summary = write_summary(tmp_path, tune=["optimizer.lr"])
    sgd = next(group for group in summary.groups if group.label == "optimizer=sgd")
    assert sgd.selected == "optimizer.lr=0.1" and len(sgd.completed) == 1
    assert "12 jobs: 11 completed, 1 pending (partial: the sweep is not finished)" in (tmp_path / "summary.md").read_text()


def test_welch_interval_and_p_value_match_the_textbook_formula():
    a, b = [0.61, 0.64, 0.60, 0.66], [0.55, 0.58, 0.57]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    d, se = np.mean(a) - np.mean(b), math.sqrt(va + vb)
    half = stats.t.ppf(0.975, df) * se
    result = compare(a, b)
    assert result.mean == pytest.approx(d)
    assert (result.low, result.high) == pytest.approx((d - half, d + half))
    assert result.p == pytest.approx(2 * stats.t.sf(abs(d) / se, df))


@pytest.mark.parametrize("effect, n", [(0.5, 64), (0.8, 26), (1.0, 17)])
def test_seeds_needed_matches_cohens_table(effect, n):
    """Cohen (1988), two-sided t-test at 5% with 80% power: 64, 26 and 17 per group for d = 0.5, 0.8, 1."""
    assert seeds_needed(effect, 1.0, 1.0) == n


@pytest.mark.parametrize("difference, std_a, std_b", [(0.3, 1.0, 1.0), (0.02, 0.02, 0.01), (1.0, 0.0, 0.7), (0.01, 0.03, 0.002),
                                                     (-2.5, 1.0, 3.0), (0.004, 0.01, 0.01)])
def test_seeds_needed_is_the_first_count_whose_power_suffices(difference, std_a, std_b):
    """Against the definition scanned over every count, the power computed from the noncentral t."""
    variance = std_a**2 + std_b**2
    df_per_seed = variance**2 / (std_a**4 + std_b**4)

    def power(n):  # Welch's test at n seeds per group, by the noncentral t (normal-theory power)
        df, shift = (n - 1) * df_per_seed, abs(difference) / math.sqrt(variance / n)
        return stats.nct.sf(stats.t.ppf(0.975, df), df, shift)

    first = next(n for n in range(2, 100_000) if stats.t.ppf(0.975, (n - 1) * df_per_seed) + stats.t.ppf(0.8, (n - 1) * df_per_seed)
                 <= abs(difference) / math.sqrt(variance / n))
    assert seeds_needed(difference, std_a, std_b) == first
    assert power(first) == pytest.approx(0.8, abs=0.03)  # the textbook approximation: 80% power within a few points


def test_a_difference_far_below_the_spread_needs_many_seeds_and_is_not_called_zero():
    needed = seeds_needed(1e-4, 0.01, 0.01)  # the old scan stopped at 100,000 and the summary said "the difference is zero"
    assert needed == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 * 2e-4 / 1e-8, rel=1e-3)


def test_the_verdict_gives_the_interval_and_the_seeds_a_difference_needs(tmp_path):
    write_summary(fake_sweep(tmp_path / "clear"), tune=["optimizer.lr"])
    clear = (tmp_path / "clear" / "summary.md").read_text()
    assert ("**optimizer=sgd** leads **optimizer=adamw** by 10.00 points of mean test accuracy at their selected settings "
            "(n=2 vs n=2). Welch's t-test over seeds: the difference is 10.00 points, 95% confidence interval [3.92, 16.08], "
            "p = 0.019. More than seed noise at the 5% level. With 2 seeds per group it rests on few runs") in clear
    close = {("sgd", "0.1"): [(0.7, 0.60), (0.7, 0.64), (0.7, 0.62)], ("adamw", "0.001"): [(0.6, 0.61), (0.6, 0.59), (0.6, 0.60)]}
    write_summary(fake_sweep(tmp_path / "close", results=close), tune=[])
    needed = seeds_needed(0.02, float(np.std([0.60, 0.64, 0.62], ddof=1)), float(np.std([0.61, 0.59, 0.60], ddof=1)))
    assert (f"Not resolved with 3 seeds per group: at the observed spread, about {needed} seeds per group would resolve a "
            "difference this size (80% power, 5% level).") in (tmp_path / "close" / "summary.md").read_text()


@pytest.mark.parametrize("tune, message", [
    ("optimizer.momentum", "--tune optimizer.momentum: it does not vary across the jobs (keys that do: optimizer, optimizer.lr, seed)"),
    ("seed", None),  # seed varies: allowed, but then nothing is averaged; still one group per optimizer
])
def test_tune_on_a_key_that_does_not_vary_is_one_line(tmp_path, tune, message):
    fake_sweep(tmp_path)
    result = cli("summarize", str(tmp_path), "--tune", tune)
    if message is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"optqual summarize: error: {message}"]


@pytest.mark.slow
def test_a_sweep_asks_for_its_own_tuned_summary_and_checks_it_first(tmp_path, tiny_npz):
    refused = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), "seed=0,1", "summary.tune=[optimizer.lr]", "trackio.enabled=false")
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "optqual: error: summary.tune: optimizer.lr does not vary across the sweep's jobs, so nothing selects it")
    assert not list(tmp_path.iterdir())
    result = launch_here(tmp_path, "-m", *tiny_overrides(tiny_npz), "epochs=1", "optimizer.lr=0.05,0.1", "seed=0,1",
                         "summary.tune=[optimizer.lr]", "hydra.sweep.dir=sweep", "trackio.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Tuned: optimizer.lr, selected per group by the mean val_acc over seeds" in result.stdout
    assert (tmp_path / "sweep" / "sensitivity.png").is_file()


@pytest.mark.slow
def test_the_compare_optimizers_preset_tunes_each_optimizers_own_grid(tmp_path, tiny_npz):
    """lr_scale multiplies each option's own lr: one Cartesian sweep holds SGD's grid around 0.1 and AdamW's around 1e-3."""
    result = launch_here(tmp_path, "-m", "experiment=compare_optimizers", *tiny_overrides(tiny_npz), "epochs=1",
                         "lr_scale=0.1,1", "seed=0", "hydra.sweep.dir=sweep", "trackio.enabled=false")  # the command line overrides the grid
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    lrs = {job.name: json.loads((job / "metrics.json").read_text()) for job in sweep.iterdir() if (job / "metrics.json").is_file()}
    assert sorted(lrs) == ["lr_scale=0.1,optimizer=adamw,seed=0", "lr_scale=0.1,optimizer=sgd,seed=0",
                           "lr_scale=1,optimizer=adamw,seed=0", "lr_scale=1,optimizer=sgd,seed=0"]
    with open(sweep / "lr_scale=0.1,optimizer=adamw,seed=0" / "history.csv") as file:
        assert float(next(csv.DictReader(file))["lr.all"]) == pytest.approx(1e-4)  # 0.1 x AdamW's 1e-3
    assert "Tuned: lr_scale" in (sweep / "summary.md").read_text() and (sweep / "sensitivity.png").is_file()


@pytest.mark.slow
def test_the_optuna_preset_searches_on_validation_and_its_summary_selects_the_best_trial(tmp_path, tiny_npz):
    result = launch_here(tmp_path, "-m", "experiment=optuna_search", *tiny_overrides(tiny_npz), "epochs=1",
                         "hydra.sweeper.n_trials=3", "hydra.sweep.dir=sweep", "trackio.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    found = OmegaConf.load(sweep / "optimization_results.yaml")  # Optuna's own record: it maximized the training entry's val_acc
    trials = [json.loads((job / "metrics.json").read_text()) for job in sweep.iterdir() if (job / "metrics.json").is_file()]
    assert len(trials) == 3 and found.best_value == max(trial["val_acc"] for trial in trials)
    assert "Tuned: lr_scale, optimizer.weight_decay" in (sweep / "summary.md").read_text()


@pytest.mark.parametrize("option, lrs", [
    ("sgd", {"all": 0.1}),
    ("sam", {"all": 0.1}),  # SAM's base optimizer's lr
    ("muon", {"muon": 0.02, "rest.all": 1e-3}),  # Muon's lr and its rest's (AdamW) lr
])
def test_lr_scale_multiplies_every_learning_rate_of_the_optimizer(option, lrs):
    from conftest import compose_run
    from optqual.optim.build import build_optimizer, stand_in

    cfg = compose_run(f"optimizer={option}", "lr_scale=0.5")
    optimizer = build_optimizer(stand_in(), cfg.optimizer, cfg.lr_scale)
    assert {group["name"]: group["lr"] for group in optimizer.param_groups} == pytest.approx({k: 0.5 * v for k, v in lrs.items()})


def test_two_tuned_keys_select_the_best_combination(tmp_path):
    """Not each key's best value on its own: lr 0.1 is best with weight decay 1e-4, but lr 0.3 with 5e-4 is best overall."""
    val = {("0.1", "0.0001"): 0.70, ("0.1", "0.0005"): 0.60, ("0.3", "0.0001"): 0.50, ("0.3", "0.0005"): 0.75}
    for (lr, wd), val_acc in val.items():
        for seed in (0, 1):
            job = tmp_path / f"optimizer.lr={lr},optimizer.weight_decay={wd},seed={seed}"
            (job / ".hydra").mkdir(parents=True)
            OmegaConf.save({"seed": seed}, job / ".hydra" / "config.yaml")
            OmegaConf.save([f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}", f"seed={seed}"], job / ".hydra" / "overrides.yaml")
            (job / "metrics.json").write_text(json.dumps({"status": "completed", "val_acc": val_acc + seed / 100, "test_acc": 1 - val_acc,
                                                          "train_loss": 1.0, "epochs": 1, "wall_seconds": 1.0}))
    (group,) = write_summary(tmp_path, tune=["optimizer.lr", "optimizer.weight_decay"]).groups
    assert group.selected == "optimizer.lr=0.3,optimizer.weight_decay=0.0005"
    assert list(group.settings) == ["optimizer.lr=0.1,optimizer.weight_decay=0.0001", "optimizer.lr=0.1,optimizer.weight_decay=0.0005",
                                    "optimizer.lr=0.3,optimizer.weight_decay=0.0001", "optimizer.lr=0.3,optimizer.weight_decay=0.0005"]
