"""Every config group option composes, carries the documented defaults and instantiates; the presets."""

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import REPO, compose_run
from optqual.config.checks import check_config
from optqual.errors import ConfigError
from optqual.models import build_model
from optqual.models.cifar_resnet import CifarResNet
from optqual.optim.build import build_optimizer
from optqual.system.devices import resolve_device

GROUPS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")) for group in ("optimizer", "model", "data")}



def test_top_level_defaults():
    cfg = compose_run()
    assert (cfg.seed, cfg.epochs, cfg.eval_every, cfg.device) == (42, 200, 10, "auto")
    assert cfg.experiment_name == "resnet8_cifar10_baseline"
    assert OmegaConf.to_container(cfg.data) == {
        "_target_": "optqual.data.sources.cifar10", "root": "./data", "download": True,
        "batch_size": 128, "batch_size_schedule": None, "val_fraction": 0.1, "split_seed": 0, "num_classes": 10, "channels": 3, "image_size": 32,
        "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010],
        "augment": {"_target_": "optqual.data.augment.CropFlip", "padding": 4, "flip": True},
    }
    assert (cfg.model.shortcut, cfg.model.num_classes, cfg.model.in_channels) == ("B", 10, 3)  # the project's ResNet-8
    assert cfg.trackio.dir == "outputs/trackio"


@pytest.mark.parametrize("option", GROUPS["optimizer"])
def test_optimizer_options_build_over_the_model(option):
    cfg = compose_run(f"optimizer={option}")
    model = CifarResNet()
    optimizer = build_optimizer(model, cfg.optimizer)
    assert isinstance(optimizer, torch.optim.Optimizer)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len(list(model.parameters())) and {id(p) for p in grouped} == {id(p) for p in model.parameters()}
    configured = cfg.optimizer.get("lr") or cfg.optimizer.base.lr  # sam's lr is its base's
    assert optimizer.param_groups[0]["lr"] == configured


def test_optimizer_values_match_the_spec():
    sgd = compose_run("optimizer=sgd").optimizer
    assert (sgd._target_, sgd.lr, sgd.momentum, sgd.weight_decay) == ("torch.optim.SGD", 0.1, 0.9, 1e-4)
    adamw = compose_run("optimizer=adamw").optimizer
    assert (adamw._target_, adamw.lr, list(adamw.betas), adamw.weight_decay) == ("torch.optim.AdamW", 1e-3, [0.9, 0.999], 1e-2)
    # YAML lists arrive as ListConfig; the builder hands torch a plain list
    built = build_optimizer(CifarResNet(), adamw)
    assert type(built.param_groups[0]["betas"]) in (list, tuple)


@pytest.mark.parametrize("option", GROUPS["model"])
def test_model_options_build_for_the_data(option):
    cfg = compose_run(f"model={option}")
    model = build_model(cfg.model, {key: cfg.data[key] for key in ("num_classes", "channels", "image_size")}).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("option", GROUPS["data"])
def test_data_options_compose(option):
    cfg = compose_run(f"data={option}")
    assert cfg.data.batch_size == 128 and cfg.data.val_fraction == 0.1


def test_npz_requires_a_path(tmp_path):
    with pytest.raises(ConfigError, match="data.path is required"):
        check_config(compose_run("data=npz"))
    npz = tmp_path / "x.npz"
    check_config(compose_run("data=npz", f"data.path={npz}"))  # existence is checked when the data loads


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=0", "optimizer.lr=0.0: must be > 0"),
        ("epochs=-3", "epochs=-3: must be a positive integer"),
        ("eval_every=0", "eval_every=0: must be a positive integer"),
        ("grad_norm_every=0", "grad_norm_every=0: must be a positive integer or auto"),
        ("grad_norm_every=often", "grad_norm_every=often: must be a positive integer or auto"),
        ("grad_norm_every=2.5", "grad_norm_every=2.5: must be a positive integer or auto"),
        ("data.batch_size=0", "data.batch_size=0: must be a positive integer"),
        ("data.val_fraction=0", "data.val_fraction=0.0: must lie strictly between 0 and 1"),
        ("data.val_fraction=1", "data.val_fraction=1.0: must lie strictly between 0 and 1"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1.0: must be >= 0"),
    ],
)
def test_bad_values_name_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_config(compose_run(override))


