"""The live stream of a park's signals: a pure hub (``hub.py``, ``frames.py``) and its poller.

```
poller.py  ParkPoller: every stream_interval_s, signal_queries.live_states (the query
           behind /signals) ─▶ a ParkFrame (frames.py) ─▶ its ParkFeed
hub.py     ParkFeed: event ids, replay, one bounded queue per Subscription (no I/O)
```
"""
