"""`pip install -e .` puts the six commands on PATH (issue 16): each installed command answers ``--help``.

The commands are looked up in the folder of this interpreter's environment first (a virtual environment's
``bin``, where pip writes them), then on PATH, so the test also runs without an activated environment.
"""
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

COMMANDS = {f"reid-{name}": f"reid_robust.cli.{name}:main"
            for name in ("train", "eval", "embed", "export", "sweep", "audit")}
REINSTALL = 'reinstall with `pip install -e ".[test]"` (or `make test`) to register the commands'


def installed_command(name: str) -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    assert found is not None, f"{name} is not on PATH nor in {Path(sys.executable).parent}: {REINSTALL}"
    return found


def test_the_distribution_declares_exactly_the_six_commands():
    scripts = {ep.name: ep.value for ep in metadata.distribution("reid_robust").entry_points
               if ep.group == "console_scripts"}
    assert scripts == COMMANDS, REINSTALL


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_installed_command_answers_help(name, tmp_path):
    result = subprocess.run([installed_command(name), "--help"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)  # outside the checkout: the installed package, not ./tools
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {name} "), result.stdout[:300]
    assert "Traceback" not in result.stderr
