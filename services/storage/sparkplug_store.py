"""The Sparkplug B host's state in PostgreSQL: read under a row lock, judged, written back.

Called by the writer inside a batch's transaction, so an edge node's state moves exactly
when the readings and dead letters of its messages commit (and not at all when they roll
back). Rows are created and locked in key order, so two workers whose batches name the same
edge nodes wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from services.core.sparkplug import DeviceBirth, NodeKey, NodeState, SparkplugOutcome, node_key
from services.core.sparkplug_payload import Frame

# Judges a batch's Sparkplug messages against the states read here (services.core.sparkplug).
SparkplugJudge = Callable[[Mapping[NodeKey, NodeState], Sequence[Frame]], SparkplugOutcome]

_CREATE = """
INSERT INTO sparkplug_nodes (park_id, factory_id, seen)
SELECT park_id, factory_id, %s FROM unnest(%s::text[], %s::text[]) AS n (park_id, factory_id)
ORDER BY park_id, factory_id
ON CONFLICT (park_id, factory_id) DO NOTHING
"""

_LOCK = """
SELECT park_id, factory_id, bd_seq, seq, seen, rebirth_at, devices
FROM sparkplug_nodes
WHERE (park_id, factory_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
ORDER BY park_id, factory_id
FOR UPDATE
"""

_UPDATE = """
UPDATE sparkplug_nodes
SET bd_seq = %s, seq = %s, seen = %s, rebirth_at = %s, devices = %s, updated_at = now()
WHERE park_id = %s AND factory_id = %s
"""


async def apply(
    cur: psycopg.AsyncCursor[TupleRow], frames: Sequence[Frame], judge: SparkplugJudge
) -> SparkplugOutcome:
    """Judge ``frames`` against their edge nodes' stored states and store the new states."""
    keys = sorted({node_key(frame) for frame in frames})
    parks = [park for park, _ in keys]
    factories = [factory for _, factory in keys]
    await cur.execute(_CREATE, (NodeState().seen, parks, factories))
    await cur.execute(_LOCK, (parks, factories))
    states = {(row[0], row[1]): _state(row) for row in await cur.fetchall()}
    outcome = judge(states, frames)
    changed = [
        (key, state) for key, state in sorted(outcome.states.items()) if states.get(key) != state
    ]
    if changed:
        await cur.executemany(
            _UPDATE,
            [
                (s.bd_seq, s.seq, s.seen, s.rebirth_at, Jsonb(_devices_json(s)), park, factory)
                for (park, factory), s in changed
            ],
        )
    return outcome


def _state(row: TupleRow) -> NodeState:
    devices = {
        device_id: DeviceBirth(
            born_at=datetime.fromisoformat(birth["born_at"]),
            seq=birth.get("seq"),
            aliases={int(alias): str(name) for alias, name in birth["aliases"].items()},
            datatypes={str(name): int(t) for name, t in birth["datatypes"].items()},
        )
        for device_id, birth in row[6].items()
    }
    return NodeState(
        bd_seq=row[2], seq=row[3], seen=int(row[4]), rebirth_at=row[5], devices=devices
    )


def _devices_json(state: NodeState) -> dict[str, dict[str, object]]:
    return {
        device_id: {
            "born_at": birth.born_at.isoformat(),
            "seq": birth.seq,
            "aliases": {str(alias): name for alias, name in birth.aliases.items()},
            "datatypes": dict(birth.datatypes),
        }
        for device_id, birth in state.devices.items()
    }
