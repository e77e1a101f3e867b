"""API harness: the small fleet the API tests load over HTTP, and a large generated one."""

from __future__ import annotations

from fastapi.testclient import TestClient

FLEET = """
parks:
  - id: hebi-tech
    name: Hebi Digital Economy Park
    city: Hebi
    factories:
      - id: f01
        name: Precision Parts
        industry: smart-manufacturing
        devices:
          - {id: f01-meter-1, type: power_meter}
          - {id: f01-line-1, type: production_line, capacity_units_per_hour: 1200}
          - {id: f01-env-1, type: env_sensor, thresholds: {temp_c: {min: 5, max: 35}}}
"""


def load(api: TestClient) -> None:
    """Load FLEET over PUT /v1/fleet."""
    response = api.put("/v1/fleet", content=FLEET, headers={"content-type": "application/yaml"})
    assert response.status_code == 200, response.text
    assert response.json()["devices"] == 3


def big_fleet(devices: int) -> str:
    """A fleet of ``devices`` meters, 100 per factory, 100 factories per park."""
    lines = ["parks:"]
    for n in range(devices):
        park, factory = n // 10_000, n // 100
        if n % 10_000 == 0:
            lines += [f"  - id: big-p{park}", "    factories:"]
        if n % 100 == 0:
            lines += [f"      - id: big-f{factory}", "        devices:"]
        lines.append(f"          - {{id: big-d{n}, type: power_meter}}")
    return "\n".join(lines) + "\n"
