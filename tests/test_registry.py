"""reid_robust.registry.Registry: the one registry helper behind LOSSES, the datasets and BACKBONES."""
import pytest

from reid_robust.data.registry import DATASETS
from reid_robust.losses import LOSSES
from reid_robust.models.registry import BACKBONES
from reid_robust.registry import Registry


def test_register_as_decorator_or_call_and_lookup_with_did_you_mean():
    reg: Registry[object] = Registry("widget")

    @reg.register("round")
    def round_widget():
        return 1

    reg.register("square", 2)
    assert reg.lookup("round") is round_widget and reg["square"] == 2 and reg.names() == ["round", "square"]
    with pytest.raises(ValueError, match=r"^unknown widget 'rund' \(did you mean 'round'\?\); valid names: round, square$"):
        reg.lookup("rund")
    with pytest.raises(ValueError, match=r"^unknown widget 3; valid names"):
        reg.lookup(3)


def test_duplicate_and_empty_names_are_refused_and_leave_the_registry_unchanged():
    reg: Registry[object] = Registry("widget")
    reg.register("round", len)
    with pytest.raises(ValueError, match=r"^widget name 'round' is already registered to len$"):
        reg.register("round", abs)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", abs)
    assert dict(reg) == {"round": len}


def test_copy_is_a_registry_of_its_own():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    twin = reg.copy()
    twin.register("b", 2)
    assert isinstance(twin, Registry) and twin.kind == "widget" and "b" not in reg


@pytest.mark.parametrize("registry", [LOSSES, DATASETS, BACKBONES], ids=["losses", "datasets", "backbones"])
def test_losses_datasets_and_backbones_share_the_helper(registry):
    assert isinstance(registry, Registry) and registry.names()
