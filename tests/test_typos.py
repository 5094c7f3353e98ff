"""A mistyped key or option is refused in one line naming the closest that exists, in single
runs and in every job of a sweep, with or without `+`, before anything is written: a key the run
does not read would otherwise be saved in its config as if it had been used."""

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.initialize import initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, compose_run, launch_here, tiny_overrides
from optqual.config.checks import check_config, dotted_keys
from optqual.errors import ConfigError
from optqual.launch.overrides import check_command


def all_group_options() -> list[tuple[str, str]]:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = [group for group in loader.list_groups("") if group not in ("hydra", "schema")]
        found = []
        while groups:
            group = groups.pop()
            found += [(group, option) for option in loader.get_group_options(group)]
            groups += [f"{group}/{inner}" for inner in loader.list_groups(group)]
    return sorted(found)


def refused(*argv: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check_command(list(argv))
    return str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("group, option", all_group_options())
def test_every_option_mistyped_is_refused_with_the_option_it_meant(group, option):
    if group in ("analysis", "effort"):
        pytest.skip("a group of `optqual analyze` (tests/test_analyze.py)")
    if group.startswith("regularizer/schedule"):
        pytest.skip("a subgroup chosen through its parent (regularizer/schedule@regularizer.schedule=...)")
    message = refused(f"{group}={option.upper()}x")
    assert message.startswith(f"{group}={option.upper()}x: no such option (did you mean {group}={option}?)"), message


def leaf_keys() -> list[str]:
    """The default run's keys a user sets: not interpolations, not nodes, names of 3 letters or more."""
    cfg = compose_run()

    def settable(key: str) -> bool:
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return (not OmegaConf.is_interpolation(node, name) and not name.startswith("_") and len(name) > 2
                and not OmegaConf.is_config(node[name]))

    return [key for key in dotted_keys(cfg) if settable(key)]


@pytest.mark.slow
@pytest.mark.parametrize("key", leaf_keys())
def test_every_key_mistyped_is_refused_with_the_key_it_meant(key):
    """A letter dropped from the key's own name, set as given and added with +."""
    parent, dot, name = key.rpartition(".")
    typo = f"{parent}{dot}{name[:-2]}{name[-1]}"
    message = refused(f"{typo}=1")
    assert message.startswith(f"{typo}=1: the run has no key {typo} (did you mean {key}=1?)"), message
    cfg = compose_run(f"+{typo}=1")
    with pytest.raises(ConfigError, match="did you mean"):
        check_config(cfg)


@pytest.mark.parametrize("argv, message", [
    (["+epoch=3"], "job #0 (+epoch=3 epochs=1 trackio.enabled=False seed=0): epoch=3: the run has no key epoch (did you mean epochs=3?)"),
    (["optimiser.lr=0.1"], "optimiser.lr=0.1: the run has no key optimiser.lr (did you mean optimizer.lr=0.1?)"),
    (["optimizer=sgd,adamW"], "job #1 (optimizer=adamW epochs=1 trackio.enabled=False seed=0): optimizer=adamW: no such option "
                              "(did you mean optimizer=adamw?)"),
    (["optimizer=sgd,adamw", "optimizer.momentum=0.5"], "job #1 (optimizer=adamw optimizer.momentum=0.5 epochs=1 "
                                                         "trackio.enabled=False seed=0): optimizer.momentum=0.5: the run has no key"),
])
def test_a_sweep_refuses_a_typo_in_any_job_before_the_first_starts(tmp_path, argv, message):
    result = launch_here(tmp_path, "-m", *argv, "epochs=1", "trackio.enabled=false", "seed=0")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert message in line, line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["+epoch=3"], "epoch=3: the run has no key epoch (did you mean epochs=3?)"),
    (["++epoch=3"], "epoch=3: the run has no key epoch (did you mean epochs=3?)"),
    (["epoch=3"], "epoch=3: the run has no key epoch (did you mean epochs=3?)"),
    (["optimizer=adamW"], "optimizer=adamW: no such option (did you mean optimizer=adamw?)"),
    (["optimiser.lr=0.1"], "optimiser.lr=0.1: the run has no key optimiser.lr (did you mean optimizer.lr=0.1?)"),
    (["+optimizer.l=0.1"], "optimizer.l=0.1: the run has no key optimizer.l (did you mean optimizer.lr=0.1?)"),
    (["optimizer=sam", "+optimizer.rhoo=0.1"], "optimizer.rhoo=0.1: the run has no key optimizer.rhoo (did you mean optimizer.rho=0.1?)"),
    (["+data.batch_sizee=64"], "data.batch_sizee=64: the run has no key data.batch_sizee (did you mean data.batch_size=64?)"),
    (["model=timm", "+model.drop_rat=0.1"], "model.drop_rat=0.1: the run has no key model.drop_rat"),
    (["~epoch"], "~epoch: the run has no key epoch (did you mean ~epochs?)"),
    (["~epochs"], "~epochs: a key of the run's schema cannot be removed; set it instead (epochs=...)"),
    (["experiment=he2061"], "experiment=he2061: no such option (did you mean experiment=he2016?)"),
])
def test_a_typo_is_one_line_naming_the_closest_key_and_nothing_is_written(tmp_path, tiny_npz, argv, message):
    result = launch_here(tmp_path, *argv, *tiny_overrides(tiny_npz))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()  # no search path listing, no HYDRA_FULL_ERROR hint
    assert line.startswith(f"optqual: error: {message}"), line
    assert not list(tmp_path.iterdir())
