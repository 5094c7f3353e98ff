"""`python -m optqual analyze RUN_DIR | SWEEP_DIR [overrides]` and `python -m optqual compare RUN_A RUN_B`.

The analysis config is composed by Hydra from conf/analyze.yaml and conf/analysis/, so
`analysis=[weights,sharpness]`, `analysis.sharpness.top_k=3` or `probe_size=512` work as
anywhere else. Each selected per-run measure writes RUN_DIR/analysis/<measure>.json (its
settings, the SHA-256 of the weights it analyzed, the seconds it took, its result) and its
figures (their checksums in the JSON, which is written last: the commit of both); each pairwise measure writes <pairs>/<run_a>__<run_b>/<measure>.json, under
SWEEP_DIR/analysis/pairs/ for runs of one sweep. A result whose settings and weights are
those asked for is kept, so analyzing again is a no-op and a new measure on a finished
sweep computes only what is missing; `--force` recomputes. Everything is written
atomically, and a run's own files are never touched. A sweep then gets its comparison
(optqual/analysis/comparison.py).
"""

import copy
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from optqual.analysis import comparison, trajectories
from optqual.analysis.measures import Measure, measures
from optqual.analysis.solution import NotAnalyzable, Solution, check_comparable
from optqual.config.checks import WHERE_ANALYSIS_KEYS_ARE, check_known_keys
from optqual.config.upgrade import moved
from optqual.errors import ConfigError, require
from optqual.files.atomic import write_json, write_text
from optqual.files.figures import file_sha256, write_figure
from optqual.files.layout import ANALYSIS_DIR, MULTIRUN, SNAPSHOTS_DIR, SNAPSHOTS_INDEX, config_dir, is_run_dir, weights_file
from optqual.launch.overrides import explain
from optqual.runs.reader import read_sweep
from optqual.system.devices import resolve_device
from optqual.system.machine import set_up_machine
from optqual.tools.summary import group_jobs

log = logging.getLogger(__name__)
ANALYZE = "analyze"  # conf/analyze.yaml
DEFAULT_PROBE = 1024  # test images: activations, features and CKA, when probe_size is not set


@dataclass
class AnalyzeSchema:
    weights: str = "final"
    probe_size: Optional[int] = None  # null: the first DEFAULT_PROBE test images, or all of them when fewer
    train_subset: int = 5120
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None  # torch CPU threads; null: torch's default
    pairs: str = "default"
    analysis: Any = MISSING


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="analyze_schema", node=AnalyzeSchema)
    for name, measure in measures().items():
        store.store(group="schema/analysis", name=name, node=measure.schema)


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/analyze.yaml with `overrides`, its values checked."""
    register_schemas()
    with initialize_config_dir(str(config_dir().resolve()), version_base="1.3"):
        try:
            cfg = compose(ANALYZE, overrides=list(overrides))
        except HydraException as err:
            raise ConfigError(explain(err, list(overrides), GlobalHydra.instance().config_loader(), config_name=ANALYZE)) from None
    check_known_keys(cfg, "analysis", WHERE_ANALYSIS_KEYS_ARE)
    require(cfg.weights.isidentifier(), "weights", cfg.weights, "must name a run's weights: final, best, ema, ... (<weights>_model.pt)")
    require(cfg.pairs in ("default", "all"), "pairs", cfg.pairs, "must be default or all")
    require(cfg.threads is None or cfg.threads > 0, "threads", cfg.threads, "must be a positive number of threads, or null")
    for key in ("probe_size", "train_subset"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be a positive number of images")
    for name in cfg.analysis:
        measures()[name].check(cfg.analysis[name])
    return cfg


def prepare_process(cfg: DictConfig) -> torch.device:
    """The device, and the machine set up as for training (optqual/system/machine.py): deterministic
    kernels and seeds, freed host memory kept for reuse (evaluation runs twice as fast, Hessian-vector
    products 15% faster)."""
    device = resolve_device(cfg.device)
    set_up_machine(cfg.seed, threads=cfg.threads, device=device)
    return device


def saved_result(path: Path, settings: dict, digests: dict) -> dict | None:
    """What `path` holds when it was computed with these settings on these weights; None otherwise,
    or when it cannot be read (said, then recomputed)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable (%s): recomputed", path, err)
        return None
    if moved(saved.get("settings")) != settings or saved.get("weights_sha256") != digests:  # saved before a measure moved
        return None
    return saved


