-- MQTT identity: credentials issued from the registry, stored as salted PBKDF2-SHA512
-- hashes only, and the views that say who may connect and what each may do. Mosquitto
-- gets these views rendered into its password, ACL and subscription files
-- (services/access/sync.py); EMQX queries them directly (docs/security.md).

CREATE TABLE mqtt_credentials (
    -- "{kind}.{subject}" (services/core/access.py); a client id must start with "{username}.".
    username   text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('device', 'gateway', 'reader', 'platform')),
    -- The device, factory, park or platform role the credential belongs to. No foreign
    -- key: a fleet load replaces the registry rows, and a credential must survive that.
    -- A credential whose subject is not registered is simply not rendered (cannot connect).
    subject    text NOT NULL,
    -- PBKDF2-HMAC-SHA512 of the password: Mosquitto's "$7$" format and EMQX's pbkdf2.
    iterations integer NOT NULL CHECK (iterations > 0),
    salt       text NOT NULL,
    hash       bytea NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, subject)
);

-- What each platform role may do; the rows are part of the schema.
CREATE TABLE mqtt_platform_grants (
    role   text NOT NULL,
    action text NOT NULL CHECK (action IN ('publish', 'subscribe')),
    topic  text NOT NULL,
    PRIMARY KEY (role, action, topic)
);
INSERT INTO mqtt_platform_grants (role, action, topic) VALUES
    -- Ingest reads every device topic (JSON and Sparkplug B) and asks gateways to rebirth.
    ('ingest', 'subscribe', 'parksense/v1/#'),
    ('ingest', 'subscribe', 'spBv1.0/#'),
    ('ingest', 'publish', 'spBv1.0/+/NCMD/+'),
    -- The API shares park signals (retained) with readers.
    ('api', 'publish', 'parksense/v1/+/signals'),
    -- The simulator and the benchmarks stand in for every gateway of every park.
    ('simulator', 'publish', 'parksense/v1/#'),
    ('simulator', 'publish', 'spBv1.0/#'),
    ('simulator', 'subscribe', 'spBv1.0/+/NCMD/+'),
    ('simulator', 'subscribe', 'spBv1.0/+/DCMD/+/+'),
    ('simulator', 'subscribe', 'spBv1.0/STATE/+');

-- Credentials that may connect now: platform ones always, the others while their device,
-- factory or park is registered.
CREATE VIEW mqtt_users AS
SELECT c.username, c.kind, c.subject, c.iterations, c.salt, c.hash,
       encode(c.hash, 'hex') AS password_hash,
       c.username || '.' AS client_id_prefix
FROM mqtt_credentials c
WHERE c.kind = 'platform'
   OR (c.kind = 'device' AND EXISTS (SELECT 1 FROM devices d WHERE d.device_id = c.subject))
   OR (c.kind = 'gateway' AND EXISTS (SELECT 1 FROM factories f WHERE f.factory_id = c.subject))
   OR (c.kind = 'reader' AND EXISTS (SELECT 1 FROM parks p WHERE p.park_id = c.subject));

-- Every topic (or filter) each credential may publish to or subscribe to; nothing else is
-- allowed. "subscribe" also grants receiving what the filter matches.
CREATE VIEW mqtt_acl (username, action, topic) AS
-- A device: its own telemetry and status topics.
SELECT c.username, 'publish', concat_ws('/', 'parksense/v1', d.park_id, d.factory_id, d.device_id, ch.channel)
FROM mqtt_credentials c
JOIN devices d ON c.kind = 'device' AND d.device_id = c.subject
CROSS JOIN (VALUES ('telemetry'), ('status')) AS ch (channel)
UNION ALL
-- A gateway: the same for every device of its factory ...
SELECT c.username, 'publish', concat_ws('/', 'parksense/v1', d.park_id, d.factory_id, d.device_id, ch.channel)
FROM mqtt_credentials c
JOIN devices d ON c.kind = 'gateway' AND d.factory_id = c.subject
CROSS JOIN (VALUES ('telemetry'), ('status')) AS ch (channel)
UNION ALL
-- ... and Sparkplug B as the factory's edge node (group = park) ...
SELECT c.username, 'publish', concat_ws('/', 'spBv1.0', f.park_id, m.message_type, f.factory_id)
FROM mqtt_credentials c
JOIN factories f ON c.kind = 'gateway' AND f.factory_id = c.subject
CROSS JOIN (VALUES ('NBIRTH'), ('NDEATH'), ('NDATA')) AS m (message_type)
UNION ALL
SELECT c.username, 'publish', concat_ws('/', 'spBv1.0', d.park_id, m.message_type, d.factory_id, d.device_id)
FROM mqtt_credentials c
JOIN devices d ON c.kind = 'gateway' AND d.factory_id = c.subject
CROSS JOIN (VALUES ('DBIRTH'), ('DDEATH'), ('DDATA')) AS m (message_type)
UNION ALL
-- ... receiving the commands addressed to it and the host application's state.
SELECT c.username, 'subscribe', t.topic
FROM mqtt_credentials c
JOIN factories f ON c.kind = 'gateway' AND f.factory_id = c.subject
CROSS JOIN LATERAL (VALUES
    (concat_ws('/', 'spBv1.0', f.park_id, 'NCMD', f.factory_id)),
    (concat_ws('/', 'spBv1.0', f.park_id, 'DCMD', f.factory_id, '+')),
    ('spBv1.0/STATE/+')
) AS t (topic)
UNION ALL
-- A reader: its park's shared signals.
SELECT c.username, 'subscribe', concat_ws('/', 'parksense/v1', p.park_id, 'signals')
FROM mqtt_credentials c
JOIN parks p ON c.kind = 'reader' AND p.park_id = c.subject
UNION ALL
SELECT c.username, g.action, g.topic
FROM mqtt_credentials c
JOIN mqtt_platform_grants g ON c.kind = 'platform' AND g.role = c.subject;
