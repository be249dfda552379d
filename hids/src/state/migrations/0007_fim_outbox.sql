-- FIM changes written to the baseline whose alert is not spooled yet. The trigger fills it in the
-- very transaction that records the change (fim_change), whoever writes it (a scan, a real-time
-- check, `hids fim check`); the agent deletes a row once the change's alert is in the spool, and
-- at start reports what is left (a crash between the two), so a change is never absorbed by the
-- baseline without its alert.
CREATE TABLE fim_outbox (
    change_id INTEGER PRIMARY KEY,
    key       BLOB NOT NULL,
    record    TEXT NOT NULL
);
CREATE INDEX fim_outbox_key ON fim_outbox (key, change_id);

CREATE TRIGGER fim_outbox_fill AFTER INSERT ON fim_change
BEGIN
    INSERT INTO fim_outbox (change_id, key, record) VALUES (new.id, new.key, new.record);
END;
