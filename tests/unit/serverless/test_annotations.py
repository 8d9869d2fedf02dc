"""Pod annotations: both name forms, the canonical one winning, every bad one reported."""

from decimal import Decimal

import pytest

from nodeless.api import errors
from nodeless.serverless import annotations, catalogue

CATALOGUE = catalogue.Catalogue.load()
ZONES = ("zone-a", "zone-b", "zone-c")


@pytest.mark.parametrize(
    ("given", "name", "value"),
    [
        (
            {"nodeless.dev/spot-strategy": "SpotAsPriceGo"},
            annotations.SPOT_STRATEGY,
            "SpotAsPriceGo",
        ),
        (
            {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"},
            annotations.SPOT_STRATEGY,
            "SpotAsPriceGo",
        ),
        (
            {
                "k8s.aliyun.com/eci-spot-strategy": "alias",
                "nodeless.dev/spot-strategy": "canonical",
            },
            annotations.SPOT_STRATEGY,
            "canonical",
        ),
        ({}, annotations.SPOT_STRATEGY, None),
        ({"k8s.aliyun.com/eci-use-specs": "2-4Gi"}, "nodeless.dev/instance-specs", "2-4Gi"),
        ({"nodeless.dev/instance-specs": "2-4Gi"}, "k8s.aliyun.com/eci-use-specs", "2-4Gi"),
        ({"k8s.aliyun.com/eci-vswitch": "zone-a"}, annotations.ZONES, "zone-a"),
        ({"k8s.aliyun.com/eci-instance-spec": "2.0-4.0Gi"}, annotations.INSTANCE_SPEC, "2.0-4.0Gi"),
        ({"k8s.aliyun.com/eci-instance-zone": "zone-a"}, annotations.ZONE, "zone-a"),
        ({"k8s.aliyun.com/eci-matched-image-cache": "web"}, annotations.MATCHED_IMAGE_CACHE, "web"),
        # Naming a cache beats asking for automatic matching, as on ECI.
        (
            {"k8s.aliyun.com/eci-auto-imc": "true", "k8s.aliyun.com/eci-imc-id": "imc-1"},
            annotations.IMAGE_CACHE,
            "imc-1",
        ),
    ],
)
def test_read_accepts_either_name_and_canonical_wins(
    given: dict[str, str], name: annotations.Annotation | str, value: str | None
) -> None:
    assert annotations.read(given, name) == value


def test_every_annotation_has_a_canonical_nodeless_name() -> None:
    for a in annotations.ALL:
        assert a.name.startswith("nodeless.dev/")
        assert all(alias.startswith("k8s.aliyun.com/eci-") for alias in a.aliases)


def test_unknown_annotation_name_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        annotations.read({}, "nodeless.dev/nope")


def test_written_back_annotations_carry_both_names() -> None:
    written = annotations.written_back(
        {annotations.INSTANCE_SPEC: "2.0-4.0Gi", annotations.PRICE: "0.1114"}
    )
    assert written == {
        "nodeless.dev/instance-spec": "2.0-4.0Gi",
        "k8s.aliyun.com/eci-instance-spec": "2.0-4.0Gi",
        "nodeless.dev/price": "0.1114",
    }


def test_no_annotations_mean_on_demand_sized_from_containers() -> None:
    options = annotations.PodOptions.from_annotations(None, CATALOGUE, ZONES)
    assert options == annotations.PodOptions()
    assert not options.spot
    assert options.spot_duration_hours == 1
    assert options.spot_fallback is False


OPTION_VALUES = {
    "instance-specs": "4-8Gi, 2.0-4.0Gi,gpu-1xT4",
    "spot-strategy": "SpotWithPriceLimit",
    "spot-price-limit": "0.125",
    "spot-duration": "0",
    "spot-fallback": "true",
    "zones": "zone-c, zone-a",
    "schedule-strategy": "VSwitchRandom",
}
ALIYUN_NAMES = {"instance-specs": "eci-use-specs", "zones": "eci-vswitch"}


@pytest.mark.parametrize(
    "given",
    [
        {f"nodeless.dev/{name}": value for name, value in OPTION_VALUES.items()},
        {
            f"k8s.aliyun.com/{ALIYUN_NAMES.get(name, 'eci-' + name)}": value
            for name, value in OPTION_VALUES.items()
        },
    ],
    ids=["canonical", "aliyun"],
)
def test_every_option_parses_under_either_name(given: dict[str, str]) -> None:
    options = annotations.PodOptions.from_annotations(given, CATALOGUE, ZONES)
    assert [s.name for s in options.specs] == ["4-8Gi", "2-4Gi", "gpu-1xT4"]
    assert options.spot_strategy is annotations.SpotStrategy.WITH_PRICE_LIMIT
    assert options.spot
    assert options.spot_price_limit == Decimal("0.125")
    assert options.spot_duration_hours == 0
    assert options.spot_fallback is True
    assert options.zones == ("zone-c", "zone-a")
    assert options.schedule_strategy is annotations.ScheduleStrategy.RANDOM


@pytest.mark.parametrize(
    ("given", "image_cache"),
    [
        ({"nodeless.dev/image-cache": "auto"}, "auto"),
        ({"nodeless.dev/image-cache": "true"}, "auto"),
        ({"nodeless.dev/image-cache": "false"}, None),
        ({"nodeless.dev/image-cache": "web-images"}, "web-images"),
        ({"k8s.aliyun.com/eci-auto-imc": "true"}, "auto"),
        ({"k8s.aliyun.com/eci-image-cache": "true"}, "auto"),
        ({"k8s.aliyun.com/eci-imc-id": "imc-2zebxkiifuyzzlhl"}, "imc-2zebxkiifuyzzlhl"),
        ({"k8s.aliyun.com/eci-image-snapshot-id": "imc-1"}, "imc-1"),
    ],
)
def test_image_cache_is_off_automatic_or_named(
    given: dict[str, str], image_cache: str | None
) -> None:
    options = annotations.PodOptions.from_annotations(given, CATALOGUE, ZONES)
    assert options.image_cache == image_cache


@pytest.mark.parametrize(
    ("given", "spot_strategy", "limit"),
    [
        ({"nodeless.dev/spot-strategy": "SpotAsPriceGo"}, "SpotAsPriceGo", None),
        ({"nodeless.dev/spot-strategy": "NoSpot"}, "NoSpot", None),
        (
            {
                "nodeless.dev/spot-strategy": "SpotWithPriceLimit",
                "nodeless.dev/spot-price-limit": "1",
            },
            "SpotWithPriceLimit",
            Decimal(1),
        ),
        (
            {
                "nodeless.dev/spot-strategy": "SpotWithPriceLimit",
                "nodeless.dev/spot-price-limit": ".5",
            },
            "SpotWithPriceLimit",
            Decimal("0.5"),
        ),
    ],
)
def test_spot_strategies_and_limits(
    given: dict[str, str], spot_strategy: str, limit: Decimal | None
) -> None:
    options = annotations.PodOptions.from_annotations(given, CATALOGUE, ZONES)
    assert options.spot_strategy == spot_strategy
    assert options.spot_price_limit == limit


ERROR_ROWS = [
    # (id, annotations, field key, reason, words in the message)
    (
        "unknown spec",
        {"nodeless.dev/instance-specs": "2-4Gi,3-5Gi,ecs.c6.xlarge"},
        "nodeless.dev/instance-specs",
        "FieldValueInvalid",
        ['unknown instance specs "3-5Gi", "ecs.c6.xlarge"'],
    ),
    (
        "empty spec list",
        {"k8s.aliyun.com/eci-use-specs": " , "},
        "k8s.aliyun.com/eci-use-specs",
        "FieldValueInvalid",
        ["at least one instance spec"],
    ),
    (
        "price limit without SpotWithPriceLimit",
        {"nodeless.dev/spot-strategy": "SpotAsPriceGo", "nodeless.dev/spot-price-limit": "0.5"},
        "nodeless.dev/spot-price-limit",
        "FieldValueForbidden",
        ["nodeless.dev/spot-strategy is SpotWithPriceLimit, but it is SpotAsPriceGo"],
    ),
    (
        "price limit without any strategy",
        {"k8s.aliyun.com/eci-spot-price-limit": "0.5"},
        "k8s.aliyun.com/eci-spot-price-limit",
        "FieldValueForbidden",
        ["k8s.aliyun.com/eci-spot-strategy is SpotWithPriceLimit, but it is not set"],
    ),
    (
        "SpotWithPriceLimit without a limit names the limit in the user's family",
        {"k8s.aliyun.com/eci-spot-strategy": "SpotWithPriceLimit"},
        "k8s.aliyun.com/eci-spot-price-limit",
        "FieldValueRequired",
        ["Required value", "hourly price cap"],
    ),
    (
        "price limit with four decimal places",
        {
            "nodeless.dev/spot-strategy": "SpotWithPriceLimit",
            "nodeless.dev/spot-price-limit": "0.1234",
        },
        "nodeless.dev/spot-price-limit",
        "FieldValueInvalid",
        ['Invalid value: "0.1234"', "at most 3 decimal places"],
    ),
    (
        "price limit that is not a number",
        {
            "nodeless.dev/spot-strategy": "SpotWithPriceLimit",
            "nodeless.dev/spot-price-limit": "cheap",
        },
        "nodeless.dev/spot-price-limit",
        "FieldValueInvalid",
        ['Invalid value: "cheap"'],
    ),
    (
        "price limit of zero",
        {"nodeless.dev/spot-strategy": "SpotWithPriceLimit", "nodeless.dev/spot-price-limit": "0"},
        "nodeless.dev/spot-price-limit",
        "FieldValueInvalid",
        ["greater than 0"],
    ),
    (
        "unknown spot strategy",
        {"nodeless.dev/spot-strategy": "Cheapest"},
        "nodeless.dev/spot-strategy",
        "FieldValueNotSupported",
        ['Unsupported value: "Cheapest"', '"SpotAsPriceGo", "SpotWithPriceLimit"'],
    ),
    (
        "fractional spot duration",
        {"nodeless.dev/spot-duration": "1.5"},
        "nodeless.dev/spot-duration",
        "FieldValueInvalid",
        ["whole number of hours"],
    ),
    (
        "negative spot duration",
        {"k8s.aliyun.com/eci-spot-duration": "-1"},
        "k8s.aliyun.com/eci-spot-duration",
        "FieldValueInvalid",
        ["whole number of hours"],
    ),
    (
        "spot fallback not a boolean",
        {"nodeless.dev/spot-fallback": "yes"},
        "nodeless.dev/spot-fallback",
        "FieldValueNotSupported",
        ['"true", "false"'],
    ),
    (
        "zone that does not exist",
        {"k8s.aliyun.com/eci-vswitch": "zone-a,zone-x"},
        "k8s.aliyun.com/eci-vswitch",
        "FieldValueInvalid",
        ['unknown zone "zone-x"', '"zone-a", "zone-b", "zone-c"'],
    ),
    (
        "unknown schedule strategy",
        {"nodeless.dev/schedule-strategy": "Spread"},
        "nodeless.dev/schedule-strategy",
        "FieldValueNotSupported",
        ['"VSwitchOrdered", "VSwitchRandom"'],
    ),
    (
        "image cache name that is no object name",
        {"nodeless.dev/image-cache": "My Cache"},
        "nodeless.dev/image-cache",
        "FieldValueInvalid",
        ["RFC 1123"],
    ),
]


@pytest.mark.parametrize(
    ("given", "key", "reason", "words"),
    [row[1:] for row in ERROR_ROWS],
    ids=[row[0] for row in ERROR_ROWS],
)
def test_bad_annotation_is_invalid_naming_it_as_written(
    given: dict[str, str], key: str, reason: str, words: list[str]
) -> None:
    with pytest.raises(errors.StatusError) as caught:
        annotations.PodOptions.from_annotations(given, CATALOGUE, ZONES, name="web")
    status = caught.value
    assert (status.code, status.reason, status.kind, status.name) == (422, "Invalid", "Pod", "web")
    assert len(status.causes) == 1
    cause = status.causes[0]
    assert cause.field == f"metadata.annotations[{key}]"
    assert cause.reason == reason
    for word in words:
        assert word in cause.message


def test_every_bad_annotation_is_reported_at_once() -> None:
    given = {
        "nodeless.dev/instance-specs": "3-5Gi",
        "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
        "nodeless.dev/spot-price-limit": "0.1234",
        "nodeless.dev/spot-duration": "forever",
        "nodeless.dev/spot-fallback": "maybe",
        "nodeless.dev/zones": "mars-1",
        "nodeless.dev/schedule-strategy": "Spread",
    }
    with pytest.raises(errors.StatusError) as caught:
        annotations.PodOptions.from_annotations(
            given, CATALOGUE, ZONES, path="spec.template.metadata.annotations"
        )
    assert [c.field for c in caught.value.causes] == [
        "spec.template.metadata.annotations[nodeless.dev/instance-specs]",
        "spec.template.metadata.annotations[nodeless.dev/spot-price-limit]",
        "spec.template.metadata.annotations[nodeless.dev/spot-duration]",
        "spec.template.metadata.annotations[nodeless.dev/spot-fallback]",
        "spec.template.metadata.annotations[nodeless.dev/zones]",
        "spec.template.metadata.annotations[nodeless.dev/schedule-strategy]",
    ]
    # Every field also appears in the Status message kubectl prints.
    for cause in caught.value.causes:
        assert cause.field in caught.value.message


def test_bad_strategy_is_reported_once_not_again_through_its_limit() -> None:
    given = {"nodeless.dev/spot-strategy": "Cheap", "nodeless.dev/spot-price-limit": "0.5"}
    with pytest.raises(errors.StatusError) as caught:
        annotations.PodOptions.from_annotations(given, CATALOGUE, ZONES)
    assert [c.field for c in caught.value.causes] == [
        "metadata.annotations[nodeless.dev/spot-strategy]"
    ]
