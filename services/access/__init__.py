"""Identity and access at the broker: credentials issued from the registry, kept in force."""