def test_device_auto_picks_what_exists():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device=tpu9: unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_typed_schema_rejects_wrong_types_at_compose_time():
    with pytest.raises(Exception, match="epochs"):
        compose_run("epochs=many")
    with pytest.raises(Exception, match="lrr"):
        compose_run("optimizer.lrr=0.1")


def test_presets_are_their_recipes():
    he = compose_run("experiment=he2016")
    assert (he.optimizer._target_, he.optimizer.lr, he.optimizer.momentum, he.optimizer.weight_decay) == ("torch.optim.SGD", 0.1, 0.9, 1e-4)
    assert (he.scheduler._target_, list(he.scheduler.milestones), he.scheduler.unit, he.scheduler.gamma) == (
        "optqual.components.scheduler.multistep", [0.5, 0.75], "fraction", 0.1)
    assert he.epochs * -(-45_000 // he.data.batch_size) == 64_064  # He et al.'s 64k iterations on 45k images
    assert sum(p.numel() for p in instantiate(he.model).parameters()) == 269_722  # ResNet-20, option A: the paper's 0.27M
    cosine = compose_run("experiment=cosine_sgd")
    assert (cosine.optimizer.weight_decay, cosine.scheduler._target_, cosine.eval_every) == (5e-4, "optqual.components.scheduler.cosine", 1)
    assert (cosine.early_stopping.patience, cosine.early_stopping.min_epochs, cosine.early_stopping.monitor) == (15, 80, "val_acc")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        phase0 = compose("config", overrides=["experiment=phase0"], return_hydra_config=True)
    assert phase0.hydra.sweeper.params.optimizer == "sgd,adamw" and phase0.scheduler._target_ == "optqual.components.scheduler.constant"
    enhanced = compose_run("experiment=enhanced")
    assert (enhanced.scheduler._target_, enhanced.loss.label_smoothing, enhanced.optimizer.weight_decay) == ("optqual.components.scheduler.cosine", 0.1, 5e-4)
    assert (enhanced.batch_mix.cutmix_alpha, enhanced.batch_mix.mixup_alpha, enhanced.batch_mix.prob) == (1.0, None, 0.5)
    assert (enhanced.early_stopping.patience, enhanced.eval_every) == (40, 1)
    randaugment = compose_run("experiment=randaugment", "seed=3")
    assert (randaugment.augment._target_, randaugment.augment.num_ops, randaugment.augment.magnitude) == (
        "optqual.components.augment.RandAugment", 3, 5)
    assert (randaugment.scheduler._target_, randaugment.early_stopping.patience) == ("optqual.components.scheduler.cosine", 40)
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        fair = compose("config", overrides=["experiment=compare_optimizers"], return_hydra_config=True)
    assert dict(fair.hydra.sweeper.params) == {"optimizer": "sgd,adamw", "lr_scale": "0.1,0.316,1,3.16,10", "seed": "0,1,2"}
    assert list(fair.summary.tune) == ["lr_scale"]
    codeq = compose_run("experiment=codeq_resnet20")
    assert (codeq.model.blocks_per_stage, codeq.model.shortcut, codeq.optimizer._target_, codeq.optimizer.lr, codeq.optimizer.weight_decay) == (
        3, "A", "torch.optim.AdamW", 1e-3, 0.0)
    assert (codeq.epochs, codeq.data.batch_size, codeq.scheduler._target_, codeq.quantizer.kind) == (300, 512, "optqual.components.scheduler.cosine", "deadzone")
    assert [codeq.quantizer[key] for key in ("lr_dz", "lr_bit", "weight_decay_dz", "weight_decay_bit")] == [1e-3, 1e-3, 0.01, 0.01]
    for preset in ("phase0", "he2016", "cosine_sgd", "enhanced", "randaugment", "compare_optimizers", "optuna_search", "codeq_resnet20"):
        check_config(compose_run(f"experiment={preset}"))


def test_the_training_path_imports_no_after_the_fact_tool_and_no_private_hydra_api():
    check = ("import sys; import optqual.train; "
             "print(sorted(m for m in sys.modules if m.startswith(('optqual.tools', 'optqual.analysis', 'optqual.runs.reader', "
             "'optqual.launch.callbacks', 'pytorch_optimizer'))))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # pytorch-optimizer too: only runs that use it import it
    private = [path for path in (REPO / "optqual").rglob("*.py") if "hydra._internal" in path.read_text()]
    assert not private and "hydra._internal" not in (REPO / "launch.py").read_text()
