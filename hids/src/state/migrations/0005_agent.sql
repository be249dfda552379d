-- The running agent's status: one row, rewritten every few seconds, read by `hids status`.
CREATE TABLE agent_status (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    pid     INTEGER NOT NULL,
    started INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    -- JSON: counters, rates over the last minute and hour, sources, rule hits.
    body    TEXT NOT NULL
);
