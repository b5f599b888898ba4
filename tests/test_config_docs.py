"""docs/config.md is generated from the config dataclasses (``python -m reid_robust.config.docs``): it cannot drift."""
from pathlib import Path

from reid_robust.config import VALID_KEYS
from reid_robust.config.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_the_generators_output():
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == render(), ("docs/config.md differs from the config dataclasses: regenerate it with "
                                   "`python -m reid_robust.config.docs > docs/config.md`")


def test_every_key_and_the_hand_written_sections_are_documented():
    text = render()
    assert all(f"| `{key}` |" in text for key in VALID_KEYS)
    for section in ("## Run folders", "## Resuming with changed keys", "## Divergence"):
        assert section in text
    assert "`train.warmup_epochs`, `train.warmup_factor`" in text  # the resume rows come from config.resume