def figures_agree(out: Path, figures: dict | None) -> bool:
    """Every figure a result records is there, byte for byte the one drawn with it."""
    return figures is not None and all(file_sha256(out / name) == digest for name, digest in figures.items())


def run_measure(measure: Measure, node: DictConfig, out: Path, subjects: list[Solution], digests: dict, force: bool) -> dict | None:
    """One measure of one run (or one pair): computed and saved, or read back when up to date.

    Its figures and its JSON are committed together: the figures are written first, the JSON last
    with their checksums, so a kill between them leaves figures the JSON does not vouch for, and a
    stale or missing figure is drawn again from the saved result."""
    name = measure.name
    settings = OmegaConf.to_container(node, resolve=True)
    path = out / f"{name}.json"
    saved = None if force else saved_result(path, settings, digests)
    if saved is not None and (measure.figures is None or figures_agree(out, saved.get("figures"))):
        log.info("%s: %s up to date", " / ".join(s.name for s in subjects), name)
        return saved["result"]
    if saved is not None:
        result, seconds = saved["result"], saved["seconds"]
        log.info("%s: %s figures drawn again from its saved result", " / ".join(s.name for s in subjects), name)
    else:
        started = time.perf_counter()
        result = instantiate(node, _convert_="all")(*subjects)
        seconds = time.perf_counter() - started
        log.info("%s: %s in %.1f s", " / ".join(s.name for s in subjects), name, seconds)
    out.mkdir(parents=True, exist_ok=True)
    figures = {} if measure.figures is None else {
        figure_name: write_figure(figure, out / figure_name) for figure_name, figure in measure.figures(result, *subjects).items()}
    write_json(path, {"measure": name, "settings": settings, "weights_sha256": digests, "seconds": seconds,
                      "figures": figures, "result": result})
    return result


def chosen(cfg: DictConfig, pairwise: bool) -> dict[str, Measure]:
    """The measures the config selects, of one run or of pairs."""
    return {name: measure for name, measure in measures().items() if name in cfg.analysis and measure.pairwise == pairwise}


def check_fits(cfg: DictConfig, solutions: list[Solution], pairwise: bool) -> None:
    """Before any work: each chosen measure can measure these runs (one of each architecture)."""
    architectures = {type(solution.model): solution for solution in solutions}
    for name, measure in chosen(cfg, pairwise).items():
        if measure.fits is not None:
            for solution in architectures.values():
                measure.fits(cfg.analysis[name], solution)


def with_probe_sizes(cfg: DictConfig, solutions: list[Solution]) -> DictConfig:
    """`cfg` with each chosen measure's probe a number of test images, as its result records it: the
    number set, which must fit in every run's test set, or (null, the default) the first
    DEFAULT_PROBE test images, all of them when a test set is smaller. A measure without a probe is
    not held to it. An error names the key that was set: probe_size, or the measure's own."""
    if not solutions:
        return cfg
    smallest = min(solutions, key=lambda solution: len(solution.data.test_labels))
    tests = len(smallest.data.test_labels)
    cfg = copy.deepcopy(cfg)
    for name in cfg.analysis:
        node = cfg.analysis[name]
        if "probe_size" not in node:
            continue
        key = "probe_size" if OmegaConf.is_interpolation(node, "probe_size") else f"analysis.{name}.probe_size"
        if node.probe_size is None:
            node.probe_size = min(DEFAULT_PROBE, tests)
        else:
            require(node.probe_size <= tests, key, node.probe_size,
                    f"larger than the test set of {smallest.run_dir} ({tests} images): set at most {key}={tests}, or leave it unset")
        measures()[name].check(node)
    return cfg


