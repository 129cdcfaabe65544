"""``features_only`` taps against timm's: for every registered model timm also has (by our name
or an alias), ``out_indices=(0, 1, 2, 3, 4)`` gives timm's default five maps (channels and
reduction), and the index-4 map of a family with a head conv is as the architecture documents.

Models are built on the meta device (shapes only, no memory or initialisation cost); that our
taps are the maps the network computes is checked per model in test_battery.py.
"""

import pytest
import torch

import mobilenets
from mobilenets.models import get_entry

timm = pytest.importorskip("timm")

TIMM_INDICES = (0, 1, 2, 3, 4)    # timm's default out_indices


def timm_name(name):
    """The timm model with our architecture: our registered name or one of its aliases."""
    entry = get_entry(name)
    return next((n for n in (entry.name, *entry.aliases) if timm.is_model(n)), None)


PAIRS = [(n, timm_name(n)) for n in mobilenets.list_models(task="classification") if timm_name(n)]


def test_timm_covers_the_families_it_has():
    families = {get_entry(n).arch.family for n, _ in PAIRS}
    assert families == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "mobilenet_v4",
                        "efficientnet", "efficientnet_lite", "efficientnet_v2"}
    assert len(PAIRS) == 31


@pytest.mark.parametrize("name,timm_model", PAIRS)
def test_feature_info_matches_timm(name, timm_model):
    with torch.device("meta"):
        ref = timm.create_model(timm_model, pretrained=False, features_only=True)
        ours = mobilenets.create_model(name, features_only=True, out_indices=TIMM_INDICES)
    assert ours.feature_info.channels() == ref.feature_info.channels()
    assert ours.feature_info.reduction() == ref.feature_info.reduction()
    head, taps = ours.plan.head, ours.plan.taps     # every tap of the network
    if get_entry(name).arch.head_is_last_tap:
        # V3 and V4: the head conv (960; V3 Small 576, at width 1) is the /32 map, as timm's
        # last stage
        assert ours.feature_info[4].module == "head" and len(taps) == 5
    elif head is not None:
        # V2 / EfficientNet(V2): index 4 is the last block; the head conv is an extra index 5
        assert ours.feature_info[4].module != "head"
        assert taps[5].module == "head" and taps[5].channels == head.out
