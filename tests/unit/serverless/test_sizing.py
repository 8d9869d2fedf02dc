"""Sizing a pod, row by row of serverless.md's rules, against the packaged catalogue."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from nodeless.api import errors
from nodeless.serverless import catalogue, sizing

CATALOGUE = catalogue.Catalogue.load()


def c(
    cpu: object = None,
    memory: object = None,
    *,
    cpu_limit: object = None,
    memory_limit: object = None,
    gpu: object = None,
    ignored: bool = False,
    restart: str | None = None,
) -> dict[str, Any]:
    """A container requesting ``cpu``/``memory`` and limited to ``*_limit``/``gpu``."""
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    limits = {
        k: v
        for k, v in (("cpu", cpu_limit), ("memory", memory_limit), ("nvidia.com/gpu", gpu))
        if v is not None
    }
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    if resources:
        container["resources"] = resources
    if ignored:
        container["env"] = [{"name": "__ECI_RESOURCE_IGNORE__", "value": "TRUE"}]
    if restart:
        container["restartPolicy"] = restart
    return container


def pod(
    *containers: dict[str, Any],
    init: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [c()]}
    if init:
        spec["initContainers"] = init
    if node_selector:
        spec["nodeSelector"] = node_selector
    metadata: dict[str, Any] = {"name": "p"}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec}


SIZING_ROWS = [
    # (id, pod, candidates, vcpu, memory GiB, gpus, source)
    ("nothing requested gets 2/4", pod(c()), ["2-4Gi"], "2", "4", 0, "default"),
    ("no containers with resources", pod(c(), c()), ["2-4Gi"], "2", "4", 0, "default"),
    ("only requests", pod(c("1", "2Gi")), ["1-2Gi"], "1", "2", 0, "requests"),
    (
        "requests summed over containers",
        pod(c("500m", "512Mi"), c("500m", "512Mi")),
        ["1-2Gi"],
        "1",
        "1",
        0,
        "requests",
    ),
    ("only limits", pod(c(cpu_limit="2", memory_limit="4Gi")), ["2-4Gi"], "2", "4", 0, "limits"),
    (
        "limits summed over containers",
        pod(c(cpu_limit="1", memory_limit="2Gi"), c(cpu_limit=3, memory_limit="6Gi")),
        ["4-8Gi"],
        "4",
        "8",
        0,
        "limits",
    ),
    (
        "both: the limits win",
        pod(c("1", "2Gi", cpu_limit="2", memory_limit="4Gi")),
        ["2-4Gi"],
        "2",
        "4",
        0,
        "limits",
    ),
    (
        "mixed: a limit here, only a request there",
        pod(c(cpu_limit="1", memory_limit="1Gi"), c("1", "1Gi")),
        ["2-2Gi"],
        "2",
        "2",
        0,
        "limits",
    ),
    (
        "init container dominating",
        pod(c("1", "2Gi"), init=[c("4", "8Gi")]),
        ["4-8Gi"],
        "4",
        "8",
        0,
        "requests",
    ),
    (
        "app containers dominating init",
        pod(c("1", "2Gi"), c("1", "2Gi"), init=[c("1", "1Gi"), c("2", "1Gi")]),
        ["2-4Gi"],
        "2",
        "4",
        0,
        "requests",
    ),
    (
        "init and app dominate different resources",
        pod(c("4", "1Gi"), init=[c("1", "16Gi")]),
        ["4-16Gi"],
        "4",
        "16",
        0,
        "requests",
    ),
    (
        "ECI resource-ignore sidecar excluded",
        pod(c("1", "2Gi"), c("4", "8Gi", ignored=True)),
        ["1-2Gi"],
        "1",
        "2",
        0,
        "requests",
    ),
    (
        "only ignored containers set resources: default",
        pod(c(), c("4", "8Gi", ignored=True)),
        ["2-4Gi"],
        "2",
        "4",
        0,
        "default",
    ),
    (
        "native sidecar init container adds to the app containers",
        pod(c("1", "2Gi"), init=[c("1", "2Gi", restart="Always")]),
        ["2-4Gi"],
        "2",
        "4",
        0,
        "requests",
    ),
    (
        "init container after a native sidecar runs beside it",
        pod(c("500m", "512Mi"), init=[c("1", "1Gi", restart="Always"), c("2", "2Gi")]),
        ["4-4Gi"],
        "3",
        "3",
        0,
        "requests",
    ),
    ("7/13 rounds up to 8/16", pod(c("7", "13Gi")), ["8-16Gi"], "7", "13", 0, "requests"),
    ("smallest spec", pod(c("250m", "512Mi")), ["0.25-0.5Gi"], "0.25", "0.5", 0, "requests"),
    ("64/512 exactly", pod(c("64", "512Gi")), ["64-512Gi"], "64", "512", 0, "requests"),
    (
        "64 vCPU split over containers",
        pod(c(cpu_limit="32", memory_limit="128Gi"), c(cpu_limit="32", memory_limit="128Gi")),
        ["64-256Gi"],
        "64",
        "256",
        0,
        "limits",
    ),
    ("memory-heavy 1/30Gi", pod(c("1", "30Gi")), ["4-32Gi"], "1", "30", 0, "requests"),
    ("cpu alone", pod(c("250m")), ["0.25-0.5Gi"], "0.25", "0", 0, "requests"),
    ("memory alone", pod(c(memory="8Gi")), ["1-8Gi"], "0", "8", 0, "requests"),
    ("decimal cpu adds exactly", pod(c("0.1"), c("0.2")), ["0.5-1Gi"], "0.3", "0", 0, "requests"),
    ("integer cpu from YAML", pod(c(2, "4Gi")), ["2-4Gi"], "2", "4", 0, "requests"),
    ("decimal-SI memory 1G", pod(c("250m", "1G")), ["0.25-1Gi"], "0.25", None, 0, "requests"),
    ("memory in bytes", pod(c("250m", "1073741824")), ["0.25-1Gi"], "0.25", "1", 0, "requests"),
    ("memory exponent 1e9", pod(c("250m", "1e9")), ["0.25-1Gi"], "0.25", None, 0, "requests"),
    (
        "GPU selects a GPU type",
        pod(c(cpu_limit="2", memory_limit="8Gi", gpu=1)),
        ["gpu-1xT4"],
        "2",
        "8",
        1,
        "limits",
    ),
    ("GPU alone", pod(c(gpu="1")), ["gpu-1xT4"], "2", "4", 1, "default"),
    ("3 GPUs round up to 4", pod(c(gpu=3)), ["gpu-4xT4"], "2", "4", 3, "default"),
    (
        "GPU type from the node selector",
        pod(c(gpu=2), node_selector={"nodeless.dev/gpu-type": "A10"}),
        ["gpu-2xA10"],
        "2",
        "4",
        2,
        "default",
    ),
    (
        "GPU pod with a lot of memory",
        pod(c("4", "100Gi", gpu=1)),
        ["gpu-4xA10"],
        "4",
        "100",
        1,
        "requests",
    ),
    (
        "instance-specs annotation lists the specs to try, in order",
        pod(c("1", "1Gi"), annotations={"nodeless.dev/instance-specs": "4-8Gi,2-4Gi"}),
        ["4-8Gi", "2-4Gi"],
        "1",
        "1",
        0,
        "annotation",
    ),
    (
        "eci-use-specs alias, written back form and a GPU type",
        pod(c(), annotations={"k8s.aliyun.com/eci-use-specs": "2.0-4.0Gi, gpu-1xT4"}),
        ["2-4Gi", "gpu-1xT4"],
        "2",
        "4",
        0,
        "annotation",
    ),
    (
        "canonical annotation wins over the alias",
        pod(
            c(),
            annotations={
                "nodeless.dev/instance-specs": "8-16Gi",
                "k8s.aliyun.com/eci-use-specs": "2-4Gi",
            },
        ),
        ["8-16Gi"],
        "2",
        "4",
        0,
        "annotation",
    ),
]


@pytest.mark.parametrize(
    ("pod_", "candidates", "vcpu", "memory", "gpus", "source"),
    [row[1:] for row in SIZING_ROWS],
    ids=[row[0] for row in SIZING_ROWS],
)
def test_pod_is_sized_by_the_reference_rules(
    pod_: dict[str, Any],
    candidates: list[str],
    vcpu: str,
    memory: str | None,
    gpus: int,
    source: str,
) -> None:
    result = sizing.size_pod(pod_, CATALOGUE)
    assert [s.name for s in result.candidates] == candidates
    assert result.spec is result.candidates[0]
    assert result.vcpu == Decimal(vcpu)
    if memory is not None:
        assert result.memory_gib == Decimal(memory)
    assert result.gpus == gpus
    assert result.source == source


ERROR_ROWS = [
    # (id, pod, field, words in the message)
    (
        "over 64 vCPU in one container",
        pod(c(cpu_limit="65")),
        "spec.containers[0].resources.limits.cpu",
        ['Invalid value: "65"', "65 vCPU", "64 vCPU"],
    ),
    (
        "over 64 vCPU across containers names the largest",
        pod(c("30"), c("35")),
        "spec.containers[1].resources.requests.cpu",
        ['"35"', "65 vCPU"],
    ),
    (
        "over 64 vCPU in an init container",
        pod(c("1"), init=[c("64500m")]),
        "spec.initContainers[0].resources.requests.cpu",
        ["64.5 vCPU"],
    ),
    (
        "memory no spec offers",
        pod(c("1", memory_limit="600Gi")),
        "spec.containers[0].resources.limits.memory",
        ["600 GiB", "largest instance spec offers 512 GiB"],
    ),
    (
        "more GPUs than any type has",
        pod(c(gpu=16)),
        "spec.containers[0].resources.limits.nvidia.com/gpu",
        ["16 GPUs", "offers 8"],
    ),
    (
        "GPU type that has no count this large",
        pod(c(gpu=8), node_selector={"nodeless.dev/gpu-type": "T4"}),
        "spec.containers[0].resources.limits.nvidia.com/gpu",
        ["8 T4 GPUs", "offers 4"],
    ),
    (
        "GPU type too small for the memory",
        pod(c("1", "100Gi", gpu=1), node_selector={"nodeless.dev/gpu-type": "T4"}),
        "spec.containers[0].resources.requests.memory",
        ["100 GiB", "offers 60 GiB"],
    ),
    (
        "unknown GPU type",
        pod(c(gpu=1), node_selector={"nodeless.dev/gpu-type": "H100"}),
        "spec.nodeSelector[nodeless.dev/gpu-type]",
        ['Unsupported value: "H100"', '"A10", "A100", "T4"'],
    ),
    (
        "malformed quantity",
        pod(c("two")),
        "spec.containers[0].resources.requests.cpu",
        ['Invalid value: "two"', "quantities must match"],
    ),
    (
        "negative quantity",
        pod(c(memory="-1Gi")),
        "spec.containers[0].resources.requests.memory",
        ["must be greater than or equal to 0"],
    ),
    (
        "fraction of a GPU",
        pod(c(gpu="0.5")),
        "spec.containers[0].resources.limits.nvidia.com/gpu",
        ["whole number of GPUs"],
    ),
    (
        "unknown spec in the annotation",
        pod(c(), annotations={"k8s.aliyun.com/eci-use-specs": "2-4Gi,3-5Gi"}),
        "metadata.annotations[k8s.aliyun.com/eci-use-specs]",
        ['unknown instance spec "3-5Gi"'],
    ),
]


@pytest.mark.parametrize(
    ("pod_", "field", "words"),
    [row[1:] for row in ERROR_ROWS],
    ids=[row[0] for row in ERROR_ROWS],
)
def test_impossible_pod_is_invalid_naming_the_field(
    pod_: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(errors.StatusError) as caught:
        sizing.size_pod(pod_, CATALOGUE)
    status = caught.value
    assert (status.code, status.reason, status.kind, status.name) == (422, "Invalid", "Pod", "p")
    assert [cause.field for cause in status.causes] == [field]
    for word in words:
        assert word in status.causes[0].message


def test_annotation_does_not_lift_the_64_vcpu_limit() -> None:
    big = pod(c("65"), annotations={"nodeless.dev/instance-specs": "64-512Gi"})
    with pytest.raises(errors.StatusError) as caught:
        sizing.size_pod(big, CATALOGUE)
    assert [cause.field for cause in caught.value.causes] == [
        "spec.containers[0].resources.requests.cpu"
    ]


def test_errors_name_fields_under_a_pod_template() -> None:
    template = pod(c(cpu_limit="65"), annotations={"nodeless.dev/instance-specs": "1-1Gi"})
    with pytest.raises(errors.StatusError) as caught:
        sizing.size_pod(
            template,
            CATALOGUE,
            path="spec.template.spec",
            annotations_path="spec.template.metadata.annotations",
        )
    assert {cause.field for cause in caught.value.causes} == {
        "spec.template.spec.containers[0].resources.limits.cpu",
        "spec.template.metadata.annotations[nodeless.dev/instance-specs]",
    }