def load(directories: list[Path], cfg: DictConfig, device: torch.device) -> list[Solution]:
    """The analyzable runs; each other one is skipped with a line saying why. Weights that no run
    saved are an error naming those they did save."""
    wanted = weights_file(cfg.weights)
    if directories and not any((directory / wanted).is_file() for directory in directories):
        saved = sorted({path.name.removesuffix("_model.pt") for directory in directories for path in directory.glob("*_model.pt")})
        raise ConfigError(f"weights={cfg.weights}: no run here saved {wanted} (their weights: {', '.join(saved) or 'none'})")
    solutions = []
    for directory in directories:
        try:
            solution = Solution.load(directory, cfg.weights, device)
        except NotAnalyzable as err:
            print(f"skipped {err}", flush=True)
            continue
        solutions.append(solution)
    return solutions


def analyze_runs(solutions: list[Solution], cfg: DictConfig, force: bool) -> dict[str, dict]:
    """Every selected per-run measure of every run; {run name: {measure: result}}."""
    results = {solution.name: {} for solution in solutions}
    if not chosen(cfg, pairwise=False):  # pairs only (analysis=[interpolation]): nothing to write in the runs
        return results
    for solution in solutions:
        out = solution.run_dir / ANALYSIS_DIR
        digests = {solution.name: solution.weights_sha256}
        results[solution.name] = {name: run_measure(measure, cfg.analysis[name], out, [solution], digests, force)
                                  for name, measure in chosen(cfg, pairwise=False).items()}
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
        print(f"{solution.name}: " + comparison.headline(results[solution.name]), flush=True)
    return results


def pair_directory(a: Solution, b: Solution) -> Path:
    """Where a pair's results go: the sweep's analysis/pairs/ when both runs are jobs of one sweep, else A's."""
    parent = a.run_dir.parent
    if b.run_dir.parent == parent and (parent / MULTIRUN).is_file():
        return parent / ANALYSIS_DIR / "pairs" / f"{a.name}__{b.name}"
    return a.run_dir / ANALYSIS_DIR / "pairs" / f"{b.run_dir.parent.name}__{b.name}"


def analyze_pair(a: Solution, b: Solution, cfg: DictConfig, force: bool) -> dict:
    check_comparable(a, b)
    digests = {a.name: a.weights_sha256, b.name: b.weights_sha256}
    out = pair_directory(a, b)
    return {name: run_measure(measure, cfg.analysis[name], out, [a, b], digests, force)
            for name, measure in chosen(cfg, pairwise=True).items()}


def chosen_pairs(solutions: list[Solution], groups: dict[str, str], which: str) -> list[tuple[Solution, Solution]]:
    """`all`: every pair. `default`: every pair of different seeds, within a group and across groups, so that
    every pair is of two independent initializations; runs of two groups with equal seeds start from the
    same weights, and only `all` pairs them (as a kind of their own in the comparison)."""
    pairs = list(itertools.combinations(solutions, 2))
    if which == "all":
        return pairs
    return [(a, b) for a, b in pairs if a.config.seed != b.config.seed]


def snapshots_of(run_dir: Path) -> list[dict]:
    """The snapshots the run took (snapshots/snapshots.json), in order; none when it took none."""
    path = run_dir / SNAPSHOTS_DIR / SNAPSHOTS_INDEX
    return json.loads(path.read_text())["snapshots"] if path.is_file() else []


