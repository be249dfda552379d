-- The alert spool: each alert once, and one row per output that has yet to deliver it.
CREATE TABLE spool_alert (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    level      INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE spool_pending (
    output   TEXT NOT NULL,
    alert_id INTEGER NOT NULL REFERENCES spool_alert(id) ON DELETE CASCADE,
    PRIMARY KEY (output, alert_id)
) WITHOUT ROWID;
CREATE INDEX spool_pending_alert ON spool_pending(alert_id);
-- What the size cap drops first.
CREATE INDEX spool_alert_level ON spool_alert(level, id);
-- An alert goes when the last output has delivered it.
CREATE TRIGGER spool_prune AFTER DELETE ON spool_pending
WHEN NOT EXISTS (SELECT 1 FROM spool_pending WHERE alert_id = OLD.alert_id)
BEGIN
    DELETE FROM spool_alert WHERE id = OLD.alert_id;
END;
-- Mails sent, for the hourly cap across restarts.
CREATE TABLE email_sent (
    output  TEXT NOT NULL,
    sent_ms INTEGER NOT NULL
);
CREATE INDEX email_sent_time ON email_sent(output, sent_ms);
