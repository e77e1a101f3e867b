"""The benchmark's park in the registry: added to the loaded fleet, and taken out again."""

from __future__ import annotations

from schemas.fleet import Device, Factory, Fleet, Park

BENCH_PARK = "bench-park"
DEVICE_PREFIX = "bench-d"
DEVICES_PER_FACTORY = 100
DEVICE_TYPE = "env_sensor"


def bench_park(devices: int) -> Park:
    """Return the benchmark's park: ``devices`` env sensors in factories of 100."""
    factories = []
    for start in range(0, devices, DEVICES_PER_FACTORY):
        factory_id = f"bench-f{start // DEVICES_PER_FACTORY + 1:03d}"
        ids = range(start + 1, min(devices, start + DEVICES_PER_FACTORY) + 1)
        factories.append(
            Factory(
                id=factory_id,
                name=f"Benchmark factory {start // DEVICES_PER_FACTORY + 1}",
                industry="benchmark",
                devices=[Device(id=f"{DEVICE_PREFIX}{n:06d}", type=DEVICE_TYPE) for n in ids],
            )
        )
    return Park(id=BENCH_PARK, name="Benchmark park", city="Localhost", factories=factories)


def without_bench_park(fleet: Fleet) -> Fleet:
    """Return ``fleet`` without the benchmark's park (left over from an interrupted run)."""
    return fleet.model_copy(update={"parks": [p for p in fleet.parks if p.id != BENCH_PARK]})
