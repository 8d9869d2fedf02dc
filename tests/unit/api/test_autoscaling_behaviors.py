"""HPA behavior defaults: what the API server stores and what the controller
scales by come from one definition."""

from __future__ import annotations

from nodeless.api import autoscalingbehaviors


def test_a_partial_direction_is_completed_with_upstreams_defaults() -> None:
    given = {"stabilizationWindowSeconds": 60, "selectPolicy": None}

    rules = autoscalingbehaviors.completed(given, autoscalingbehaviors.scale_up_defaults())

    assert rules == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }
    assert given == {"stabilizationWindowSeconds": 60, "selectPolicy": None}


def test_scale_down_leaves_its_window_to_the_controller() -> None:
    rules = autoscalingbehaviors.completed(None, autoscalingbehaviors.scale_down_defaults())

    assert "stabilizationWindowSeconds" not in rules
    assert rules["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 15}]


def test_completed_rules_share_nothing_with_what_they_came_from() -> None:
    policies = [{"type": "Pods", "value": 1, "periodSeconds": 60}]

    rules = autoscalingbehaviors.completed(
        {"policies": policies}, autoscalingbehaviors.scale_up_defaults()
    )
    rules["policies"][0]["value"] = 9

    assert policies[0]["value"] == 1
