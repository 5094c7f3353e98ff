"""The one reader of a run directory: the config a run was built with rebuilds its model alone, a run of
an earlier optqual reads as this one composes it, and everything that is not a run is one error."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import launched, write_mnist_raw
from optqual.engine.loop import evaluate
from optqual.errors import build
from optqual.models import build_model
from optqual.runs.reader import RunDirError, read_run, read_sweep
from optqual.tools.diff import format_diff
from test_legacy_runs import unpack


@pytest.fixture(scope="module")
def grey_mlp(tmp_path_factory) -> Path:
    """An MLP on MNIST-format files, whose data option leaves the channels to the images (null)."""
    work = tmp_path_factory.mktemp("grey")
    write_mnist_raw(work / "data" / "MNIST" / "raw", n_train=120, n_test=40)
    launched(work, "model=mlp", "model.hidden=[16]", "data=mnist", f"data.root={work / 'data'}", "data.download=false", "data.batch_size=32",
             "epochs=1", "trackio.enabled=false", "hydra.run.dir=run")
    return work / "run"


def test_the_config_a_run_was_built_with_rebuilds_its_model_alone(grey_mlp):
    assert OmegaConf.load(grey_mlp / ".hydra" / "config.yaml").data.channels is None  # as composed
    run = read_run(grey_mlp)
    assert (run.config.data.channels, run.config.model.in_channels, run.config.model.image_size) == (1, 1, 28)
    facts = {key: run.config.data[key] for key in ("num_classes", "channels", "image_size")}  # from the config, nothing else
    model = build_model(run.config.model, facts)
    model.load_state_dict(torch.load(run.weights("final"), weights_only=True))
    data = build(run.config.data, "data", device=torch.device("cpu"))
    assert evaluate(model, data.eval_batches("test", 1024))["acc"] == run.metrics["test_acc"]


def test_a_run_of_an_earlier_optqual_reads_as_one_started_now(tmp_path):
    """The components fixture was made before the restructure (tests/legacy_runs/); the same recipe now."""
    legacy = unpack("components", tmp_path / "legacy")
    expected = json.loads((Path(__file__).with_name("legacy_runs") / "components" / "expected.json").read_text())
    launched(tmp_path / "legacy", *expected["overrides"], "epochs=2", "hydra.run.dir=now")
    config = read_run(legacy).config
    assert config.scheduler._target_ == "optqual.components.scheduler.cosine"  # saved as optqual.schedule.cosine
    assert "seed" not in config.augment and config.model.in_channels == 3  # `seed: ${seed}` then; the data's channels
    lines = format_diff(str(legacy), str(tmp_path / "legacy" / "now")).splitlines()[:3]  # and the default project name then
    assert [" ".join(line.split()) for line in lines] == [  # columns as wide as the longest key: a hardware key on another CPU
        "key A -> B", "epochs 3 -> 2", "experiment_name 'resnet8_cifar10_baseline' -> None"]


def test_anything_that_is_not_a_run_or_a_sweep_is_one_error_naming_it(tmp_path, grey_mlp):
    with pytest.raises(RunDirError, match=f"{tmp_path} is not a run directory"):
        read_run(tmp_path)
    with pytest.raises(RunDirError, match=f"{tmp_path} is neither a sweep directory"):
        read_sweep(tmp_path)
    broken = tmp_path / "broken"
    (broken / ".hydra").mkdir(parents=True)
    (broken / ".hydra" / "config.yaml").write_text((grey_mlp / ".hydra" / "config.yaml").read_text())
    (broken / "metrics.json").write_text('{"status": "comp')
    with pytest.raises(RunDirError, match=f"{broken / 'metrics.json'}: cannot read it"):
        read_run(broken)
