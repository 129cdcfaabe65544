"""Initialisation: a fresh classifier's logits are small for any class count, so the first
training steps start at a cross-entropy of about ln(num_classes)."""

import math

import pytest
import torch
import torch.nn.functional as F

import mobilenets

ONE_PER_FAMILY = ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small_100",
                  "efficientnet_b0", "fd_mobilenet_025", "mobilenet_v4_conv_small_100"]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_initial_cross_entropy_at_10_classes_is_near_ln_10(name):
    """Train mode (BatchNorm on batch statistics, as in the first steps), random inputs and
    labels: the loss is within 0.5 of ln 10 = 2.30 (the reference code's uniform(+-1/sqrt(10))
    classifier gave ~7), for a fresh model and after reset_classifier."""
    torch.manual_seed(0)
    model = mobilenets.create_model(name, num_classes=10).train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
        model.reset_classifier(10)
        reset = F.cross_entropy(model(x), y).item()
    assert abs(loss - math.log(10)) < 0.5, loss
    assert abs(reset - math.log(10)) < 0.5, reset
