"""The pod annotations that steer a serverless pod, under both of their names.

Every option is canonically ``nodeless.dev/<name>``; manifests written for
Alibaba's serverless Kubernetes must work unchanged, so each is also read
under its ``k8s.aliyun.com/eci-...`` name (the names ECI's own documentation
gives). When both forms are present the canonical one wins.

:meth:`PodOptions.from_annotations` parses and validates them all at once, so
that admission can report every bad annotation in one 422, each cause naming
the annotation as the user wrote it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from nodeless.api import errors
from nodeless.serverless import catalogue as catalogue_

ALIYUN_PREFIX: Final = "k8s.aliyun.com/"


@dataclass(frozen=True)
class Annotation:
    """A canonical ``nodeless.dev/`` name and the Alibaba names it also answers to.

    Aliases are listed in precedence order: for the image cache, naming a
    cache (``eci-imc-id``) beats asking for automatic matching, as on ECI.
    """

    name: str
    aliases: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this annotation may be written under, canonical first."""
        return (self.name, *self.aliases)

    def sibling(self, written_as: str) -> str:
        """This annotation's name in the same family as ``written_as``.

        A user who wrote ``k8s.aliyun.com/eci-spot-strategy`` is told about
        ``k8s.aliyun.com/eci-spot-price-limit``, not about a name they never
        used.
        """
        if written_as.startswith(ALIYUN_PREFIX) and self.aliases:
            return self.aliases[0]
        return self.name


# --- what a user writes ---------------------------------------------------------

INSTANCE_SPECS: Final = Annotation("nodeless.dev/instance-specs", ("k8s.aliyun.com/eci-use-specs",))
SPOT_STRATEGY: Final = Annotation(
    "nodeless.dev/spot-strategy", ("k8s.aliyun.com/eci-spot-strategy",)
)
SPOT_PRICE_LIMIT: Final = Annotation(
    "nodeless.dev/spot-price-limit", ("k8s.aliyun.com/eci-spot-price-limit",)
)
SPOT_DURATION: Final = Annotation(
    "nodeless.dev/spot-duration", ("k8s.aliyun.com/eci-spot-duration",)
)
SPOT_FALLBACK: Final = Annotation(
    "nodeless.dev/spot-fallback", ("k8s.aliyun.com/eci-spot-fallback",)
)
ZONES: Final = Annotation("nodeless.dev/zones", ("k8s.aliyun.com/eci-vswitch",))
SCHEDULE_STRATEGY: Final = Annotation(
    "nodeless.dev/schedule-strategy", ("k8s.aliyun.com/eci-schedule-strategy",)
)
IMAGE_CACHE: Final = Annotation(
    "nodeless.dev/image-cache",
    (
        "k8s.aliyun.com/eci-imc-id",  # names a cache (current ECI)
        "k8s.aliyun.com/eci-image-snapshot-id",  # names a cache (older ECI)
        "k8s.aliyun.com/eci-auto-imc",  # "true": match automatically (current ECI)
        "k8s.aliyun.com/eci-image-cache",  # "true": match automatically (older ECI)
    ),
)

# --- what Nodeless writes back once the pod is placed ---------------------------

INSTANCE_SPEC: Final = Annotation(
    "nodeless.dev/instance-spec", ("k8s.aliyun.com/eci-instance-spec",)
)
INSTANCE_ID: Final = Annotation("nodeless.dev/instance-id", ("k8s.aliyun.com/eci-instance-id",))
ZONE: Final = Annotation("nodeless.dev/zone", ("k8s.aliyun.com/eci-instance-zone",))
CAPACITY_TYPE: Final = Annotation("nodeless.dev/capacity-type")
PRICE: Final = Annotation("nodeless.dev/price")
MATCHED_IMAGE_CACHE: Final = Annotation(
    "nodeless.dev/matched-image-cache", ("k8s.aliyun.com/eci-matched-image-cache",)
)

