"""Tests of the demo fleet generator and its YAML rendering."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from schemas.fleet import Fleet, parse_fleet
from schemas.telemetry import ID_PATTERN
from simulators.__main__ import main
from simulators.fleet import dump_fleet_yaml, generate_demo_fleet

DEVICE_TYPES = {"power_meter", "production_line", "env_sensor", "machine"}


def test_default_demo_fleet_is_big_enough_and_has_every_device_type_in_every_factory() -> None:
    """The default fleet has at least 3 parks, 12 factories, 300 devices and all four types."""
    fleet = generate_demo_fleet()
    factories = [f for p in fleet.parks for f in p.factories]
    devices = [d for f in factories for d in f.devices]
    assert len(fleet.parks) >= 3
    assert len(factories) >= 12
    assert len(devices) >= 300
    for factory in factories:
        assert {d.type for d in factory.devices} == DEVICE_TYPES, factory.id
    assert {p.id for p in fleet.parks} >= {"hebi-tech", "zhengzhou-aero", "luoyang-new"}
    assert all(p.name and p.city for p in fleet.parks)
    assert all(f.name and f.industry for f in factories)


def test_demo_fleet_ids_are_valid_and_unique_across_the_fleet() -> None:
    """Park, factory and device ids match the id pattern and are unique fleet-wide."""
    fleet = generate_demo_fleet(parks=10, factories_per_park=5, devices_per_factory=30)
    ids = [p.id for p in fleet.parks]
    ids += [f.id for p in fleet.parks for f in p.factories]
    ids += [d.id for p in fleet.parks for f in p.factories for d in f.devices]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(ID_PATTERN.strip("^$"), i) for i in ids)
    assert fleet.parks[0].factories[0].id == "hebi-tech-f01"
    assert fleet.parks[9].id == "park-010"


def test_production_lines_have_a_capacity() -> None:
    """Every production line carries capacity_units_per_hour, as its type requires."""
    fleet = generate_demo_fleet()
    lines = [
        d
        for p in fleet.parks
        for f in p.factories
        for d in f.devices
        if d.type == "production_line"
    ]
    assert lines
    assert all(d.capacity_units_per_hour and d.capacity_units_per_hour > 0 for d in lines)


def test_demo_fleet_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same fleet; another seed gives another mix."""
    assert generate_demo_fleet(seed=3) == generate_demo_fleet(seed=3)
    assert generate_demo_fleet(seed=3) != generate_demo_fleet(seed=4)


def test_smallest_factory_has_one_device_of_each_type() -> None:
    """Four devices per factory give exactly one device of each type."""
    fleet = generate_demo_fleet(parks=1, factories_per_park=1, devices_per_factory=4)
    counts = Counter(d.type for d in fleet.parks[0].factories[0].devices)
    assert counts == dict.fromkeys(DEVICE_TYPES, 1)


@pytest.mark.parametrize(
    ("parks", "factories", "devices"), [(0, 4, 25), (3, 0, 25), (3, 4, 3), (3, 100, 25)]
)
def test_demo_fleet_refuses_nonsense_counts(parks: int, factories: int, devices: int) -> None:
    """Counts that cannot make a valid fleet are refused."""
    with pytest.raises(ValueError, match="must be"):
        generate_demo_fleet(parks, factories, devices)


def test_dumped_yaml_parses_back_to_the_same_fleet() -> None:
    """dump_fleet_yaml round-trips through schemas.fleet.parse_fleet."""
    fleet = generate_demo_fleet()
    text = dump_fleet_yaml(fleet)
    assert parse_fleet(text) == fleet
    assert "- {id: hebi-tech-f01-meter-1, type: power_meter}" in text
    assert "capacity_units_per_hour: 1200.0" not in text


def test_fleet_command_prints_the_demo_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m simulators fleet`` prints a fleet file with the requested size."""
    assert main(["fleet", "--parks", "2", "--factories-per-park", "3", "--seed", "1"]) == 0
    fleet = parse_fleet(capsys.readouterr().out)
    assert isinstance(fleet, Fleet)
    assert len(fleet.parks) == 2
    assert all(len(p.factories) == 3 for p in fleet.parks)
