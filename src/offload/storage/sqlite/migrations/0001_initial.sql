-- Offload schema, version 1 (SQLite).
-- Times are epoch seconds (REAL). JSON columns hold text. Status values must equal
-- offload.domain.status.Status (a test compares this CHECK with the enum).

CREATE TABLE tasks (
    id                   TEXT PRIMARY KEY,
    type                 TEXT NOT NULL,
    title                TEXT,
    description          TEXT,
    instructions         TEXT,
    input                TEXT NOT NULL DEFAULT '{}',
    tags                 TEXT NOT NULL DEFAULT '[]',
    queue                TEXT NOT NULL DEFAULT 'default',
    owner                TEXT,
    requester            TEXT,
    priority             INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    capabilities         TEXT NOT NULL DEFAULT '[]',
    caps_key             TEXT NOT NULL DEFAULT '',
    agent_id             TEXT,
    assignment           TEXT,
    assigned_agent       TEXT,
    depends_on           TEXT NOT NULL DEFAULT '[]',
    parent_id            TEXT,
    ref                  TEXT,
    status               TEXT NOT NULL CHECK (status IN (
                             'blocked', 'scheduled', 'queued', 'assigned', 'running',
                             'reviewing', 'paused', 'completed', 'failed', 'cancelled')),
    paused_from          TEXT,
    attempt              INTEGER NOT NULL DEFAULT 0,
    max_retries          INTEGER NOT NULL DEFAULT 3,
    retry                TEXT,
    timeout_s            REAL,
    run_at               REAL,
    deadline             REAL,
    lease_id             TEXT,
    lease_holder         TEXT,
    lease_expires_at     REAL,
    cancel_requested     INTEGER NOT NULL DEFAULT 0,
    pause_requested      INTEGER NOT NULL DEFAULT 0,
    progress             REAL NOT NULL DEFAULT 0,
    current_step         TEXT,
    checkpoints          TEXT NOT NULL DEFAULT '[]',
    artifacts            TEXT NOT NULL DEFAULT '[]',
    result               TEXT,
    error                TEXT,
    errors               TEXT NOT NULL DEFAULT '[]',
    review               TEXT,
    cache_hit            INTEGER NOT NULL DEFAULT 0,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    queued_at            REAL,
    started_at           REAL,
    finished_at          REAL,
    estimated_duration_s REAL,
    actual_duration_s    REAL,
    idempotency_key      TEXT,
    cache_ttl_s          REAL,
    complexity           TEXT,
    metadata             TEXT NOT NULL DEFAULT '{}',
    -- Claim order: ready_at - priority * aging_interval (linear aging in one stored key).
    sort_key             REAL NOT NULL DEFAULT 0,
    -- How many tasks wait on this one; 0 lets a completion skip dependency resolution.
    n_dependents         INTEGER NOT NULL DEFAULT 0
);

-- Claims walk this partial index in order: O(log n) with any number of queued tasks.
CREATE INDEX tasks_ready ON tasks (queue, sort_key) WHERE status = 'queued';
CREATE INDEX tasks_scheduled ON tasks (run_at) WHERE status = 'scheduled';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE lease_id IS NOT NULL;
CREATE INDEX tasks_deadline ON tasks (deadline)
    WHERE deadline IS NOT NULL AND status NOT IN ('completed', 'failed', 'cancelled');
-- Completed tasks (the bulk of any history) stay out of this index: finishing a task then
-- costs one index delete instead of a delete and an insert; listing completed tasks walks
-- the primary key, where they are the majority anyway.
CREATE INDEX tasks_status ON tasks (status, id) WHERE status != 'completed';
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_agent ON tasks (assigned_agent) WHERE assigned_agent IS NOT NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (coalesce(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_deps (
    task_id       TEXT NOT NULL,
    depends_on_id TEXT NOT NULL,
    on_status     TEXT NOT NULL CHECK (on_status IN ('completed', 'failed', 'finished')),
    cond          TEXT,
    state         TEXT NOT NULL DEFAULT 'wait' CHECK (state IN ('wait', 'satisfied', 'impossible')),
    PRIMARY KEY (task_id, depends_on_id)
);
CREATE INDEX task_deps_upstream ON task_deps (depends_on_id);

-- Append-only. seq is global, so it orders one task's events and resumes a live stream.
CREATE TABLE task_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    actor   TEXT,
    data    TEXT
);
CREATE INDEX task_events_task ON task_events (task_id, seq);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('llm', 'program', 'human')),
    capabilities    TEXT NOT NULL DEFAULT '{}',
    max_concurrency INTEGER NOT NULL DEFAULT 1,
    queues          TEXT NOT NULL DEFAULT '["default"]',
    status          TEXT NOT NULL CHECK (status IN ('online', 'busy', 'draining', 'offline')),
    last_heartbeat  REAL,
    endpoint        TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
