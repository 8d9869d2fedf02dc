"""Zone choice, pure: selectors and affinity against the zones' node labels,
the zones annotation and its strategy, topology spread on the zone key,
candidate specs in order, and every spec's vCPU/memory counted against the
zone's quota."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from nodeless.instances import nodes
from nodeless.scheduler import placing
from nodeless.serverless import annotations as pod_annotations
from nodeless.serverless import catalogue, sizing

SPECS = catalogue.Catalogue.load()
ZONE_NAMES = ("zone-a", "zone-b", "zone-c")
ZONE_KEY = "topology.kubernetes.io/zone"


def spec(name: str) -> catalogue.Spec:
    found = SPECS.find(name)
    assert found is not None, name
    return found


def zone(
    name: str,
    *,
    max_instances: int = 100,
    max_vcpu: int = 1000,
    max_memory_gib: int = 4000,
    instances: int = 0,
    vcpu: str = "0",
    memory_gib: str = "0",
) -> placing.ZoneState:
    """A zone as the scheduler builds it: the labels of the zone's virtual node."""
    labels = nodes.node_object(nodes.Zone(name), "simulated", "")["metadata"]["labels"]
    return placing.ZoneState(
        name,
        labels,
        max_instances,
        Decimal(max_vcpu),
        Decimal(max_memory_gib),
        instances=instances,
        vcpu=Decimal(vcpu),
        memory_gib=Decimal(memory_gib),
    )


def zones(*names: str, **kwargs: Any) -> list[placing.ZoneState]:
    return [zone(n, **kwargs) for n in (names or ZONE_NAMES)]


def pod(
    name: str = "p",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    affinity: dict[str, Any] | None = None,
    spread: list[dict[str, Any]] | None = None,
    requests: dict[str, str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    if requests:
        container["resources"] = {"requests": requests}
    spec_: dict[str, Any] = {"containers": [container]}
    if node_selector:
        spec_["nodeSelector"] = node_selector
    if affinity:
        spec_["affinity"] = affinity
    if spread:
        spec_["topologySpreadConstraints"] = spread
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": spec_,
    }


def place(
    manifest: dict[str, Any],
    states: list[placing.ZoneState],
    rng: random.Random | None = None,
) -> placing.Placement | placing.Unschedulable:
    """What the scheduler decides for ``manifest``: options from its annotations,
    candidates from sizing, then ``placing.place``."""
    meta = manifest["metadata"]
    options = pod_annotations.PodOptions.from_annotations(
        meta.get("annotations") or {}, SPECS, [z.name for z in states]
    )
    candidates = sizing.size_pod(manifest, SPECS).candidates
    return placing.place(manifest, candidates, options, states, rng or random.Random(0))


def placed(outcome: placing.Placement | placing.Unschedulable) -> placing.Placement:
    assert isinstance(outcome, placing.Placement), outcome
    return outcome


def refused(outcome: placing.Placement | placing.Unschedulable) -> placing.Unschedulable:
    assert isinstance(outcome, placing.Unschedulable), outcome
    return outcome


def place_and_take(
    manifest: dict[str, Any], states: list[placing.ZoneState], rng: random.Random | None = None
) -> placing.Placement | placing.Unschedulable:
    """Place, and account the placement as the scheduler does within a batch."""
    outcome = place(manifest, states, rng)
    if isinstance(outcome, placing.Placement):
        by_name = {z.name: z for z in states}
        meta = manifest["metadata"]
        by_name[outcome.zone].take(outcome.spec, meta["namespace"], meta.get("labels") or {})
    return outcome


def required(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
            }
        }
    }


def spread_on_zone(app: str, when: str = "DoNotSchedule", max_skew: int = 1) -> dict[str, Any]:
    return {
        "maxSkew": max_skew,
        "topologyKey": ZONE_KEY,
        "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": app}},
    }


# --- nodeSelector and node affinity ------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({ZONE_KEY: "zone-a"}, "zone-a"),
        ({ZONE_KEY: "zone-b"}, "zone-b"),
        ({ZONE_KEY: "zone-c"}, "zone-c"),
        ({"nodeless.dev/zone": "zone-c"}, "zone-c"),
        ({ZONE_KEY: "zone-b", "kubernetes.io/os": "linux"}, "zone-b"),
    ],
)
def test_node_selector_on_the_zone_label_picks_that_zone(
    selector: dict[str, str], expected: str
) -> None:
    assert placed(place(pod(node_selector=selector), zones())).zone == expected


