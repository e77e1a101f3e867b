-- Park signals are shared on MQTT by the maintenance process (one leader among its
-- instances, services/maintenance/sharing.py), no longer by the API: the grant to publish
-- parksense/v1/{park}/signals moves to the platform role "maintenance", which may do
-- nothing else (least privilege); the API's MQTT credential keeps no grant.
DELETE FROM mqtt_platform_grants WHERE role = 'api' AND topic = 'parksense/v1/+/signals';
INSERT INTO mqtt_platform_grants (role, action, topic) VALUES
    ('maintenance', 'publish', 'parksense/v1/+/signals');
