-- Active response: what was blocked and when to undo it, so that a restart still unblocks on time.
CREATE TABLE response_blocks (
    -- How to undo it: the response's command as a JSON array (a built-in name, or the program
    -- and its arguments), with the hosts.deny path for the hosts-deny built-in.
    action       TEXT NOT NULL,
    ip           TEXT NOT NULL,
    user         TEXT,
    rule         INTEGER NOT NULL,
    blocked_at   INTEGER NOT NULL,  -- milliseconds since the epoch
    unblock_at   INTEGER NOT NULL,  -- milliseconds since the epoch
    attempts     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (action, ip)
);
CREATE INDEX response_blocks_due ON response_blocks (unblock_at);