def test_node_selector_matching_no_zone_is_unschedulable_naming_the_selector() -> None:
    outcome = refused(place(pod(node_selector={ZONE_KEY: "zone-x"}), zones()))
    assert "3 zone(s) didn't match the pod's node affinity/selector" in outcome.message


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"key": ZONE_KEY, "operator": "In", "values": ["zone-c"]}, "zone-c"),
        ({"key": ZONE_KEY, "operator": "In", "values": ["zone-c", "zone-b"]}, "zone-b"),
        ({"key": ZONE_KEY, "operator": "NotIn", "values": ["zone-a"]}, "zone-b"),
        ({"key": ZONE_KEY, "operator": "NotIn", "values": ["zone-a", "zone-b"]}, "zone-c"),
        ({"key": ZONE_KEY, "operator": "Exists"}, "zone-a"),
    ],
)
def test_required_node_affinity_filters_zones(expression: dict[str, Any], expected: str) -> None:
    assert placed(place(pod(affinity=required(expression)), zones())).zone == expected


def test_required_node_affinity_excluding_every_zone_is_unschedulable() -> None:
    expression = {"key": ZONE_KEY, "operator": "NotIn", "values": list(ZONE_NAMES)}
    outcome = refused(place(pod(affinity=required(expression)), zones()))
    assert "node affinity" in outcome.message


def test_required_node_affinity_terms_are_ored() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": ZONE_KEY, "operator": "In", "values": ["x"]}]},
                    {
                        "matchExpressions": [
                            {"key": ZONE_KEY, "operator": "In", "values": ["zone-c"]}
                        ]
                    },
                ]
            }
        }
    }
    assert placed(place(pod(affinity=affinity), zones())).zone == "zone-c"


def test_preferred_node_affinity_picks_the_preferred_zone_when_it_has_room() -> None:
    affinity = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {
                        "matchExpressions": [
                            {"key": ZONE_KEY, "operator": "In", "values": ["zone-b"]}
                        ]
                    },
                }
            ]
        }
    }
    assert placed(place(pod(affinity=affinity), zones())).zone == "zone-b"
    # A preference is not a requirement: a full preferred zone is passed over.
    states = [zone("zone-a"), zone("zone-b", max_instances=1, instances=1), zone("zone-c")]
    assert placed(place(pod(affinity=affinity), states)).zone == "zone-a"


# --- the zones annotation ------------------------------------------------------------


@pytest.mark.parametrize("key", ["nodeless.dev/zones", "k8s.aliyun.com/eci-vswitch"])
def test_zones_annotation_ordered_picks_the_first_listed_zone(key: str) -> None:
    manifest = pod(
        annotations={key: "zone-c,zone-a", "nodeless.dev/schedule-strategy": "VSwitchOrdered"}
    )
    assert placed(place(manifest, zones())).zone == "zone-c"


def test_zones_annotation_ordered_skips_full_zones_in_order() -> None:
    manifest = pod(annotations={"nodeless.dev/zones": "zone-c,zone-b,zone-a"})
    states = [
        zone("zone-a"),
        zone("zone-b", max_instances=3, instances=2),
        zone("zone-c", max_instances=3, instances=3),
    ]
    assert placed(place(manifest, states)).zone == "zone-b"


def test_zones_annotation_never_uses_an_unlisted_zone() -> None:
    manifest = pod(annotations={"nodeless.dev/zones": "zone-b,zone-c"})
    states = [
        zone("zone-a"),
        zone("zone-b", max_instances=1, instances=1),
        zone("zone-c", max_instances=1, instances=1),
    ]
    outcome = refused(place(manifest, states))
    assert "1 zone(s) not in the pod's zones annotation" in outcome.message
    assert "capacity" in outcome.message


