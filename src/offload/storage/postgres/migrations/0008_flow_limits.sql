-- Flow control: per-type concurrency and rate limits, named resources (PRODUCT.md §4.8).

CREATE TABLE task_limits (
    type          TEXT PRIMARY KEY,
    concurrency   INTEGER CHECK (concurrency IS NULL OR concurrency >= 1),
    key_path      TEXT,
    strategy      TEXT NOT NULL DEFAULT 'queue'
                  CHECK (strategy IN ('queue', 'cancel_newest', 'cancel_in_progress')),
    rate_count    INTEGER CHECK (rate_count IS NULL OR rate_count >= 1),
    rate_period_s DOUBLE PRECISION CHECK (rate_period_s IS NULL OR rate_period_s > 0),
    updated_at    DOUBLE PRECISION NOT NULL
);

-- One token bucket per rate-limited key: capacity rate_count, refilled continuously.
CREATE TABLE rate_buckets (
    limit_key  TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE resources (
    name       TEXT PRIMARY KEY,
    capacity   INTEGER NOT NULL CHECK (capacity >= 0),
    updated_at DOUBLE PRECISION NOT NULL
);

-- The group a task counts against (NULL: its type has no limits) and the units it holds.
ALTER TABLE tasks ADD COLUMN limit_key TEXT;
ALTER TABLE tasks ADD COLUMN resources TEXT;

-- Usage is counted from live leases, so every outcome returns units and slots by itself.
CREATE INDEX tasks_limited_live ON tasks (limit_key)
    WHERE limit_key IS NOT NULL AND status IN ('assigned', 'running');
CREATE INDEX tasks_resources_live ON tasks (id)
    WHERE resources IS NOT NULL AND status IN ('assigned', 'running');

-- Per-queue options. fairness 'owner': among equal priority, claims alternate across owners.
CREATE TABLE queue_settings (
    queue      TEXT PRIMARY KEY,
    fairness   TEXT NOT NULL DEFAULT 'none' CHECK (fairness IN ('none', 'owner')),
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX tasks_ready_owner ON tasks (queue, coalesce(owner, ''), sort_key)
    WHERE status = 'queued';
