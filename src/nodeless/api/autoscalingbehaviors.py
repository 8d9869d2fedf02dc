"""An HorizontalPodAutoscaler's ``spec.behavior`` defaults (upstream's
``SetDefaults_HorizontalPodAutoscalerBehavior``): the API server completes a
given behavior with them when it stores one, and the controller completes an
absent or partial one the same way when it scales. One definition for both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodeless.api import values

Obj = dict[str, Any]


def scale_up_defaults() -> Obj:
    return {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }


def scale_down_defaults() -> Obj:
    """The window is left unset: the controller's downscale stabilisation
    (300 s) fills it, as upstream's flag does."""
    return {
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }


def completed(given: Any, defaults: Obj) -> Obj:
    """One direction's rules: every field ``given`` sets, the defaults for the
    rest (upstream's ``copyHPAScalingRules``). A copy: ``given`` is left alone."""
    rules = values.clone(defaults)
    if isinstance(given, Mapping):
        rules.update({k: values.clone(v) for k, v in given.items() if v is not None})
    return rules
