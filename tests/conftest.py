import os
import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that eval-mode
    outputs are O(1) and comparisons between runtimes are meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Real data sets (see ../shared/datasets/README.md): beside the checkout, or where
# MOBILENETS_SHARED_DATASETS points; tests that need them skip when they are absent.
SHARED_DATASETS = Path(os.environ.get("MOBILENETS_SHARED_DATASETS") or
                       Path(__file__).resolve().parents[2] / "shared" / "datasets")
