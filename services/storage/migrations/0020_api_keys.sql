-- Scoped API keys and dashboard sessions. Only SHA-256 digests of the secrets are stored:
-- a key or session token is 256 random bits, so the digest cannot be reversed or guessed.
-- IF NOT EXISTS: the file may be renumbered when branches merge without failing twice.
CREATE TABLE IF NOT EXISTS api_keys (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    scope text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    key_digest bytea NOT NULL UNIQUE CHECK (octet_length(key_digest) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A session belongs to a stored key (revoking the key ends its sessions) or to a
-- bootstrap key from PARKSENSE_API_API_KEYS, remembered by its digest.
CREATE TABLE IF NOT EXISTS api_sessions (
    token_digest bytea PRIMARY KEY CHECK (octet_length(token_digest) = 32),
    key_name text REFERENCES api_keys (name) ON DELETE CASCADE,
    bootstrap_digest bytea CHECK (octet_length(bootstrap_digest) = 32),
    scope text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK ((key_name IS NULL) <> (bootstrap_digest IS NULL))
);

CREATE INDEX IF NOT EXISTS api_sessions_expires_at ON api_sessions (expires_at);
