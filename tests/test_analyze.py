"""python -m optqual analyze / compare on real (tiny) runs and sweeps: what they write, that it is
deterministic and not recomputed, interpolation endpoints, and bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim.swa_utils import update_bn

from conftest import HEAD_NPZ, launched, tiny_overrides
from optqual.__main__ import main as optqual
from optqual.analysis import analyze
from optqual.analysis.solution import Solution
from optqual.engine.loop import EVAL_BATCH_SIZE, evaluate
from optqual.models.cifar_resnet import CifarResNet

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

# small enough for a test: 60 test images, 180 training images
SMALL = ["probe_size=48", "train_subset=64", "analysis.sharpness.max_products=4", "analysis.sharpness.directions=2",
         "analysis.sharpness.radii=[0.1]", "analysis.interpolation.points=3", "analysis.interpolation.train_images=32",
         "analysis.similarity.minibatch=16", "analysis.features.images=4"]
PER_RUN = ("weights", "activations", "sharpness", "calibration", "features")
FIGURES = ("reliability.png", "confusion.png", "filters.png", "top_images.png")


def results(directory: Path) -> dict[str, dict]:
    """Every measure's result under `directory`, keyed by its path."""
    return {str(path.relative_to(directory)): json.loads(path.read_text())["result"] for path in sorted(directory.rglob("analysis/**/*.json"))}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_npz) -> Path:
    """optimizer=sgd,adamw x seed=0,1, two epochs, analyzed with SMALL settings."""
    work = tmp_path_factory.mktemp("analyze")
    launched(work, "-m", *tiny_overrides(tiny_npz), "optimizer=sgd,adamw", "seed=0,1", "trackio.enabled=false", "hydra.sweep.dir=sweep")
    assert optqual(["analyze", str(work / "sweep"), *SMALL]) == 0
    return work / "sweep"