def test_zones_annotation_random_is_deterministic_for_a_seed_and_only_among_listed() -> None:
    manifest = pod(
        annotations={
            "nodeless.dev/zones": "zone-b,zone-c",
            "nodeless.dev/schedule-strategy": "VSwitchRandom",
        }
    )
    states = zones()

    def draws(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [placed(place(manifest, states, rng)).zone for _ in range(200)]

    first = draws(7)
    assert first == draws(7)
    assert set(first) == {"zone-b", "zone-c"}  # both listed zones are used, zone-a never
    counts = Counter(first)
    assert min(counts.values()) > 40  # roughly even, not a preference order


def test_zones_annotation_random_skips_full_listed_zones() -> None:
    manifest = pod(
        annotations={
            "k8s.aliyun.com/eci-vswitch": "zone-a,zone-c",
            "k8s.aliyun.com/eci-schedule-strategy": "VSwitchRandom",
        }
    )
    states = [zone("zone-a", max_instances=1, instances=1), zone("zone-b"), zone("zone-c")]
    rng = random.Random(3)
    assert {placed(place(manifest, states, rng)).zone for _ in range(50)} == {"zone-c"}


# --- topology spread on the zone key ------------------------------------------------


def test_do_not_schedule_spread_with_max_skew_one_alternates_zones() -> None:
    states = zones("zone-a", "zone-b")
    constraint = spread_on_zone("web")
    chosen = [
        placed(
            place_and_take(pod(f"web-{i}", labels={"app": "web"}, spread=[constraint]), states)
        ).zone
        for i in range(6)
    ]
    assert chosen == ["zone-a", "zone-b"] * 3


def test_spread_counts_only_pods_matching_the_selector_in_the_namespace() -> None:
    states = zones("zone-a", "zone-b")
    # Other apps, and the same labels in another namespace, crowd zone-a: they do not count.
    for _ in range(5):
        states[0].take(spec("2-4Gi"), "default", {"app": "db"})
        states[0].take(spec("2-4Gi"), "other", {"app": "web"})
    outcome = place(pod(labels={"app": "web"}, spread=[spread_on_zone("web")]), states)
    assert placed(outcome).zone == "zone-a"


def test_do_not_schedule_spread_refuses_when_the_only_zone_with_room_breaks_the_skew() -> None:
    # zone-a already runs one web pod; zone-b (which has none) is full of other pods.
    states = [zone("zone-a"), zone("zone-b", max_instances=2)]
    states[0].take(spec("2-4Gi"), "default", {"app": "web"})
    states[1].take(spec("2-4Gi"), "default", {"app": "db"})
    states[1].take(spec("2-4Gi"), "default", {"app": "db"})
    manifest = pod(labels={"app": "web"}, spread=[spread_on_zone("web")])
    outcome = refused(place(manifest, states))
    assert "topology spread" in outcome.message


def test_do_not_schedule_spread_with_larger_skew_allows_imbalance() -> None:
    states = [zone("zone-a"), zone("zone-b", max_instances=0)]
    states[0].take(spec("2-4Gi"), "default", {"app": "web"})
    manifest = pod(labels={"app": "web"}, spread=[spread_on_zone("web", max_skew=2)])
    assert placed(place(manifest, states)).zone == "zone-a"


def test_schedule_anyway_spread_prefers_the_emptier_zone() -> None:
    states = zones("zone-a", "zone-b")
    for _ in range(2):
        states[0].take(spec("2-4Gi"), "default", {"app": "web"})
    manifest = pod(labels={"app": "web"}, spread=[spread_on_zone("web", "ScheduleAnyway")])
    assert placed(place(manifest, states)).zone == "zone-b"


def test_schedule_anyway_spread_still_places_when_only_the_fuller_zone_has_room() -> None:
    states = [zone("zone-a"), zone("zone-b", max_instances=0)]
    for _ in range(2):
        states[0].take(spec("2-4Gi"), "default", {"app": "web"})
    manifest = pod(labels={"app": "web"}, spread=[spread_on_zone("web", "ScheduleAnyway")])
    assert placed(place(manifest, states)).zone == "zone-a"


def test_spread_on_another_topology_key_does_not_filter_zones() -> None:
    states = zones("zone-a", "zone-b")
    states[0].take(spec("2-4Gi"), "default", {"app": "web"})
    constraint = dict(spread_on_zone("web"), topologyKey="kubernetes.io/hostname")
    assert placed(place(pod(labels={"app": "web"}, spread=[constraint]), states)).zone == "zone-a"


# --- candidate specs and capacity -------------------------------------------------------


def test_candidate_specs_are_tried_in_order() -> None:
    manifest = pod(annotations={"nodeless.dev/instance-specs": "4-8Gi,1-2Gi"})
    # Room for 3 more vCPU: 4-8Gi does not fit, 1-2Gi does.
    states = [zone("zone-a", max_vcpu=10, vcpu="7")]
    outcome = placed(place(manifest, states))
    assert (outcome.zone, outcome.spec) == ("zone-a", spec("1-2Gi"))
    # With room, the first spec wins.
    roomy = [zone("zone-a", max_vcpu=10, vcpu="6")]
    assert placed(place(manifest, roomy)).spec == spec("4-8Gi")


def test_candidate_specs_alias_annotation_is_honoured() -> None:
    manifest = pod(annotations={"k8s.aliyun.com/eci-use-specs": "2-16Gi,2-4Gi"})
    states = [zone("zone-a", max_memory_gib=20, memory_gib="10")]
    assert placed(place(manifest, states)).spec == spec("2-4Gi")


def test_no_capacity_anywhere_is_unschedulable_naming_capacity() -> None:
    states = zones(max_instances=0)
    outcome = refused(place(pod(), states))
    assert "capacity" in outcome.message
    assert "2-4Gi" in outcome.message
    assert outcome.message == "; ".join(outcome.reasons)


def test_unsized_pod_takes_the_default_two_vcpu_four_gib() -> None:
    outcome = placed(place(pod(), zones()))
    assert (outcome.spec.vcpu, outcome.spec.memory_gib) == (Decimal(2), Decimal(4))


@pytest.mark.parametrize(
    ("quota", "requests", "fits"),
    [
        # 2-4Gi pods: the vCPU quota binds (4 vCPU = 2 pods, exactly full)
        ({"max_vcpu": 4}, None, 2),
        ({"max_vcpu": 5}, None, 2),
        ({"max_vcpu": 6}, None, 3),
        # the memory quota binds (10 GiB = 2 pods of 4 GiB)
        ({"max_memory_gib": 10}, None, 2),
        ({"max_memory_gib": 12}, None, 3),
        # the instance quota binds
        ({"max_instances": 3}, None, 3),
        # small pods are counted by their spec, 0.25 vCPU each: 1 vCPU = 4 pods
        ({"max_vcpu": 1}, {"cpu": "250m", "memory": "512Mi"}, 4),
        # 0.5 GiB each: 2 GiB = 4 pods
        ({"max_memory_gib": 2}, {"cpu": "100m", "memory": "100Mi"}, 4),
    ],
)
def test_specs_are_counted_exactly_against_the_zone_quota(
    quota: dict[str, int], requests: dict[str, str] | None, fits: int
) -> None:
    states = [zone("zone-a", **quota)]  # type: ignore[arg-type]
    outcomes = [place_and_take(pod(f"p{i}", requests=requests), states) for i in range(fits + 1)]
    assert all(isinstance(o, placing.Placement) for o in outcomes[:fits]), outcomes
    assert "capacity" in refused(outcomes[fits]).message
    state = states[0]
    chosen = placed(outcomes[0]).spec
    assert state.instances == fits
    assert state.vcpu == chosen.vcpu * fits
    assert state.memory_gib == chosen.memory_gib * fits


def test_a_full_zone_overflows_into_the_next() -> None:
    states = [zone("zone-a", max_vcpu=4), zone("zone-b", max_vcpu=4)]
    chosen = [placed(place_and_take(pod(f"p{i}"), states)).zone for i in range(4)]
    assert chosen == ["zone-a", "zone-a", "zone-b", "zone-b"]
    refused(place(pod("p4"), states))


def test_released_capacity_can_be_used_again() -> None:
    states = [zone("zone-a", max_instances=1)]
    first = placed(place_and_take(pod("p0", labels={"app": "x"}), states))
    refused(place(pod("p1"), states))
    states[0].release(first.spec, "default", {"app": "x"})
    assert (states[0].instances, states[0].vcpu, states[0].memory_gib) == (
        0,
        Decimal(0),
        Decimal(0),
    )
    assert placed(place(pod("p1"), states)).zone == "zone-a"
