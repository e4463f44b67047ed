-- agentry-server's first schema. Times are Unix nanoseconds, 0 when unset.
-- Ids come from AUTOINCREMENT so a deleted object's id is never reused: an
-- operator holding an old agent id must not delete someone else's agent.
-- *_key columns hold case-folded names for the case-insensitive lookups.

CREATE TABLE pools (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL UNIQUE,
    created_on INTEGER NOT NULL
);

CREATE TABLE agents (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id             INTEGER NOT NULL REFERENCES pools (id),
    name                TEXT    NOT NULL,
    name_key            TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    os_description      TEXT    NOT NULL,
    enabled             INTEGER NOT NULL,
    max_parallelism     INTEGER NOT NULL,
    provisioning_state  TEXT    NOT NULL,
    client_id           TEXT    NOT NULL,
    client_id_key       TEXT,                 -- NULL when there is no client id
    authorization_url   TEXT    NOT NULL,
    key_exponent        BLOB,
    key_modulus         BLOB,
    system_capabilities TEXT,                 -- JSON object; NULL for none
    user_capabilities   TEXT,
    created_on          INTEGER NOT NULL,
    request_id          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (pool_id, name_key)
);
CREATE UNIQUE INDEX agents_client_id ON agents (client_id_key) WHERE client_id_key IS NOT NULL;

CREATE TABLE listener_tokens (
    hash       TEXT    PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE INDEX listener_tokens_agent ON listener_tokens (agent_id);

CREATE TABLE sessions (
    id                  TEXT    PRIMARY KEY,
    agent_id            INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    pool_id             INTEGER NOT NULL,
    owner_name          TEXT    NOT NULL,
    key                 BLOB,
    use_fips_encryption INTEGER NOT NULL,
    created_on          INTEGER NOT NULL,
    last_seen           INTEGER NOT NULL
);
CREATE INDEX sessions_agent ON sessions (agent_id);

CREATE TABLE jobs (
    request_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id      INTEGER NOT NULL REFERENCES pools (id),
    pool_name    TEXT    NOT NULL,
    job_id       TEXT    NOT NULL,
    plan_id      TEXT    NOT NULL,
    timeline_id  TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    spec         TEXT    NOT NULL,            -- jobapi.JobSpec as JSON
    queue_time   INTEGER NOT NULL,
    assign_time  INTEGER NOT NULL DEFAULT 0,
    receive_time INTEGER NOT NULL DEFAULT 0,
    start_time   INTEGER NOT NULL DEFAULT 0,
    finish_time  INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    result       TEXT    NOT NULL DEFAULT '',
    agent_id     INTEGER NOT NULL DEFAULT 0,  -- no foreign key: the job outlives its agent
    agent_name   TEXT    NOT NULL DEFAULT '',
    token_hash   TEXT,                        -- NULL until assigned
    attempts     INTEGER NOT NULL DEFAULT 0,
    cancel_time  INTEGER NOT NULL DEFAULT 0,
    -- What the agent reported so far, for the per-job limits.
    feed_lines   INTEGER NOT NULL DEFAULT 0,
    feed_bytes   INTEGER NOT NULL DEFAULT 0,
    log_count    INTEGER NOT NULL DEFAULT 0,
    log_bytes    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_pool ON jobs (pool_id, request_id);
-- The hot path of every agent poll: the oldest queued jobs of a pool.
CREATE INDEX jobs_queued ON jobs (pool_id, request_id) WHERE assign_time = 0 AND finish_time = 0;
CREATE INDEX jobs_token ON jobs (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX jobs_unfinished ON jobs (pool_id, request_id) WHERE finish_time = 0;

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    type       TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    request_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_agent ON messages (agent_id, id);
CREATE INDEX messages_request ON messages (request_id) WHERE request_id <> 0;

CREATE TABLE timeline_records (
    request_id INTEGER NOT NULL REFERENCES jobs (request_id) ON DELETE CASCADE,
    record_key TEXT    NOT NULL,              -- the record id, lower case
    ord        INTEGER NOT NULL,              -- order first seen
    record     TEXT    NOT NULL,              -- pipelines.TimelineRecord as JSON
    PRIMARY KEY (request_id, record_key)
);
CREATE INDEX timeline_records_order ON timeline_records (request_id, ord);

CREATE TABLE feed_lines (
    request_id INTEGER NOT NULL REFERENCES jobs (request_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    line       TEXT    NOT NULL,
    PRIMARY KEY (request_id, seq)
) WITHOUT ROWID;

CREATE TABLE logs (
    request_id      INTEGER NOT NULL REFERENCES jobs (request_id) ON DELETE CASCADE,
    log_id          INTEGER NOT NULL,
    path            TEXT    NOT NULL,
    line_count      INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    created_on      INTEGER NOT NULL,
    last_changed_on INTEGER NOT NULL,
    PRIMARY KEY (request_id, log_id)
);

-- A log's content is the concatenation of its chunks in id order; an
-- upload appends chunks of at most 1 MiB.
CREATE TABLE log_chunks (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL,
    log_id     INTEGER NOT NULL,
    data       BLOB    NOT NULL,
    FOREIGN KEY (request_id, log_id) REFERENCES logs (request_id, log_id) ON DELETE CASCADE
);
CREATE INDEX log_chunks_log ON log_chunks (request_id, log_id, id);

CREATE TABLE admin_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,       -- SHA-256 of the token, hex
    created_on INTEGER NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0,    -- 0: never
    revoked_at INTEGER NOT NULL DEFAULT 0     -- 0: not revoked
);
-- A name may be reused once the token that had it is revoked.
CREATE UNIQUE INDEX admin_tokens_live_name ON admin_tokens (name_key) WHERE revoked_at = 0;