def test_a_sweep_gets_every_measure_and_the_comparison(sweep):
    for run in sweep.glob("optimizer=*"):
        out = run / "analysis"
        assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{m}.json" for m in PER_RUN)
        assert all((out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for figure in FIGURES)
        saved = json.loads((out / "sharpness.json").read_text())
        assert saved["settings"]["train_subset"] == 64 and saved["settings"]["max_products"] == 4 and saved["seconds"] > 0
        assert (out / "config.yaml").is_file()
    pairs = sorted(p.name for p in (sweep / "analysis" / "pairs").iterdir())
    # default pairs: runs of different seeds (independent initializations), within each group and across groups
    assert pairs == ["optimizer=adamw,seed=0__optimizer=adamw,seed=1", "optimizer=adamw,seed=0__optimizer=sgd,seed=1",
                     "optimizer=adamw,seed=1__optimizer=sgd,seed=0", "optimizer=sgd,seed=0__optimizer=sgd,seed=1"]
    text = (sweep / "analysis" / "comparison.md").read_text()
    assert "optimizer=sgd (n=2)" in text and "top Hessian eigenvalue" in text and "## What differs" in text
    assert "same seed" not in text and "between optimizer=adamw / optimizer=sgd (2 pairs)" in text
    for figure in ("weight_profiles.png", "sharpness_vs_accuracy.png", "interpolation.png", "barriers.png", "cka.png"):
        assert (sweep / "analysis" / figure).is_file()
    header = (sweep / "analysis" / "comparison.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["run", "group"] and "sharpness.top_eigenvalue" in header and "calibration.ece" in header
    assert "sharpness.ratio" in header and "compares numbers each optimizer regulates on a different scale" in text
    assert "sharpness.adaptive_trace" in header and "do not change under such a rescaling" in text  # the scale-invariant rows
    assert "its standard error is at most" in text  # how precise the perturbation's means are


def test_each_run_s_sharpness_is_measured_against_its_own_optimizer_s_threshold(sweep):
    """From the optimizer state of the last update (checkpoint.pt): SGD's lambda_max(H) against (2 + 2m) / lr, AdamW's
    lambda_max(P^-1 H) against 38 / lr; P is the state's, so the preconditioned operator is not the plain one."""
    sgd = json.loads((sweep / "optimizer=sgd,seed=0" / "analysis" / "sharpness.json").read_text())["result"]
    adamw = json.loads((sweep / "optimizer=adamw,seed=0" / "analysis" / "sharpness.json").read_text())["result"]
    assert sgd["regulated_by"] == "hessian" and sgd["threshold"] == pytest.approx((2 + 2 * 0.9) / 0.1)
    assert sgd["ratio"] == pytest.approx(sgd["top_eigenvalue"] / sgd["threshold"]) and sgd["preconditioned_top_eigenvalue"] is None
    assert adamw["regulated_by"] == "preconditioned" and adamw["threshold"] == pytest.approx((2 + 2 * 0.9) / ((1 - 0.9) * 1e-3))
    assert adamw["ratio"] == pytest.approx(adamw["preconditioned_top_eigenvalue"] / adamw["threshold"])
    assert adamw["preconditioned_top_eigenvalue"] > 10 * adamw["top_eigenvalue"]  # P ~ sqrt(v) + eps is far below 1


def test_distance_from_init_uses_the_initial_weights_every_run_now_saves(sweep):
    run = sweep / "optimizer=sgd,seed=1"
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(CifarResNet().state_dict().values(),
                                                 torch.load(run / "initial_model.pt", weights_only=True).values()))
    initial = torch.load(run / "initial_model.pt", weights_only=True)
    final = torch.load(run / "final_model.pt", weights_only=True)
    names = [name for name, _ in CifarResNet().named_parameters()]
    start = torch.cat([initial[n].double().flatten() for n in names])
    distance = float((torch.cat([final[n].double().flatten() for n in names]) - start).norm() / start.norm())
    assert json.loads((run / "analysis" / "weights.json").read_text())["result"]["relative_distance_from_init"] == pytest.approx(distance)


def test_analysis_is_deterministic(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert optqual(["analyze", str(copy), *SMALL, "--force"]) == 0
    assert results(copy) == results(sweep)


def test_analysis_done_is_kept_and_only_the_missing_is_computed(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for run in copy.glob("optimizer=*"):
        shutil.rmtree(run / "analysis")
    shutil.rmtree(copy / "analysis")
    assert optqual(["analyze", str(copy), "probe_size=48", "train_subset=64", "analysis=[weights]"]) == 0
    assert sorted(p.name for p in (copy / "optimizer=sgd,seed=0" / "analysis").glob("*.json")) == ["weights.json"]
    assert not (copy / "analysis").exists()  # no pairwise measure asked for: no comparison
    stamp = (copy / "optimizer=sgd,seed=0" / "analysis" / "weights.json").stat().st_mtime_ns
    capsys.readouterr()
    assert optqual(["analyze", str(copy), *SMALL]) == 0
    assert (copy / "optimizer=sgd,seed=0" / "analysis" / "weights.json").stat().st_mtime_ns == stamp
    assert (copy / "optimizer=sgd,seed=0" / "analysis" / "sharpness.json").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("analysis/**/*.json")}
    assert optqual(["analyze", str(copy), *SMALL]) == 0  # all up to date: a no-op
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("analysis/**/*.json")} == stamps
    assert optqual(["analyze", str(copy), *SMALL, "analysis.calibration.bins=10"]) == 0  # other settings: recomputed
    changed = [p.name for p, stamp in stamps.items() if p.stat().st_mtime_ns != stamp]
    assert sorted(set(changed)) == ["calibration.json"] and len(changed) == 4


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_result_vouches_for_its_figures_and_a_stale_or_missing_figure_is_drawn_again(sweep, tmp_path, monkeypatch):
    """The figures are written first and the JSON last with their checksums: a kill between the two
    leaves figures the result does not vouch for, which the next analyze draws again from the saved
    result, without computing the measure again."""
    run = tmp_path / "optimizer=sgd,seed=0"  # a result names the runs it measured
    shutil.copytree(sweep / run.name, run)
    calibration = ["probe_size=48", "train_subset=64", "analysis=[calibration]"]
    out = run / "analysis"
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["figures"] == {name: sha256(out / name) for name in ("reliability.png", "confusion.png")}

    def killed_before(path, data):  # a kill after the figures, before their JSON
        if path.name == "calibration.json":
            raise KeyboardInterrupt
        write_json(path, data)

    write_json = analyze.write_json
    monkeypatch.setattr(analyze, "write_json", killed_before)
    with pytest.raises(KeyboardInterrupt):
        optqual(["analyze", str(run), *calibration, "analysis.calibration.bins=5"])
    monkeypatch.undo()
    assert sha256(out / "reliability.png") != saved["figures"]["reliability.png"]  # 5 bins beside the result of 15
    (out / "confusion.png").unlink()
    assert optqual(["analyze", str(run), *calibration]) == 0
    again = json.loads((out / "calibration.json").read_text())
    assert again["result"] == saved["result"] and again["seconds"] == saved["seconds"]  # drawn again, not computed again
    assert again["figures"] == saved["figures"] == {name: sha256(out / name) for name in ("reliability.png", "confusion.png")}


def test_interpolation_endpoints_are_the_two_runs_with_bn_recomputed_on_the_same_images(sweep):
    """Naive and aligned: the aligned B is B with its units permuted, so both lines end at B's own numbers; so does
    the REPAIRed line, whose goal at an end is that end's own statistics."""
    pair = sweep / "analysis" / "pairs" / "optimizer=adamw,seed=0__optimizer=sgd,seed=1" / "interpolation.json"
    curves = json.loads(pair.read_text())["result"]["curves"]
    for line in ("naive", "aligned"):
        for run, point in (("optimizer=adamw,seed=0", curves[line][0]), ("optimizer=sgd,seed=1", curves[line][-1])):
            solution = Solution.load(sweep / run, "final", torch.device("cpu"))
            model = CifarResNet()
            model.load_state_dict(torch.load(sweep / run / "final_model.pt", weights_only=True))
            chunks = Solution.load(sweep / "optimizer=adamw,seed=0", "final", torch.device("cpu")).train_subset(32, 0, 256)
            update_bn([images for images, _ in chunks], model)
            test = evaluate(model, solution.data.eval_batches("test", EVAL_BATCH_SIZE))
            assert point["test_loss"] == pytest.approx(test["loss"], rel=1e-4) and point["test_acc"] == test["acc"]
    for ours, repaired in zip((curves["naive"][0], curves["naive"][-1]), (curves["repaired"][0], curves["repaired"][-1])):
        assert repaired["test_loss"] == pytest.approx(ours["test_loss"], rel=0.02)  # REPAIR at an end: the end itself, up to BN's slack


def test_pairs_all_adds_the_equal_seed_pairs_as_a_kind_of_their_own(sweep, tmp_path):
    """Runs of two groups with equal seeds share their initial weights: never mixed with independent pairs."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for run in copy.glob("optimizer=*"):
        shutil.rmtree(run / "analysis")
    interpolation = ["probe_size=48", "train_subset=64", "analysis.interpolation.points=3", "analysis.interpolation.train_images=32"]
    assert optqual(["analyze", str(copy), *interpolation, "pairs=all", "analysis=[interpolation]"]) == 0
    assert len(list((copy / "analysis" / "pairs").iterdir())) == 6
    assert not (copy / "optimizer=sgd,seed=0" / "analysis").exists()  # pairs only: nothing written into the runs
    text = (copy / "analysis" / "comparison.md").read_text()
    assert "between optimizer=adamw / optimizer=sgd, same seed (2 pairs)" in text and "started from the same initial weights" in text
    assert "between optimizer=adamw / optimizer=sgd (2 pairs)" in text


def test_each_pair_is_interpolated_naive_aligned_and_repaired(sweep):
    out = sweep / "analysis" / "pairs" / "optimizer=sgd,seed=0__optimizer=sgd,seed=1"
    result = json.loads((out / "interpolation.json").read_text())["result"]
    assert list(result["curves"]) == ["naive", "aligned", "repaired"] and result["align"] == "activations"
    assert all(len(curve) == 3 for curve in result["curves"].values())
    assert result["aligned_distance"] > 0 and result["distance"] > 0
    assert {"barrier_test_loss", "aligned_barrier_test_loss", "repaired_barrier_test_loss"} <= result.keys()
    assert (out / "interpolation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (sweep / "analysis" / "comparison.md").read_text()
    assert "loss barrier with B's units aligned to A's (test set)" in text and "aligned and REPAIRed" in text
    assert "Test-loss barriers over the pairs: between optimizer=adamw / optimizer=sgd" in text  # what alignment did, per kind


def test_compare_prints_and_saves_the_pairwise_measures(sweep, tmp_path, capsys):
    """With weight matching: it never moves B away from A (the identity is one of its candidates)."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    a, b = copy / "optimizer=sgd,seed=0", copy / "optimizer=sgd,seed=1"
    assert optqual(["compare", str(a), str(b), *SMALL, "analysis.interpolation.align=weights"]) == 0
    out = capsys.readouterr().out
    assert "optimizer=sgd,seed=0 vs optimizer=sgd,seed=1" in out and "CKA per stage: stem" in out and "loss barrier" in out
    assert "loss barrier with B's units aligned to A's (test set)" in out
    result = json.loads((copy / "analysis" / "pairs" / f"{a.name}__{b.name}" / "interpolation.json").read_text())
    assert result["settings"]["align"] == "weights" and result["result"]["matching_rounds"] >= 1
    assert result["result"]["aligned_distance"] <= result["result"]["distance"]


def test_unanalyzable_runs_are_skipped_with_a_reason_and_the_rest_goes_on(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    metrics = copy / "optimizer=adamw,seed=1" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "status": "diverged"}))
    metrics = copy / "optimizer=sgd,seed=1" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "status": "running"}))
    capsys.readouterr()
    assert optqual(["analyze", str(copy), *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"skipped {copy / 'optimizer=adamw,seed=1'}: status diverged, no result to analyze" in out
    # metrics.json says running but no process holds the run's lock: a killed run, read as stopped
    assert f"skipped {copy / 'optimizer=sgd,seed=1'}: status stopped, no result to analyze" in out
    assert "optimizer=sgd,seed=0: top eigenvalue" in out


@pytest.mark.parametrize("arguments, message", [
    (["probe_size=100"], "probe_size=100: larger than the test set of"),
    (["analysis=[weigths]"], "analysis=weigths: no such option (did you mean analysis=weights?)"),
    (["probe_sise=3"], "probe_sise=3: the analysis has no key probe_sise (did you mean probe_size=3?)"),
    (["+probe=3"], "probe=3: the analysis has no key probe (did you mean probe_size=3?)"),
    (["analysis.sharpness.top_k=9"], "analysis.sharpness.top_k=9: must lie in 1..5"),
    (["weights=middle"], "weights=middle: no run here saved middle_model.pt (their weights: best, final, initial)"),
])
def test_bad_analysis_input_is_one_line_and_writes_nothing(sweep, tmp_path, capsys, arguments, message):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("analysis"))
    before = sorted(copy.rglob("*"))
    with pytest.raises(SystemExit) as exit:
        optqual(["analyze", str(copy), *(SMALL if "analysis=" not in arguments[0] else ["probe_size=48"]), *arguments])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("optqual analyze: error: ") and message in err[0]
    assert sorted(copy.rglob("*")) == before


def test_the_default_probe_takes_a_smaller_test_set_whole_and_records_it(sweep, tmp_path, capsys):
    """60 test images: unset, probe_size takes all 60 (recorded in the result); a value set that is
    too large is refused, naming the key that was set and the largest value allowed."""
    run = tmp_path / "optimizer=sgd,seed=0"
    shutil.copytree(sweep / run.name, run)
    assert optqual(["analyze", str(run), "train_subset=64", "analysis=[weights,activations]"]) == 0
    saved = json.loads((run / "analysis" / "activations.json").read_text())
    assert saved["settings"]["probe_size"] == 60
    assert OmegaConf.load(run / "analysis" / "config.yaml").analysis.activations.probe_size == 60
    for arguments, key in ((["analysis=[activations]", "probe_size=100"], "probe_size=100"),
                           (["analysis=[activations]", "probe_size=48", "analysis.activations.probe_size=100"], "analysis.activations.probe_size=100")):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            optqual(["analyze", str(run), *arguments])
        assert capsys.readouterr().err.strip() == (f"optqual analyze: error: {key}: larger than the test set of {run} (60 images): "
                                                   f"set at most {key.split('=')[0]}=60, or leave it unset")


def test_compare_refuses_two_architectures(sweep, tmp_path, tiny_npz, capsys):
    launched(tmp_path, *tiny_overrides(tiny_npz), "model.blocks_per_stage=2", "trackio.enabled=false", "hydra.run.dir=deeper")
    with pytest.raises(SystemExit):
        optqual(["compare", str(sweep / "optimizer=sgd,seed=0"), str(tmp_path / "deeper"), *SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "have different architectures" in err[0]
    assert not (tmp_path / "deeper" / "analysis").exists() and not (sweep / "optimizer=sgd,seed=0" / "analysis" / "pairs").exists()


def test_long_measures_write_their_progress_as_lines_where_stderr_is_no_terminal(capsys):
    """A log file or a SLURM output gets plain lines (tqdm alone would print nothing there)."""
    from optqual.system.progress import progress

    with progress(3, "sharpness run_a: Lanczos", "step", every=0) as bar:
        for _ in range(3):
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sharpness run_a: Lanczos: 0/3 steps, 00:00 elapsed")
    assert lines[-1].startswith("sharpness run_a: Lanczos: 3/3 steps") and len(lines) == 4 and "\r" not in "".join(lines)


def test_effort_quick_measures_sharpness_on_fewer_images_and_says_so():
    quick, full = analyze.compose_config(["effort=quick"]), analyze.compose_config([])
    assert quick.analysis.sharpness.train_subset == 1024 and full.analysis.sharpness.train_subset == 5120
    assert OmegaConf.to_container(quick.analysis.weights) == OmegaConf.to_container(full.analysis.weights)


def test_the_comparison_figures_show_exactly_what_their_legends_and_scales_say():
    """Each interpolation line is its pair's curve under a legend entry naming which runs it joins
    (two kinds of between-group pairs never share a style); each CKA cell is its pair's value, on a
    colour scale stretched over the values found."""
    from matplotlib.colors import to_hex

    from optqual.analysis.comparison import barrier_figure, cka_figure, interpolation_figure
    from optqual.files.figures import pyplot

    plt = pyplot()
    curves = {pair: {line: [{"alpha": a / 4, "train_loss": i + a + k, "test_loss": 10 * i + a + k} for a in range(5)]
                     for k, line in enumerate(("naive", "aligned"))}
              for i, pair in enumerate([("a1", "a2"), ("a1", "b1"), ("a1", "c1")])}
    kinds = {("a1", "a2"): "within A", ("a1", "b1"): "between A / B", ("a1", "c1"): "between A / C"}
    figure = interpolation_figure(plt, curves, kinds, {"A": "tab:blue", "B": "tab:orange", "C": "tab:green"})
    train, test, aligned_train, aligned_test = figure.axes  # a row per line measured: naive, then aligned
    assert [axis.get_title() for axis in figure.axes] == ["naive, train subset", "naive, test set", "aligned, train subset", "aligned, test set"]
    assert [line.get_label() for line in train.lines] == ["within A", "between A / B", "between A / C"]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["within A", "between A / B", "between A / C"]
    assert len({(to_hex(line.get_color()), line.get_linestyle()) for line in train.lines}) == 3
    for axis, line_name in ((test, "naive"), (aligned_test, "aligned")):
        for line, pair in zip(axis.lines, curves.values()):
            assert list(line.get_ydata()) == [point["test_loss"] for point in pair[line_name]]
    plt.close(figure)

    similar = {("a1", "a2"): {"stem": 0.91, "pool": 0.86}, ("a1", "b1"): {"stem": 0.88, "pool": 0.87}}
    figure = cka_figure(plt, ["a1", "a2", "b1"], similar)
    stem, pool = (axis for axis in figure.axes if axis.get_title() in ("stem", "pool"))
    image = stem.images[0]
    assert image.get_array()[0][1] == 0.91 and image.get_array()[1][0] == 0.91 and image.norm.vmin == 0.85
    assert image.get_array().mask[1][2]  # a2 and b1 were not compared: a blank cell
    assert [label.get_text() for label in stem.get_xticklabels()] == ["a1", "a2", "b1"]
    plt.close(figure)

    barriers = {("a1", "a2"): {"barrier_test_loss": 0.9, "aligned_barrier_test_loss": 0.2},
                ("a1", "b1"): {"barrier_test_loss": 1.1, "aligned_barrier_test_loss": 0.4}}
    figure = barrier_figure(plt, ["a1", "a2", "b1"], barriers)
    naive, aligned = (axis for axis in figure.axes if axis.get_title() in ("naive", "aligned"))
    assert naive.images[0].get_array()[1][0] == 0.9 and aligned.images[0].get_array()[0][2] == 0.4
    assert aligned.images[0].get_array()[0][0] == 0 and aligned.images[0].get_array().mask[1][2]
    assert naive.images[0].norm.vmax == aligned.images[0].norm.vmax == 1.1  # one scale: the panels compare
    plt.close(figure)


@pytest.mark.slow
@pytest.mark.skipif(not HEAD_NPZ.is_file(), reason=f"real CIFAR-10 images not found at {HEAD_NPZ}")
def test_analyze_and_compare_take_their_default_probe_on_the_shared_real_images(tmp_path, capsys):
    """cifar10_head.npz has 1,017 test images, fewer than the default probe's 1,024."""
    for seed in (0, 1):
        launched(tmp_path, "data=npz", f"data.path={HEAD_NPZ}", "epochs=1", f"seed={seed}", f"hydra.run.dir=run{seed}", "trackio.enabled=false")
    probed = "analysis=[activations,features,calibration]"  # the measures of the default probe (sharpness takes none)
    assert optqual(["analyze", str(tmp_path / "run0"), probed]) == 0
    assert optqual(["compare", str(tmp_path / "run0"), str(tmp_path / "run1"), "analysis=[similarity]"]) == 0
    for name in ("activations", "features"):
        assert json.loads((tmp_path / "run0" / "analysis" / f"{name}.json").read_text())["settings"]["probe_size"] == 1017
    assert "CKA per stage" in capsys.readouterr().out


def test_analyze_and_profile_take_their_thread_count(sweep):
    """threads= (analyze, compare) and --threads (profile), as a run takes threads=: not only an environment variable."""
    saved = torch.get_num_threads()
    try:
        analyze.prepare_process(analyze.compose_config(["threads=1"]))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(saved)
        run = sweep / "optimizer=sgd,seed=0"
        assert optqual(["profile", str(run), "--calls", "5", "--threads", "1"]) == 0
        assert json.loads((run / "profile.json").read_text())["threads"] == 1
    finally:
        torch.set_num_threads(saved)
    with pytest.raises(analyze.ConfigError, match=r"^threads=0: must be a positive number of threads, or null$"):
        analyze.compose_config(["threads=0"])


def test_sharpness_with_batch_norm_statistics_recomputed_says_so_and_differs(sweep):
    run = sweep / "optimizer=adamw,seed=0"
    overrides = ["analysis=[sharpness]", *(o for o in SMALL if o.startswith(("train_subset", "analysis.sharpness"))),
                 "analysis.sharpness.batch_norm=recomputed"]
    solution = Solution.load(run, "final", torch.device("cpu"))
    node = analyze.compose_config(overrides).analysis.sharpness
    recomputed = instantiate(node, _convert_="all")(solution)
    running = json.loads((run / "analysis" / "sharpness.json").read_text())["result"]
    assert recomputed["batch_norm"] == "recomputed" and running["batch_norm"] == "running"
    assert recomputed["train_subset_loss"] != pytest.approx(running["train_subset_loss"], rel=1e-3)
    assert recomputed["regulated_by"] == "preconditioned" and recomputed["threshold"] == running["threshold"]  # the same weights
    assert all(torch.equal(a, b) for a, b in zip(solution.model.state_dict().values(),
                                                  Solution.load(run, "final", torch.device("cpu")).model.state_dict().values()))
