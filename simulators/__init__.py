"""Device simulators: a demo fleet, seeded signal models, an MQTT gateway publisher, a benchmark."""
