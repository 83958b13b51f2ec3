DROP TABLE IF EXISTS sent_messages;
DROP TABLE IF EXISTS deliveries;
DROP TABLE IF EXISTS webhooks;
DROP TABLE IF EXISTS outbox_events;
