"""The instance spec catalogue: the reference table, names, prices and rounding up."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from nodeless.serverless import catalogue

CATALOGUE = catalogue.Catalogue.load()

# serverless.md, "Instance spec catalogue (vCPU -> allowed memory GiB)", verbatim.
REFERENCE_TABLE = {
    "0.25": ["0.5", "1"],
    "0.5": ["1", "2"],
    "1": ["2", "4", "8"],
    "2": ["1", "2", "4", "8", "16"],
    "4": ["2", "4", "8", "16", "32"],
    "8": ["4", "8", "16", "32", "64"],
    "12": ["12", "24", "48", "96"],
    "16": ["16", "32", "64", "128"],
    "24": ["24", "48", "96", "192"],
    "32": ["32", "64", "128", "256"],
    "52": ["96", "192", "384"],
    "64": ["128", "256", "512"],
}


def test_packaged_catalogue_holds_exactly_the_reference_table() -> None:
    general = {(s.vcpu, s.memory_gib) for s in CATALOGUE.specs if not s.gpu_count}
    expected = {
        (Decimal(vcpu), Decimal(memory))
        for vcpu, memories in REFERENCE_TABLE.items()
        for memory in memories
    }
    assert general == expected


def test_packaged_catalogue_offers_gpu_types_in_counts_1_2_4_8() -> None:
    gpu = [s for s in CATALOGUE.specs if s.gpu_count]
    assert {s.gpu_count for s in gpu} == {1, 2, 4, 8}
    assert CATALOGUE.gpu_types == {"T4", "A10", "A100"}
    t4 = CATALOGUE.find("gpu-1xT4")
    assert t4 is not None
    assert (t4.vcpu, t4.memory_gib, t4.gpu_count, t4.gpu_type) == (Decimal(4), Decimal(15), 1, "T4")


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("2-4Gi", "2-4Gi"),
        ("2.0-4.0Gi", "2-4Gi"),
        ("2-4.0Gi", "2-4Gi"),
        (" 2-4Gi ", "2-4Gi"),
        ("0.25-0.5Gi", "0.25-0.5Gi"),
        ("0.250-0.50Gi", "0.25-0.5Gi"),
        ("64.0-512.0Gi", "64-512Gi"),
        ("gpu-1xT4", "gpu-1xT4"),
        ("gpu-8xA100", "gpu-8xA100"),
        ("3-5Gi", None),  # not in the table
        ("2-3Gi", None),
        ("2-4", None),
        ("2-4GiB", None),
        ("gpu-1xt4", None),
        ("ecs.c6.xlarge", None),
        ("", None),
    ],
)
def test_find_accepts_the_names_users_write(name: str, found: str | None) -> None:
    spec = CATALOGUE.find(name)
    assert (spec.name if spec else None) == found


@pytest.mark.parametrize(
    ("name", "annotation_value"),
    [
        ("2-4Gi", "2.0-4.0Gi"),
        ("0.25-0.5Gi", "0.25-0.5Gi"),
        ("0.5-1Gi", "0.5-1.0Gi"),
        ("64-512Gi", "64.0-512.0Gi"),
        ("gpu-2xA10", "gpu-2xA10"),
    ],
)
def test_annotation_value_is_the_form_eci_writes_back(name: str, annotation_value: str) -> None:
    spec = CATALOGUE.find(name)
    assert spec is not None
    assert spec.annotation_value == annotation_value


def test_price_is_vcpu_plus_memory_plus_gpu_rates() -> None:
    prices = CATALOGUE.prices
    general = CATALOGUE.find("2-4Gi")
    gpu = CATALOGUE.find("gpu-2xA10")
    assert general is not None and gpu is not None
    assert general.hourly_price == 2 * prices.vcpu_hour + 4 * prices.gib_hour
    assert gpu.hourly_price == (
        16 * prices.vcpu_hour + 60 * prices.gib_hour + 2 * prices.gpu_hour["A10"]
    )


@pytest.mark.parametrize(
    ("vcpu", "memory", "gpus", "gpu_type", "expected"),
    [
        (7, 13, 0, None, "8-16Gi"),
        (0, 0, 0, None, "0.25-0.5Gi"),
        (0.25, 0.5, 0, None, "0.25-0.5Gi"),
        (Decimal("0.3"), Decimal("0.5"), 0, None, "0.5-1Gi"),
        (1, 30, 0, None, "4-32Gi"),
        (2, 1, 0, None, "2-1Gi"),
        (2, 4, 0, None, "2-4Gi"),
        (64, 512, 0, None, "64-512Gi"),
        (53, 1, 0, None, "64-128Gi"),
        (65, 1, 0, None, None),
        (1, 513, 0, None, None),
        (0, 0, 1, None, "gpu-1xT4"),  # GPUs only go to GPU types, cheapest first
        (0, 0, 1, "A10", "gpu-1xA10"),
        (0, 0, 3, None, "gpu-4xT4"),
        (0, 0, 8, None, "gpu-8xA100"),
        (0, 0, 9, None, None),
        (0, 0, 1, "H100", None),
        (4, 16, 1, None, "gpu-2xT4"),  # 1xT4 has only 15 GiB; 2xT4 is cheaper than 1xA10
    ],
)
def test_cheapest_covering_rounds_up(
    vcpu: Decimal | float,
    memory: Decimal | float,
    gpus: int,
    gpu_type: str | None,
    expected: str | None,
) -> None:
    spec = CATALOGUE.cheapest_covering(vcpu, memory, gpus, gpu_type)
    assert (spec.name if spec else None) == expected


def test_cheapest_covering_breaks_price_ties_by_smaller_vcpu_then_memory() -> None:
    # With vCPU and memory priced alike, 2-1Gi and 1-2Gi both cost 3 an hour;
    # the smaller vCPU wins although the file lists 2-1Gi first.
    document = {
        "prices": {"vcpu_hour": 1, "gib_hour": 1},
        "general": [
            {"vcpu": 2, "memory_gib": [1]},
            {"vcpu": 1, "memory_gib": [2]},
        ],
    }
    tied = catalogue.Catalogue.from_document(document)
    spec = tied.cheapest_covering(1, 1)
    assert spec is not None and spec.name == "1-2Gi"


def test_operator_replaces_the_catalogue_by_path(tmp_path: Path) -> None:
    path = tmp_path / "specs.yaml"
    path.write_text(
        "currency: EUR\n"
        "prices: {vcpu_hour: '0.04', gib_hour: '0.004', gpu_hour: {L4: '0.6'}}\n"
        "general:\n"
        "  - {vcpu: 1, memory_gib: [2]}\n"
        "  - {vcpu: 3, memory_gib: [6]}\n"
        "gpu:\n"
        "  - {name: gpu-1xL4, vcpu: 4, memory_gib: 16, gpus: 1, gpu_type: L4}\n"
    )
    custom = catalogue.Catalogue.load(path)
    assert [s.name for s in custom.specs] == ["1-2Gi", "3-6Gi", "gpu-1xL4"]
    assert custom.currency == "EUR"
    spec = custom.cheapest_covering(2, 2)
    assert spec is not None and spec.name == "3-6Gi"
    assert spec.hourly_price == Decimal("0.144")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "the document: must be a mapping"),
        ("prices: {vcpu_hour: 1}\ngeneral: []", "prices.gib_hour: must be a number"),
        ("prices: {vcpu_hour: 1, gib_hour: 1}\ngeneral: []", "lists no specs"),
        (
            "prices: {vcpu_hour: 1, gib_hour: x}\ngeneral: [{vcpu: 1, memory_gib: [1]}]",
            "prices.gib_hour: 'x' is not a number",
        ),
        (
            "prices: {vcpu_hour: 1, gib_hour: 1}\ngeneral: [{vcpu: -1, memory_gib: [1]}]",
            "general[0].vcpu: must be a finite number >= 0",
        ),
        (
            "prices: {vcpu_hour: 1, gib_hour: 1}\n"
            "general: [{vcpu: 1, memory_gib: [1]}, {vcpu: 1, memory_gib: [1]}]",
            "spec '1-1Gi' is listed twice",
        ),
        (
            "prices: {vcpu_hour: 1, gib_hour: 1}\n"
            "gpu: [{name: g, vcpu: 1, memory_gib: 1, gpus: 1, gpu_type: V100}]",
            "gpu[0].gpu_type: 'V100' has no price in gpu_hour",
        ),
        (
            "prices: {vcpu_hour: 1, gib_hour: 1, gpu_hour: {T4: 1}}\n"
            "gpu: [{name: g, vcpu: 1, memory_gib: 1, gpus: 0, gpu_type: T4}]",
            "gpu[0].gpus: must be a positive integer",
        ),
        ("prices: [", "not valid YAML"),
    ],
)
def test_unusable_catalogue_file_says_where_and_why(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "specs.yaml"
    path.write_text(text)
    with pytest.raises(catalogue.CatalogueError) as caught:
        catalogue.Catalogue.load(path)
    assert str(caught.value).startswith(str(path))
    assert problem in str(caught.value)