ALL: Final = (
    INSTANCE_SPECS,
    SPOT_STRATEGY,
    SPOT_PRICE_LIMIT,
    SPOT_DURATION,
    SPOT_FALLBACK,
    ZONES,
    SCHEDULE_STRATEGY,
    IMAGE_CACHE,
    INSTANCE_SPEC,
    INSTANCE_ID,
    ZONE,
    CAPACITY_TYPE,
    PRICE,
    MATCHED_IMAGE_CACHE,
)

_BY_KEY: Final[dict[str, Annotation]] = {key: a for a in ALL for key in a.keys}


def annotation(name: str) -> Annotation:
    """The annotation known under ``name`` (canonical or alias)."""
    try:
        return _BY_KEY[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a Nodeless annotation") from None


def lookup(annotations: Mapping[str, str], name: Annotation | str) -> tuple[str, str] | None:
    """``(key as written, value)`` of the first form present, canonical first."""
    wanted = name if isinstance(name, Annotation) else annotation(name)
    for key in wanted.keys:
        value = annotations.get(key)
        if value is not None:
            return key, value
    return None


def read(annotations: Mapping[str, str], name: Annotation | str) -> str | None:
    """The value of an annotation written under either name; canonical wins."""
    found = lookup(annotations, name)
    return None if found is None else found[1]


def written_back(values: Mapping[Annotation, str]) -> dict[str, str]:
    """The annotations to write on a placed pod, under every name.

    Writing the Alibaba names too lets tools built for ECI (which read
    ``k8s.aliyun.com/eci-instance-spec`` and friends) work unchanged.
    """
    return {key: value for a, value in values.items() for key in a.keys}


# --- parsed options ---------------------------------------------------------------


class SpotStrategy(enum.StrEnum):
    """How a pod buys capacity: on demand, or spot at market price or up to a cap."""

    NO_SPOT = "NoSpot"
    AS_PRICE_GO = "SpotAsPriceGo"
    WITH_PRICE_LIMIT = "SpotWithPriceLimit"


class ScheduleStrategy(enum.StrEnum):
    """Whether listed zones are a preference order or an unordered set."""

    ORDERED = "VSwitchOrdered"
    RANDOM = "VSwitchRandom"


AUTO_IMAGE_CACHE: Final = "auto"
DEFAULT_SPOT_DURATION_HOURS: Final = 1

# Up to three decimal places, as ECI accepts: "0.5", "1.25", ".125".
_PRICE_RE: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]{0,3})?|\.[0-9]{1,3})", re.ASCII)
_DURATION_RE: Final = re.compile(r"[0-9]+", re.ASCII)
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", re.ASCII
)


@dataclass(frozen=True)
class PodOptions:
    """Everything a pod's annotations ask of the scheduler, validated.

    ``specs`` is empty when the pod is sized from its containers;
    ``zones`` is empty when any configured zone will do; ``image_cache`` is
    ``None`` (no cache), ``"auto"`` (match one) or the name of a cache.
    """

    specs: tuple[catalogue_.Spec, ...] = ()
    spot_strategy: SpotStrategy = SpotStrategy.NO_SPOT
    spot_price_limit: Decimal | None = None
    spot_duration_hours: int = DEFAULT_SPOT_DURATION_HOURS
    spot_fallback: bool = False
    zones: tuple[str, ...] = ()
    schedule_strategy: ScheduleStrategy = ScheduleStrategy.ORDERED
    image_cache: str | None = None

    @property
    def spot(self) -> bool:
        """Whether the pod asks for spot capacity at all."""
        return self.spot_strategy is not SpotStrategy.NO_SPOT

    @classmethod
    def from_annotations(
        cls,
        annotations: Mapping[str, str] | None,
        catalogue: catalogue_.Catalogue,
        zones: Collection[str],
        *,
        path: str = "metadata.annotations",
        name: str = "",
    ) -> PodOptions:
        """Parse every option; raise one 422 Invalid naming every bad annotation.

        ``zones`` are the zones this Nodeless is configured with; ``path`` is
        where the annotations sit in the object being admitted (a workload's
        pod template puts them under ``spec.template.metadata.annotations``).
        """
        parser = _Parser(annotations or {}, path)
        specs = parser.instance_specs(catalogue)
        strategy = parser.spot_strategy()
        limit = parser.spot_price_limit(strategy)
        duration = parser.spot_duration()
        fallback = parser.spot_fallback()
        chosen_zones = parser.zones(zones)
        schedule = parser.schedule_strategy()
        image_cache = parser.image_cache()
        if parser.causes:
            raise errors.invalid("Pod", "", name, parser.causes)
        return cls(
            specs=specs,
            spot_strategy=strategy,
            spot_price_limit=limit,
            spot_duration_hours=duration,
            spot_fallback=fallback,
            zones=chosen_zones,
            schedule_strategy=schedule,
            image_cache=image_cache,
        )


