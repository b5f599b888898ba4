"""Config loading: defaults, _BASE_ inheritance, overrides, refusal of unknown keys with a suggestion; the typed
sections (attribute access, frozen, validated when built in Python); checkpoint mappings of other versions."""
import re
from pathlib import Path

import pytest

from reid_robust.config import (
    Config,
    ConfigError,
    LossTermConfig,
    SamplerConfig,
    TrainConfig,
    TransformConfig,
    config_from_mapping,
    load_config,
    save_config,
    with_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.loss.terms
    assert cfg.train.epochs >= 1


def test_overrides_are_typed_and_applied():
    cfg = load_config(ROOT / "configs/quickstart.yaml", ["output_dir=/tmp/x", "train.epochs=1",
                                                          "model.pretrained=null", "train.lr=0.01"])
    assert cfg.output_dir == "/tmp/x" and cfg.train.epochs == 1
    assert cfg.model.pretrained is None and cfg.train.lr == 0.01


def test_misspelt_key_is_refused_with_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"train\.epohcs.*did you mean 'train\.epochs'"):
        load_config(ROOT / "configs/quickstart.yaml", ["train.epohcs=1"])


def test_misspelt_key_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.backbon.*model\.backbone"):
        load_config(bad)


@pytest.mark.parametrize("override, match", [
    ("train.epochs=abc", "train.epochs' must be an integer"),
    ("train.amp=maybe", "train.amp' must be true or false"),
    ("data.noise.mode=banana", "data.noise.mode' must be one of"),
    ("train.optimizer=rmsprop", "train.optimizer' must be one of"),
    ("noequals", "key=value"),
])
def test_bad_values_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ROOT / "configs/quickstart.yaml", [override])


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ntrain:\n  epochs: 7\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_config(tmp_path / "child.yaml", ["seed=4"])
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr) == (4, 9, 0.5)


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_loss_terms_are_validated():
    with pytest.raises(ConfigError, match="input"):
        load_config(None, ["loss.terms=[{name: triplet, input: logits}]"])
    with pytest.raises(ConfigError, match="weight"):
        load_config(None, ["loss.terms=[{name: triplet, weight: heavy}]"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs/market1501/osm_caa_r50.yaml")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_dotted_override_reaches_inside_a_free_form_mapping():
    cfg = load_config(None, ["data.options={num_identities: 20, seed: 3}", "data.options.num_identities=50"])
    assert cfg.data.options == {"num_identities": 50, "seed": 3}
    cfg = load_config(None, ["sweep.presets.osm_caa.margin=1.0", "sweep.presets.osm_caa.sigma_caa=0.5"])
    assert cfg.sweep.presets == {"osm_caa": {"margin": 1.0, "sigma_caa": 0.5}}
    with pytest.raises(ConfigError, match="unknown config key 'data.optionz.x'"):
        load_config(None, ["data.optionz.x=1"])


@pytest.mark.parametrize("override, message", [
    ("data.noise.rate=-0.2", "'data.noise.rate' must be in [0, 1], got -0.2"),
    ("data.noise.rate=1.5", "'data.noise.rate' must be in [0, 1], got 1.5"),
    ("train.epochs=-1", "'train.epochs' must be >= 0, got -1"),
    ("train.lr=-1", "'train.lr' must be > 0, got -1"),
    ("train.loss_lr=0", "'train.loss_lr' must be > 0"),
    ("eval.every=-2", "'eval.every' must be >= 0"),
    ("data.sampler.num_instances=0", "'data.sampler.num_instances' must be >= 1"),
    ("model.last_stride=3", "'model.last_stride' must be 1 or 2"),
    ("train.momentum=1.0", "'train.momentum' must be in [0, 1)"),
])
def test_values_outside_their_range_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("loss.terms=[{name: tripplet}]", "loss.terms[0] (tripplet): unknown loss 'tripplet' (did you mean 'triplet'?)"),
    ("loss.terms=[{name: triplet, margn: 0.3}]",
     "loss.terms[0] (triplet): unknown parameter(s) margn (did you mean 'margin'?)"),
    ("model.backbone=resnet19", "model.backbone: unknown backbone 'resnet19' (did you mean"),
    ("model.pretrained=/nowhere/r50.pth", "model.pretrained: file not found: /nowhere/r50.pth"),
    ("model.pretrained=5", "'model.pretrained' must be a path (a string) or null, got 5"),
    ("train.resume=[a]", "'train.resume' must be a path (a string) or null"),
    ("train.loss_lr=fast", "'train.loss_lr' must be a number or null, got 'fast'"),
    ("device=gpu", "device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
    ("train.milestones=[a]", "'train.milestones[0]' must be an integer, got 'a'"),
    ("train.milestones=[0, 4]", "'train.milestones' must be >= 1, got [0, 4]"),
    ("train.milestones=[70, 40]", "train.milestones: must be increasing epoch numbers >= 1"),
    ("data.dataset=market1502", "data.dataset: unknown dataset 'market1502' (did you mean 'market1501'?)"),
    ("data.options={num_identitis: 5}", "data.options.num_identitis: dataset 'synthetic_market' has no option"),
    ("data.sampler={num_instancs: 8}", "unknown config key 'data.sampler.num_instancs' (did you mean "
                                       "'data.sampler.num_instances'?)"),
])
def test_losses_backbone_and_weights_are_checked_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_exponent_numbers_and_whole_sections_on_the_command_line():
    cfg = load_config(None, ["train.lr=1e-3", "train.loss_lr=2E-4", "train.weight_decay=5e-4",
                             "data.sampler={num_identities: 8, num_instances: 8}"])
    assert cfg.train.lr == 1e-3 and cfg.train.loss_lr == 2e-4 and cfg.train.weight_decay == 5e-4
    assert cfg.data.sampler == SamplerConfig(num_identities=8, num_instances=8, batches_per_epoch=0)


def test_tensorboard_package_is_checked_when_asked_for(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=re.escape("train.tensorboard: the tensorboard package is not installed")):
        load_config(None, ["train.tensorboard=true"])
    load_config(None, ["train.tensorboard=false"])


def test_paths_of_a_run_are_made_absolute(tmp_path, monkeypatch):
    from reid_robust.config import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=data/market", "data.noise.list=lists/noisy.txt", "output_dir=runs/x"])
    resolved = with_absolute_paths(cfg)
    assert resolved.data.root == str(tmp_path / "data" / "market")
    assert resolved.data.noise.list == str(tmp_path / "lists" / "noisy.txt")
    assert resolved.model.pretrained is None and resolved.output_dir == "runs/x"
    assert cfg.data.root == "data/market"  # the input is not modified


# ---- the typed sections ---------------------------------------------------------------------------------------

def test_sections_are_frozen_and_read_by_attribute():
    import dataclasses

    cfg = load_config(ROOT / "configs/quickstart.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    lr = cfg.train.lr
    changed = with_overrides(cfg, {"train.lr": 0.5, "eval.flip": True})
    assert (changed.train.lr, changed.eval.flip, cfg.train.lr, cfg.eval.flip) == (0.5, True, lr, False)
    assert with_overrides(cfg, ["eval.flip=true"]).eval.flip is True
    with pytest.raises(ConfigError, match=re.escape("command line: 'train.lr' must be > 0")):
        with_overrides(cfg, {"train.lr": 0})


@pytest.mark.parametrize("build, message", [
    (lambda: TrainConfig(lr=-1), "'train.lr' must be > 0, got -1"),
    (lambda: TrainConfig(optimizer="rmsprop"), "'train.optimizer' must be one of sgd, adam, adamw"),
    (lambda: TrainConfig(milestones=(70, 40)), "train.milestones: must be increasing"),
    (lambda: SamplerConfig(num_instances=0), "'data.sampler.num_instances' must be >= 1"),
    (lambda: TransformConfig(flip=2), "'data.transforms.flip' must be in [0, 1], got 2"),
    (lambda: TransformConfig(erasing_scale=(0.5, 0.1)), "'data.transforms.erasing_scale' must be [lo, hi]"),
    (lambda: LossTermConfig("triplet", params={"margn": 0.3}), "unknown parameter(s) margn (did you mean 'margin'?)"),
    (lambda: Config(device="gpu"), "device: 'gpu' is not a device"),
])
def test_each_section_validates_when_built_in_python(build, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_a_bad_transform_value_is_refused_at_load():
    """``data.transforms.flip=2`` used to pass --print-config and fail only when the transforms were built."""
    with pytest.raises(ConfigError, match=re.escape("command line: 'data.transforms.flip' must be in [0, 1], got 2")):
        load_config(ROOT / "configs/quickstart.yaml", ["data.transforms.flip=2"])


def test_pair_losses_need_two_instances_and_classification_does_not():
    with pytest.raises(ConfigError, match=r"num_instances=1 gives no positive pairs, which loss.terms\[0\] \(triplet"):
        load_config(None, ["data.sampler.num_instances=1"])
    cfg = load_config(None, ["data.sampler.num_instances=1", "loss.terms=[{name: cross_entropy, input: bn_feat}]"])
    assert cfg.data.sampler.num_instances == 1


def test_checkpoint_mapping_of_another_version_loads():
    """A stored mapping with a key removed since is dropped with a notice; a key added since takes its default."""
    stored = load_config(ROOT / "configs/quickstart.yaml").to_dict()
    stored["train"]["old_knob"] = 3
    del stored["train"]["overwrite"]
    del stored["data"]["transforms"]
    notices: list[str] = []
    cfg = config_from_mapping(stored, "checkpoint c.pth", notices.append)
    assert notices == ["checkpoint c.pth: ignoring config keys this version no longer has: train.old_knob"]
    assert cfg.train.overwrite is False and cfg.data.transforms == TransformConfig()
    assert cfg.train.lr == load_config(ROOT / "configs/quickstart.yaml").train.lr
    assert config_from_mapping(cfg.to_dict(), "c") == cfg


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("data"), "checkpoint c.pth: its config has no 'data' section"),
    (lambda c: c.update(model=None), "checkpoint c.pth: its config's 'model' section is None, not a mapping"),
    (lambda c: c["train"].update(lr="fast"), "checkpoint c.pth: 'train.lr' must be a number, got 'fast'"),
])
def test_checkpoint_mapping_with_a_missing_section_or_bad_value_is_one_error(change, message):
    stored = load_config(None).to_dict()
    change(stored)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_mapping(stored, "checkpoint c.pth")


