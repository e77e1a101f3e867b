"""A deterministic demo fleet: parks in Henan, their factories and a mix of all device types."""

from __future__ import annotations

import random
from typing import Any

import yaml

from schemas.fleet import Calendar, Device, Factory, Fleet, Park, Shift, Thresholds

# Real industrial parks of Henan province (id, name, Chinese name, city, city in Chinese);
# more parks than these get generic ids.
_PARKS: tuple[tuple[str, str, str, str, str], ...] = (
    ("hebi-tech", "Hebi Digital Economy Park", "鹤壁数字经济产业园", "Hebi", "鹤壁"),
    (
        "zhengzhou-aero",
        "Zhengzhou Airport Economy Zone",
        "郑州航空港经济综合实验区",
        "Zhengzhou",
        "郑州",
    ),
    (
        "luoyang-new",
        "Luoyang New District Industrial Park",
        "洛阳新区产业集聚区",
        "Luoyang",
        "洛阳",
    ),
    (
        "xinxiang-hitech",
        "Xinxiang High-tech Industrial Development Zone",
        "新乡高新技术产业开发区",
        "Xinxiang",
        "新乡",
    ),
    ("xuchang-east", "Xuchang East City Industrial Cluster", "许昌东城产业集群", "Xuchang", "许昌"),
    ("kaifeng-auto", "Kaifeng Automotive Parts Park", "开封汽车零部件产业园", "Kaifeng", "开封"),
    ("anyang-steel", "Anyang Advanced Materials Park", "安阳先进材料产业园", "Anyang", "安阳"),
    ("nanyang-bio", "Nanyang Biomedicine Park", "南阳生物医药产业园", "Nanyang", "南阳"),
)

# (name, Chinese name, industry, typical line capacity in units per hour)
_FACTORIES: tuple[tuple[str, str, str, int], ...] = (
    ("Precision Parts", "精密零件厂", "smart-manufacturing", 1200),
    ("Magnesium Alloy Works", "镁合金厂", "new-materials", 400),
    ("Electronics Assembly", "电子装配厂", "electronics", 2400),
    ("Auto Components", "汽车零部件厂", "automotive", 900),
    ("Battery Cells", "电芯厂", "new-energy", 3600),
    ("Food Processing", "食品加工厂", "food", 3000),
    ("Textile Mill", "纺织厂", "textiles", 1800),
    ("Pharma Packaging", "医药包装厂", "pharmaceuticals", 6000),
    ("Mining Machinery", "矿山机械厂", "equipment", 60),
    ("Glass Fibre", "玻璃纤维厂", "new-materials", 800),
    ("Cold Chain Packing", "冷链包装中心", "logistics", 1500),
    ("Fine Chemicals", "精细化工厂", "chemicals", 500),
    ("Optical Lenses", "光学镜片厂", "electronics", 1000),
    ("Aluminium Extrusion", "铝型材厂", "new-materials", 300),
    ("Flour Mill", "面粉厂", "food", 2000),
    ("Drone Frames", "无人机机架厂", "smart-manufacturing", 120),
)

# Share of a factory's devices by type; each type gets at least one device.
_TYPE_SHARES: tuple[tuple[str, str, float], ...] = (
    ("power_meter", "meter", 0.12),
    ("production_line", "line", 0.28),
    ("env_sensor", "env", 0.20),
    ("machine", "mach", 0.40),
)

# Planned time. A park's calendar: a weekday day shift, weekends off, and the national
# holidays of the demo's months (New Year's Day; the Spring Festival of 2027).
_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
_PARK_CALENDAR = Calendar(
    shifts=[Shift(days=_WEEKDAYS, start="08:00", end="20:00")],
    holidays=["2027-01-01", "2027-02-06", "2027-02-07", "2027-02-08", "2027-02-09"],
)
# Furnaces and cell lines run around the clock, every day (a shift from 00:00 to 00:00).
_ROUND_THE_CLOCK = Calendar(
    shifts=[Shift(days=[*_WEEKDAYS, "sat", "sun"], start="00:00", end="00:00")]
)
# Two shifts, Monday to Saturday: early 06:00-14:00 and late 14:00-22:00.
_TWO_SHIFTS = Calendar(
    shifts=[
        Shift(days=[*_WEEKDAYS, "sat"], start="06:00", end="14:00"),
        Shift(days=[*_WEEKDAYS, "sat"], start="14:00", end="22:00"),
    ]
)
_CONTINUOUS_INDUSTRIES = frozenset({"new-materials", "chemicals", "new-energy"})

# Clean rooms keep a tighter band than the type's default thresholds.
_TIGHT_ENV_INDUSTRIES = frozenset({"pharmaceuticals", "electronics"})


