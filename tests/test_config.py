"""What the config promises, checked on what it builds: every option of every group composes,
passes its checks and builds; the presets are the recipes their papers describe, counted in
updates and parameters; bad values are one-line errors; the typed schema refuses wrong types
and unknown keys while composing."""

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig
from torch import nn

from conftest import REPO, compose_run
from optqual.components.registry import components
from optqual.components.scheduler import build_schedule
from optqual.config.checks import check_config
from optqual.data.images import EpochSteps
from optqual.errors import ConfigError
from optqual.models import build_model
from optqual.models.cifar_resnet import CifarResNet
from optqual.optim.build import build_optimizer
from optqual.runs.jobs import job_overrides
from optqual.system.devices import resolve_device

GROUPS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
          for group in ("optimizer", "model", "data", *(c.name for c in components() if c.default is not None))}
CIFAR_TRAIN = 45_000  # CIFAR-10's 50,000 training images less the 10% held out for validation
PARAMETERS = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731


def facts(cfg) -> dict:
    return {key: cfg.data[key] for key in ("num_classes", "channels", "image_size")}


@pytest.mark.parametrize("group, option", [(group, option) for group, options in GROUPS.items() for option in options
                                           if group not in ("optimizer", "model")])
def test_every_option_of_every_group_composes_and_passes_its_checks(group, option, tmp_path):
    cfg = compose_run(f"{group}={option}", *([f"data.path={tmp_path / 'x.npz'}"] if option == "npz" else []))
    check_config(cfg)  # existence of data files is checked when the data loads


@pytest.mark.parametrize("option", GROUPS["optimizer"])
def test_every_optimizer_option_builds_over_every_parameter_once_with_its_lr(option):
    cfg = compose_run(f"optimizer={option}")
    model = CifarResNet()
    optimizer = build_optimizer(model, cfg.optimizer)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len(list(model.parameters())) and {id(p) for p in grouped} == {id(p) for p in model.parameters()}
    configured = cfg.optimizer.get("lr") or cfg.optimizer.base.lr  # sam's lr is its base's
    assert optimizer.param_groups[0]["lr"] == configured
    assert not any(isinstance(value, (DictConfig, ListConfig)) for group in optimizer.param_groups for value in group.values())  # torch's


@pytest.mark.parametrize("option", GROUPS["model"])
def test_every_model_option_builds_for_the_data(option):
    cfg = compose_run(f"model={option}")
    assert build_model(cfg.model, facts(cfg)).eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_default_run_is_the_projects_baseline():
    """ResNet-8 (78,042 parameters: the figure every run of this project has had), SGD, 200 epochs
    of 352 updates on CIFAR-10's 45,000 training images."""
    cfg = compose_run()
    assert PARAMETERS(build_model(cfg.model, facts(cfg))) == 78_042
    assert isinstance(build_optimizer(CifarResNet(), cfg.optimizer), torch.optim.SGD)
    assert cfg.epochs * -(-CIFAR_TRAIN // cfg.data.batch_size) == 200 * 352


def learning_rates(cfg, updates: int, steps_per_epoch: int) -> list[float]:
    """The learning rate of each update of `cfg`'s schedule, on an optimizer of its lr."""
    optimizer = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "name": "all"}], lr=cfg.optimizer.lr)
    schedule = build_schedule(cfg.scheduler, optimizer, EpochSteps(cfg.epochs, ((1, steps_per_epoch),)))
    rates = []
    for _ in range(updates):
        rates.append(optimizer.param_groups[0]["lr"])
        schedule.after_step()
    return rates


