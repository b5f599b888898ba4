"""Every command-line flag of the tools and benchmarks explains itself in --help."""
import argparse
import importlib.util
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.relative_to(REPO).as_posix() for d in ("tools", "benchmarks") for p in (REPO / d).glob("*.py"))


class _Captured(Exception):
    pass


def _parser_of(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script builds, captured when its main() parses arguments (nothing else runs)."""
    spec = importlib.util.spec_from_file_location(f"cli_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    captured = []

    def capture(self, *args, **kwargs):
        captured.append(self)
        raise _Captured

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr("sys.argv", [script])
    with pytest.raises(_Captured):
        module.main([]) if inspect.signature(module.main).parameters else module.main()
    return captured[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_has_help(script, monkeypatch):
    parser = _parser_of(script, monkeypatch)
    silent = [a.option_strings or [a.dest] for a in parser._actions
              if not a.help and a.dest != "help"]
    assert not silent, f"{script}: flags without help: {silent}"
    assert parser.description, f"{script}: no description"
