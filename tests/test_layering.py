"""The library floors stay free of the engine: importing ``reid_robust.losses`` or ``reid_robust.evaluation``
in a fresh interpreter loads no ``engine``, ``analysis`` or ``cli`` module (issue 13)."""
import json
import subprocess
import sys

import pytest

UPPER_FLOORS = ("reid_robust.engine", "reid_robust.analysis", "reid_robust.cli")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.startswith("reid_robust"))))
"""


def loaded_modules(package: str) -> list[str]:
    """The ``reid_robust`` modules a fresh interpreter holds after importing ``package``."""
    result = subprocess.run([sys.executable, "-c", PROBE, package], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", ["reid_robust.losses", "reid_robust.evaluation"])
def test_library_floors_import_nothing_from_the_engine(package):
    loaded = loaded_modules(package)
    assert package in loaded
    upper = [name for name in loaded if name.startswith(UPPER_FLOORS)]
    assert upper == [], f"importing {package} loads {upper}"


def test_the_probe_sees_an_engine_import():
    """The check can fail: importing the engine shows up in the probe's module list."""
    assert any(name.startswith("reid_robust.engine") for name in loaded_modules("reid_robust.engine.checkpoint"))
