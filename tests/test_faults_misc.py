"""Bad input gives one line naming the file (issue 12): config files that are not UTF-8, not YAML, not a mapping
or with a broken ``_BASE_``; checkpoint configs that lack a section; ``--out`` that is a file; dataset index
files whose entries point outside the dataset (``..``, absolute paths, symbolic links).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_cars_sop import CARS, write_images, write_sop
from test_data_cub import write_cub_tree
from test_data_msmt17 import write_msmt_tree

from reid_robust.data import build_dataset
from reid_robust.engine.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_misc_tool", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line_error(capsys, code: int) -> str:
    """The tool exited non-zero with exactly one line on stderr; returns that line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---- config files -------------------------------------------------------------------------------------------

BAD_CONFIGS = {  # file name: (bytes, words the one line must hold besides the file name)
    "latin1.yaml": (b"seed: 1\n# caf\xe9\n", "not UTF-8"),
    "broken.yaml": (b"train:\n  epochs: [1,\n", "not valid YAML (line"),
    "nul.yaml": (b"seed: 1\n\x00\n", "not valid YAML"),
    "list.yaml": (b"- 1\n- 2\n", "top level must be a mapping"),
    "base_number.yaml": (b"_BASE_: 5\n", "_BASE_ must be the path of one YAML file"),
    "base_missing.yaml": (b"_BASE_: nowhere.yaml\n", "_BASE_ file not found"),
    "loop_a.yaml": (b"_BASE_: loop_b.yaml\n", "loops back"),
    "data_null.yaml": (b"data: null\n", "'data' is a section"),
    "model_scalar.yaml": (b"model: resnet50\n", "'model' is a section"),
}


@pytest.fixture
def bad_configs(tmp_path) -> Path:
    for name, (content, _) in BAD_CONFIGS.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "loop_b.yaml").write_text("_BASE_: loop_a.yaml\n")
    return tmp_path


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_file_is_one_config_error_naming_the_file(bad_configs, name):
    with pytest.raises(ConfigError) as info:
        load_config(bad_configs / name)
    message = str(info.value)
    assert "\n" not in message and BAD_CONFIGS[name][1] in message
    assert name in message or "loop_b.yaml" in message  # the loop is reported by the file that closes it


def test_base_loop_message_shows_the_chain(bad_configs):
    with pytest.raises(ConfigError, match=r"loop_a.yaml -> .*loop_b.yaml -> .*loop_a.yaml"):
        load_config(bad_configs / "loop_a.yaml")


def test_a_folder_as_config_and_an_empty_config(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give a YAML file"):
        load_config(tmp_path)
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_config(tmp_path / "empty.yaml").seed == 0


def test_section_override_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"command line: 'data' is a section"):
        load_config(None, ["data=null"])


@pytest.mark.parametrize("name", ["latin1.yaml", "broken.yaml", "data_null.yaml", "loop_a.yaml"])
def test_train_tool_reports_a_bad_config_in_one_line(bad_configs, name, capsys):
    line = _one_line_error(capsys, _tool("train_reid").main(["--config", str(bad_configs / name)]))
    assert "yaml" in line and BAD_CONFIGS[name][1] in line


# ---- checkpoint configs that lack a section -----------------------------------------------------------------