def parse_instance_specs(
    annotations: Mapping[str, str] | None,
    catalogue: catalogue_.Catalogue,
    *,
    path: str = "metadata.annotations",
    name: str = "",
) -> tuple[catalogue_.Spec, ...]:
    """The ordered specs ``instance-specs`` (or ``eci-use-specs``) lists, if any.

    Sizing needs only this one option; it raises the same cause that
    :meth:`PodOptions.from_annotations` would for a bad list.
    """
    parser = _Parser(annotations or {}, path)
    specs = parser.instance_specs(catalogue)
    if parser.causes:
        raise errors.invalid("Pod", "", name, parser.causes)
    return specs


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


class _Parser:
    """Reads one option at a time, collecting a cause for each bad one."""

    def __init__(self, annotations: Mapping[str, str], path: str) -> None:
        self.annotations = annotations
        self.path = path
        self.causes: list[errors.Cause] = []

    def field(self, key: str) -> str:
        return f"{self.path}[{key}]"

    def invalid(self, key: str, value: str, detail: str) -> None:
        self.causes.append(
            errors.Cause(
                "FieldValueInvalid", f'Invalid value: "{value}": {detail}', self.field(key)
            )
        )

    def not_supported(self, key: str, value: str, supported: Iterable[str]) -> None:
        self.causes.append(
            errors.Cause(
                "FieldValueNotSupported",
                f'Unsupported value: "{value}": supported values: {_quoted(supported)}',
                self.field(key),
            )
        )

    def instance_specs(self, catalogue: catalogue_.Catalogue) -> tuple[catalogue_.Spec, ...]:
        found = lookup(self.annotations, INSTANCE_SPECS)
        if found is None:
            return ()
        key, value = found
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            self.invalid(key, value, 'must list at least one instance spec, e.g. "2-4Gi,4-8Gi"')
            return ()
        specs: list[catalogue_.Spec] = []
        unknown: list[str] = []
        for n in names:
            spec = catalogue.find(n)
            if spec is None:
                unknown.append(n)
            elif spec not in specs:
                specs.append(spec)
        if unknown:
            what = "instance spec" if len(unknown) == 1 else "instance specs"
            self.invalid(
                key,
                value,
                f"unknown {what} {_quoted(unknown)}: name a vCPU-memory pair from the "
                'instance spec catalogue such as "2-4Gi", or a GPU type such as '
                f'"{_example_gpu(catalogue)}"',
            )
            return ()
        return tuple(specs)

    def spot_strategy(self) -> SpotStrategy:
        found = lookup(self.annotations, SPOT_STRATEGY)
        if found is None:
            return SpotStrategy.NO_SPOT
        key, value = found
        try:
            return SpotStrategy(value.strip())
        except ValueError:
            self.not_supported(key, value, [s.value for s in SpotStrategy])
            return SpotStrategy.NO_SPOT

    def spot_price_limit(self, strategy: SpotStrategy) -> Decimal | None:
        found = lookup(self.annotations, SPOT_PRICE_LIMIT)
        strategy_found = lookup(self.annotations, SPOT_STRATEGY)
        if found is None:
            if strategy is SpotStrategy.WITH_PRICE_LIMIT and strategy_found is not None:
                strategy_key = strategy_found[0]
                self.causes.append(
                    errors.Cause(
                        "FieldValueRequired",
                        f"Required value: {strategy_key}: SpotWithPriceLimit needs an hourly "
                        "price cap: set it, or use SpotAsPriceGo to pay the market price",
                        self.field(SPOT_PRICE_LIMIT.sibling(strategy_key)),
                    )
                )
            return None
        key, value = found
        strategy_valid = strategy_found is None or strategy_found[1].strip() in {
            s.value for s in SpotStrategy
        }
        if strategy_valid and strategy is not SpotStrategy.WITH_PRICE_LIMIT:
            strategy_name = strategy_found[0] if strategy_found else SPOT_STRATEGY.sibling(key)
            got = f"it is {strategy.value}" if strategy_found else "it is not set"
            self.causes.append(
                errors.Cause(
                    "FieldValueForbidden",
                    f"Forbidden: a spot price limit applies only when {strategy_name} is "
                    f"SpotWithPriceLimit, but {got}: set that strategy, or remove the limit",
                    self.field(key),
                )
            )
            return None
        text = value.strip()
        if _PRICE_RE.fullmatch(text) is None:
            self.invalid(
                key, value, 'must be an hourly price with at most 3 decimal places, e.g. "0.5"'
            )
            return None
        limit = Decimal(text)
        if limit <= 0:
            self.invalid(key, value, "must be greater than 0")
            return None
        return limit

    def spot_duration(self) -> int:
        found = lookup(self.annotations, SPOT_DURATION)
        if found is None:
            return DEFAULT_SPOT_DURATION_HOURS
        key, value = found
        if _DURATION_RE.fullmatch(value.strip()) is None:
            self.invalid(
                key,
                value,
                "must be a whole number of hours of protection from reclaim "
                "(default 1; 0 means no protection period)",
            )
            return DEFAULT_SPOT_DURATION_HOURS
        return int(value.strip())

    def spot_fallback(self) -> bool:
        found = lookup(self.annotations, SPOT_FALLBACK)
        if found is None:
            return False
        key, value = found
        text = value.strip().lower()
        if text not in {"true", "false"}:
            self.not_supported(key, value, ["true", "false"])
            return False
        return text == "true"

    def zones(self, configured: Collection[str]) -> tuple[str, ...]:
        found = lookup(self.annotations, ZONES)
        if found is None:
            return ()
        key, value = found
        chosen: list[str] = []
        for zone in (z.strip() for z in value.split(",")):
            if zone and zone not in chosen:
                chosen.append(zone)
        unknown = [z for z in chosen if z not in configured]
        if not chosen:
            self.invalid(key, value, "must list at least one zone")
        elif unknown:
            what = "zone" if len(unknown) == 1 else "zones"
            known = _quoted(sorted(configured)) if configured else "none"
            self.invalid(
                key,
                value,
                f"unknown {what} {_quoted(unknown)}: this cluster's zones are {known}",
            )
            return ()
        return tuple(chosen)

    def schedule_strategy(self) -> ScheduleStrategy:
        found = lookup(self.annotations, SCHEDULE_STRATEGY)
        if found is None:
            return ScheduleStrategy.ORDERED
        key, value = found
        try:
            return ScheduleStrategy(value.strip())
        except ValueError:
            self.not_supported(key, value, [s.value for s in ScheduleStrategy])
            return ScheduleStrategy.ORDERED

    def image_cache(self) -> str | None:
        found = lookup(self.annotations, IMAGE_CACHE)
        if found is None:
            return None
        key, value = found
        text = value.strip()
        if text.lower() in {AUTO_IMAGE_CACHE, "true"}:
            return AUTO_IMAGE_CACHE
        if text.lower() == "false":
            return None
        if _DNS1123_SUBDOMAIN_RE.fullmatch(text) is None or len(text) > 253:
            self.invalid(
                key,
                value,
                'must be "auto" (match a cache automatically), "false", or the name of an '
                "ImageCache (a lowercase RFC 1123 subdomain)",
            )
            return None
        return text


def _example_gpu(catalogue: catalogue_.Catalogue) -> str:
    gpu_specs = [s.name for s in catalogue.specs if s.gpu_count]
    return gpu_specs[0] if gpu_specs else "gpu-1xT4"