def analyze_snapshots(solutions: list[Solution], cfg: DictConfig, device: torch.device, force: bool) -> dict[str, list[dict]]:
    """Every selected per-run measure at every snapshot of every run (RUN_DIR/analysis/snapshots/<label>/,
    cached as the final weights' results are), and each run's trajectories; {run name: a row per snapshot}."""
    runs = {}
    for solution in solutions:
        taken = snapshots_of(solution.run_dir)
        if not taken:
            print(f"skipped {solution.name}: it took no snapshots (train with snapshots.at=log:12, say)", flush=True)
            continue
        rows = []
        for snapshot in taken:
            at = Solution.load(solution.run_dir, f"{SNAPSHOTS_DIR}/{snapshot['label']}", device)
            out = solution.run_dir / ANALYSIS_DIR / SNAPSHOTS_DIR / snapshot["label"]
            results = {name: run_measure(measure, cfg.analysis[name], out, [at], {at.name: at.weights_sha256}, force)
                       for name, measure in chosen(cfg, pairwise=False).items()}
            rows.append(trajectories.row(snapshot, results))
        written = trajectories.write_run(solution.run_dir, solution.run_dir / ANALYSIS_DIR, rows)
        print(f"{solution.name}: {len(rows)} snapshots; wrote {', '.join(written)} in {solution.run_dir / ANALYSIS_DIR}", flush=True)
        runs[solution.name] = rows
    return runs


def analyze(directory: str | Path, overrides: list[str], force: bool = False, snapshots: bool = False) -> int:
    """Analyze a run, or every run of a sweep and then compare them; with `snapshots`, every run at each
    of its snapshots, and a sweep's trajectories per group. 0 when something was analyzed."""
    cfg = compose_config(overrides)
    directory = Path(directory)
    jobs = read_sweep(directory)
    device = prepare_process(cfg)
    solutions = load([job.path for job in jobs if job.path is not None and job.unreadable is None], cfg, device)
    cfg = with_probe_sizes(cfg, solutions)
    for job in jobs:
        if job.path is None or job.unreadable is not None:
            print(f"skipped {job.name}: {job.unreadable or 'not started'}", flush=True)
    if not solutions:
        raise ConfigError(f"{directory}: no run with results to analyze")
    if snapshots:
        runs = analyze_snapshots(solutions, cfg, device, force)
        if not runs:
            raise ConfigError(f"{directory}: no run took snapshots (train with snapshots.at=log:12, say)")
        if not is_run_dir(directory):
            groups = {job.name: group.label for group in group_jobs(jobs) for job in group.jobs}
            written = trajectories.write_sweep(directory / ANALYSIS_DIR, runs, groups)
            print(f"wrote {', '.join(written)} in {directory / ANALYSIS_DIR}", flush=True)
        return 0
    if not is_run_dir(directory) and len(solutions) > 1:
        check_fits(cfg, solutions, pairwise=True)
    results = analyze_runs(solutions, cfg, force)
    if is_run_dir(directory) or not chosen(cfg, pairwise=True) or len(solutions) < 2:
        return 0
    groups = {job.name: group.label for group in group_jobs(jobs) for job in group.jobs}
    pairs = {(a.name, b.name): analyze_pair(a, b, cfg, force) for a, b in chosen_pairs(solutions, groups, cfg.pairs)}
    out = directory / ANALYSIS_DIR
    written = comparison.write(out, solutions, groups, results, pairs)
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    print(f"wrote {', '.join(written)} in {out}", flush=True)
    return 0


def compare(run_a: str | Path, run_b: str | Path, overrides: list[str], force: bool = False) -> int:
    """The pairwise measures of two runs, printed and saved."""
    cfg = compose_config(overrides)
    device = prepare_process(cfg)
    solutions = load([Path(run_a), Path(run_b)], cfg, device)
    cfg = with_probe_sizes(cfg, solutions)
    if len(solutions) < 2:
        raise ConfigError("compare needs two runs with results")
    a, b = solutions
    check_comparable(a, b)
    check_fits(cfg, solutions, pairwise=True)
    print(comparison.pair_text(a.name, b.name, analyze_pair(a, b, cfg, force)), flush=True)
    return 0