@pytest.fixture(scope="module")
def section_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny resnet18 checkpoint whose config lacks 'data', one whose 'data' is None, one without 'model'."""
    from reid_robust.engine.builders import build_model_from_config
    from reid_robust.engine.checkpoint import atomic_save

    cfg = load_config(None, ["model.backbone=resnet18", "model.embedding_dim=8", "data.transforms.size=[32, 16]"])
    state = build_model_from_config(cfg.model).state_dict()
    out = {}
    for name, change in (("no_data", lambda c: c.pop("data")), ("data_none", lambda c: c.update(data=None)),
                         ("no_model", lambda c: c.pop("model"))):
        config = cfg.to_dict()
        change(config)
        folder = tmp_path_factory.mktemp(name)  # no config.yaml beside it: the audit reads the checkpoint's
        atomic_save({"model": state, "config": config, "epoch": 1}, folder / "ckpt.pth")
        out[name] = folder / "ckpt.pth"
    return out


@pytest.mark.parametrize("case, missing", [("no_data", "data"), ("data_none", "data"), ("no_model", "model")])
@pytest.mark.parametrize("tool, argv", [
    ("export", ["--format", "npz", "--split", "query", "--out", "{tmp}/q.npz"]),
    ("export", ["--format", "torchscript", "--size", "32", "16", "--out", "{tmp}/m.pt"]),
    ("audit_labels", ["--out", "{tmp}/audit"]),
    ("eval", []),
])
def test_checkpoint_config_without_a_section_names_file_and_key(section_checkpoints, case, missing, tool, argv,
                                                                 tmp_path, capsys):
    ckpt = section_checkpoints[case]
    args = ["--checkpoint", str(ckpt)] + [a.format(tmp=tmp_path) for a in argv]
    line = _one_line_error(capsys, _tool(tool).main(args))
    assert str(ckpt) in line and f"'{missing}'" in line
    assert line not in (f"error: '{missing}'", f"error: {missing}")


# ---- --out that is a file -----------------------------------------------------------------------------------

def test_audit_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    code = _tool("audit_labels").main(["--checkpoint", str(tmp_path / "any.pth"), "--out", str(tmp_path / "taken")])
    assert _one_line_error(capsys, code) == f"error: --out {tmp_path / 'taken'} is a file; give a folder"
    code = _tool("audit_labels").main(["--checkpoint", str(tmp_path / "any.pth"), "--out",
                                       str(tmp_path / "taken" / "sub")])
    assert "taken is a file" in _one_line_error(capsys, code)
    assert (tmp_path / "taken").read_text() == "not a folder"


@pytest.mark.parametrize("extra", [[], ["--collect-only"]])
def test_sweep_out_that_is_a_file(tmp_path, capsys, extra):
    (tmp_path / "taken").write_text("not a folder")
    code = _tool("noise_sweep").main(["--config", QUICKSTART, "--out", str(tmp_path / "taken"), "--losses", "triplet",
                                      "--rates", "0", "--modes", "symmetric", "--seeds", "0", "--no-progress", *extra])
    assert _one_line_error(capsys, code) == f"error: --out {tmp_path / 'taken'} is a file; give a folder"
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_export_out_inside_a_file_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(SystemExit) as info:  # an argument error (argparse: usage line, then the error)
        _tool("export").main(["--checkpoint", str(tmp_path / "any.pth"), "--format", "onnx", "--out",
                              str(tmp_path / "taken" / "m.onnx")])
    assert info.value.code == 2
    assert f"{tmp_path / 'taken'} is a file; give a folder" in capsys.readouterr().err.strip().splitlines()[-1]


# ---- dataset index files whose entries leave the dataset ----------------------------------------------------

@pytest.fixture
def outside_image(tmp_path) -> Path:
    """A real image outside every dataset root: without the check, a loader would read and train on it."""
    path = tmp_path / "elsewhere" / "secret.jpg"
    path.parent.mkdir()
    Image.new("RGB", (20, 10)).save(path)
    return path


def _escapes(base: Path, target: Path) -> dict[str, str]:
    """Entries relative to ``base`` (the folder an index file's paths are relative to) that reach ``target``:
    '..', absolute, and a file link and a folder link planted in ``base``."""
    os.symlink(target, base / "link.jpg")
    os.symlink(target.parent, base / "linkdir")
    return {"dotdot": os.path.relpath(target, base), "absolute": str(target), "file_link": "link.jpg",
            "dir_link": f"linkdir/{target.name}"}


def _rewrite_line(path: Path, line_no: int, entry: str, field: int) -> None:
    lines = path.read_text().splitlines()
    fields = lines[line_no - 1].split()
    fields[field] = entry
    lines[line_no - 1] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")


KINDS = ["dotdot", "absolute", "file_link", "dir_link"]


@pytest.mark.parametrize("kind", KINDS)
def test_cub_images_txt_entry_outside_the_root(tmp_path, outside_image, kind):
    root = write_cub_tree(tmp_path / "cub")
    entry = _escapes(root / "images", outside_image)[kind]
    _rewrite_line(root / "images.txt", 2, entry, 1)
    with pytest.raises(ValueError) as info:
        build_dataset("cub200", root)
    assert f"images.txt:2: entry {entry!r}" in str(info.value) and "\n" not in str(info.value)
    assert ("absolute path" if kind == "absolute" else "points outside") in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_cars_text_list_entry_outside_the_root(tmp_path, outside_image, kind):
    root = tmp_path / "cars"
    write_images(root, [p for p, _ in CARS])
    entry = _escapes(root, outside_image)[kind]
    (root / "cars_annos.txt").write_text("".join(f"{p} {c}\n" for p, c in CARS[:3] + [(entry, 3)] + CARS[4:]))
    with pytest.raises(ValueError, match=rf"cars_annos.txt:4: entry '{entry}'"):
        build_dataset("cars196", root)


def test_cars_mat_entry_outside_the_root(tmp_path, outside_image):
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "cars"
    write_images(root, [p for p, _ in CARS])
    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
             ("class", "O")]
    rows = [(p, 1, 1, 5, 5, c) for p, c in CARS]
    rows[1] = ("../elsewhere/secret.jpg", 1, 1, 5, 5, 1)
    scipy_io.savemat(root / "cars_annos.mat", {"annotations": np.array(rows, dtype=dtype)})
    with pytest.raises(ValueError, match=r"cars_annos.mat: annotation 2: entry '../elsewhere/secret.jpg'"):
        build_dataset("cars196", root)


@pytest.mark.parametrize("kind", KINDS)
def test_sop_list_entry_outside_the_root(tmp_path, outside_image, kind):
    root = write_sop(tmp_path / "sop")
    entry = _escapes(root, outside_image)[kind]
    _rewrite_line(root / "Ebay_test.txt", 3, entry, 3)
    with pytest.raises(ValueError, match=rf"Ebay_test.txt:3: entry '{entry}'"):
        build_dataset("sop", root)


def test_msmt17_list_entry_outside_the_root(tmp_path, outside_image):
    root = write_msmt_tree(tmp_path / "msmt")
    _rewrite_line(root / "list_query.txt", 1, "../../elsewhere/0001_000_01_x_0_0.jpg", 0)
    (tmp_path / "elsewhere" / "0001_000_01_x_0_0.jpg").write_bytes(outside_image.read_bytes())
    with pytest.raises(ValueError, match=r"list_query.txt:1: entry '../../elsewhere/0001_000_01_x_0_0.jpg'"):
        build_dataset("msmt17", root)


def test_linked_dataset_root_and_linked_image_folder_still_load(tmp_path):
    """A root that is a link, and links that stay inside the root, are fine (only escapes are refused)."""
    write_cub_tree(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert len(build_dataset("cub200", tmp_path / "alias").train) == 3
    moved = tmp_path / "moved_images"
    (tmp_path / "real" / "images").rename(moved)
    os.symlink(moved, tmp_path / "real" / "images")  # images/ on another disk: entries are inside images/
    assert len(build_dataset("cub200", tmp_path / "real").gallery) == 4
    root = write_sop(tmp_path / "sop")
    os.symlink(root / "chair_final", root / "chairs")
    _rewrite_line(root / "Ebay_test.txt", 4, "chairs/444_0.JPG", 3)
    assert build_dataset("sop", root).query[-1].path == str(root / "chairs" / "444_0.JPG")