def generate_demo_fleet(
    parks: int = 3,
    factories_per_park: int = 4,
    devices_per_factory: int = 25,
    seed: int = 7,
) -> Fleet:
    """Generate a deterministic demo fleet.

    Args:
        parks: number of parks (the first eight have real names, further ones generic ids).
        factories_per_park: factories in each park.
        devices_per_factory: devices in each factory, at least 4 so that all four types occur.
        seed: seed of the random choices (industries, capacities, device mix).

    Returns:
        A validated fleet; the same arguments always give the same fleet.

    Raises:
        ValueError: a count is out of range.
    """
    if parks < 1 or factories_per_park < 1:
        raise ValueError("parks and factories_per_park must be at least 1")
    if devices_per_factory < len(_TYPE_SHARES):
        raise ValueError(f"devices_per_factory must be at least {len(_TYPE_SHARES)}")
    if factories_per_park > 99:  # noqa: PLR2004 - ids carry two digits: f01 … f99
        raise ValueError("factories_per_park must be at most 99")
    rng = random.Random(seed)
    result = []
    for p in range(parks):
        if p < len(_PARKS):
            park_id, park_name, park_name_zh, city, city_zh = _PARKS[p]
        else:
            park_id, park_name, city = f"park-{p + 1:03d}", f"Industrial Park {p + 1}", "Henan"
            park_name_zh, city_zh = f"第{p + 1}产业园", "河南"
        catalogue = list(_FACTORIES)
        rng.shuffle(catalogue)
        factories = []
        for f in range(factories_per_park):
            name, name_zh, industry, capacity = catalogue[f % len(catalogue)]
            factory_id = f"{park_id}-f{f + 1:02d}"
            factories.append(
                Factory(
                    id=factory_id,
                    name=f"{city} {name}",
                    name_zh=f"{city_zh}{name_zh}",
                    industry=industry,
                    calendar=_factory_calendar(f, factories_per_park, industry),
                    devices=_devices(factory_id, industry, capacity, devices_per_factory, rng),
                )
            )
        result.append(
            Park(
                id=park_id,
                name=park_name,
                name_zh=park_name_zh,
                city=city,
                calendar=_PARK_CALENDAR,
                factories=factories,
            )
        )
    return Fleet(parks=result)


def _factory_calendar(index: int, factories: int, industry: str) -> Calendar | None:
    """A factory's own calendar, or None to follow its park's (weekdays, weekends off).

    Continuous industries, and each park's last factory, run around the clock; every
    second other factory works two shifts six days a week.
    """
    if industry in _CONTINUOUS_INDUSTRIES or index == factories - 1:
        return _ROUND_THE_CLOCK
    return _TWO_SHIFTS if index % 2 else None


def _type_counts(devices: int, rng: random.Random) -> list[int]:
    counts = [
        max(1, round(devices * share * rng.uniform(0.8, 1.2))) for _, _, share in _TYPE_SHARES
    ]
    # Machines absorb the rounding; shrink the largest other type if machines would vanish.
    while sum(counts[:-1]) >= devices:
        largest = max(range(len(counts) - 1), key=lambda i: counts[i])
        counts[largest] -= 1
    counts[-1] = devices - sum(counts[:-1])
    return counts


def _devices(
    factory_id: str, industry: str, capacity: int, devices: int, rng: random.Random
) -> list[Device]:
    result = []
    for (type_id, short, _), count in zip(_TYPE_SHARES, _type_counts(devices, rng), strict=True):
        for n in range(1, count + 1):
            device_id = f"{factory_id}-{short}-{n}"
            if type_id == "production_line":
                line_capacity = round(capacity * rng.choice((0.5, 0.75, 1.0, 1.0, 1.25, 1.5)))
                result.append(
                    Device(id=device_id, type=type_id, capacity_units_per_hour=line_capacity)
                )
            elif type_id == "env_sensor" and industry in _TIGHT_ENV_INDUSTRIES and n == 1:
                tight = {"temp_c": Thresholds(min=15, max=28), "humidity_pct": Thresholds(max=60)}
                result.append(Device(id=device_id, type=type_id, thresholds=tight))
            else:
                result.append(Device(id=device_id, type=type_id))
    return result


class _FlowDict(dict[str, Any]):
    """A mapping written on one line, as devices are in the fleet file example."""


class _FleetDumper(yaml.SafeDumper):
    """A safe YAML dumper that writes `_FlowDict` in flow style."""


def _represent_flow_dict(dumper: yaml.SafeDumper, data: _FlowDict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_FleetDumper.add_representer(_FlowDict, _represent_flow_dict)


def _tidy(device: dict[str, Any]) -> dict[str, Any]:
    """Write whole-number capacities as integers (``1200``, not ``1200.0``)."""
    capacity = device.get("capacity_units_per_hour")
    if isinstance(capacity, float) and capacity.is_integer():
        return device | {"capacity_units_per_hour": int(capacity)}
    return device


def dump_fleet_yaml(fleet: Fleet) -> str:
    """Render a fleet as a fleet file (YAML) that ``schemas.fleet.parse_fleet`` reads back.

    Devices are written one per line in flow style; fields at their defaults are left out.
    """
    raw = fleet.model_dump(mode="json", exclude_defaults=True)
    for park in raw.get("parks", []):
        for factory in park.get("factories", []):
            factory["devices"] = [_FlowDict(_tidy(d)) for d in factory.get("devices", [])]
    text: str = yaml.dump(raw, Dumper=_FleetDumper, sort_keys=False, allow_unicode=True, width=120)
    return text