def test_he2016_is_the_papers_recipe_in_iterations():
    """He et al. (2016, sec. 4.2): ResNet-20 of 0.27M parameters, 64k iterations at batch 128, lr 0.1
    divided by 10 at 32k and 48k."""
    he = compose_run("experiment=he2016")
    assert PARAMETERS(build_model(he.model, facts(he))) == 269_722
    steps = -(-CIFAR_TRAIN // he.data.batch_size)
    rates = learning_rates(he, he.epochs * steps, steps)
    assert len(rates) == 64_064
    drops = [update for update in range(1, len(rates)) if rates[update] < rates[update - 1]]
    assert drops == [32_032, 48_048] and rates[0] == 0.1 and rates[-1] == pytest.approx(0.001)


def test_the_cosine_presets_anneal_to_zero_over_the_run():
    for preset in ("cosine_sgd", "enhanced", "randaugment", "codeq_resnet20"):
        cfg = compose_run(f"experiment={preset}")
        steps = -(-CIFAR_TRAIN // cfg.data.batch_size)
        rates = learning_rates(cfg, cfg.epochs * steps + 1, steps)
        assert rates[0] == cfg.optimizer.lr and rates[-1] == pytest.approx(0.0, abs=1e-12), preset
        assert all(later <= earlier for earlier, later in zip(rates, rates[1:])), preset


@pytest.mark.slow
def test_compare_optimizers_sweeps_each_optimizers_own_lr_grid_over_three_seeds():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        fair = compose("config", overrides=["experiment=compare_optimizers"], return_hydra_config=True)
        jobs = job_overrides(fair.hydra, GlobalHydra.instance().config_loader())
    assert len(jobs) == 30
    grids = {}
    for job in jobs:
        cfg = compose_run("experiment=compare_optimizers", *job)
        grids.setdefault(job[0], set()).add(round(cfg.optimizer.lr * cfg.lr_scale, 10))
    assert grids == {"optimizer=sgd": {0.01, 0.0316, 0.1, 0.316, 1.0}, "optimizer=adamw": {0.0001, 0.000316, 0.001, 0.00316, 0.01}}
    assert list(fair.summary.tune) == ["lr_scale"]


def test_every_preset_passes_its_checks():
    for preset in sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")):
        check_config(compose_run(f"experiment={preset}"))


def test_npz_requires_a_path(tmp_path):
    with pytest.raises(ConfigError, match="data.path is required"):
        check_config(compose_run("data=npz"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=0", "optimizer.lr=0.0: must lie in (0, inf)"),
        ("epochs=-3", "epochs=-3: must lie in [1, inf)"),
        ("eval_every=0", "eval_every=0: must lie in [1, inf)"),
        ("grad_norm_every=0", "grad_norm_every=0: must be a positive integer or auto"),
        ("grad_norm_every=often", "grad_norm_every=often: must be a positive integer or auto"),
        ("grad_norm_every=2.5", "grad_norm_every=2.5: must be a positive integer or auto"),
        ("data.batch_size=0", "data.batch_size=0: must lie in [1, inf)"),
        ("data.val_fraction=0", "data.val_fraction=0.0: must lie in (0, 1)"),
        ("data.val_fraction=1", "data.val_fraction=1.0: must lie in (0, 1)"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1.0: must lie in [0, inf)"),
    ],
)
def test_bad_values_name_key_and_value(override, message):
    with pytest.raises(ConfigError) as refused:
        check_config(compose_run(override))
    assert str(refused.value) == message


def test_device_auto_picks_what_exists():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device=tpu9: unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_typed_schema_rejects_wrong_types_and_unknown_keys_at_compose_time():
    with pytest.raises(Exception, match="epochs"):
        compose_run("epochs=many")
    with pytest.raises(Exception, match="lrr"):
        compose_run("optimizer.lrr=0.1")
    with pytest.raises(Exception, match="pp"):
        compose_run("random_erasing.pp=0.5")  # a component's group, typed by its own schema


@pytest.mark.slow
def test_the_training_path_imports_no_after_the_fact_tool():
    check = ("import sys; import optqual.train; "
             "print(sorted(m for m in sys.modules if m.startswith(('optqual.tools', 'optqual.analysis', 'optqual.runs.reader', "
             "'optqual.launch.callbacks', 'pytorch_optimizer'))))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # pytorch-optimizer too: only runs that use it import it