def test_resume_changes_sort_keys_into_applied_ignored_and_refused():
    from reid_robust.config import resume_changes

    saved = load_config(None)
    cfg = with_overrides(saved, {"train.lr": 0.01, "eval.flip": True, "data.num_workers": 0, "seed": 5,
                                 "loss.terms": [{"name": "triplet"}]})
    changes = resume_changes(saved, cfg)
    assert [k for k, _, _ in changes["applied"]] == ["eval.flip", "train.lr"]
    assert changes["ignored"] == [("data.num_workers", 2, 0)]
    assert [k for k, _, _ in changes["refused"]] == ["loss.terms", "seed"]
    assert resume_changes(saved, saved) == {"applied": [], "ignored": [], "refused": []}


def test_train_tool_prints_the_resolved_config_as_yaml_and_refuses_bad_values_first(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_reid_config_test", ROOT / "tools" / "train_reid.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    quickstart = str(ROOT / "configs/quickstart.yaml")
    assert tool.main(["--config", quickstart, "--print-config", "train.epochs=3"]) == 0
    (tmp_path / "printed.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "printed.yaml") == load_config(quickstart, ["train.epochs=3"])
    assert tool.main(["--config", quickstart, "--print-config", "data.transforms.flip=2"]) == 2
    assert capsys.readouterr().err == "error: command line: 'data.transforms.flip' must be in [0, 1], got 2\n"


def test_mypy_checks_config_access(tmp_path):
    """Config access is typed: a misspelt key or a wrong type is a mypy error, not a KeyError at run time."""
    api = pytest.importorskip("mypy.api")
    (tmp_path / "use.py").write_text("from reid_robust.config import Config\n\n\n"
                                     "def f(cfg: Config) -> int:\n"
                                     "    return cfg.train.lrr + cfg.data.sampler.num_instances\n\n\n"
                                     "def g(cfg: Config) -> str:\n"
                                     "    return cfg.train.lr\n")
    out, _, status = api.run([str(tmp_path / "use.py"), "--ignore-missing-imports", "--follow-imports=silent",
                              "--no-incremental", "--cache-dir", str(tmp_path / "cache")])
    assert status == 1, out
    assert '"TrainConfig" has no attribute "lrr"; maybe "lr"?' in out
    assert 'Incompatible return value type (got "float", expected "str")' in out and "Found 2 errors" in out
