-- Schedules (PRODUCT.md §4.9): a task template on a timetable. Each firing is recorded under
-- a unique (schedule_id, fire_time) in the transaction that creates its task, so a firing
-- happens exactly once however many servers run.
CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    owner         TEXT,
    spec          TEXT NOT NULL,
    paused        INTEGER NOT NULL DEFAULT 0,
    next_fire_at  DOUBLE PRECISION NOT NULL,
    last_fired_at DOUBLE PRECISION,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX schedules_name ON schedules (coalesce(owner, ''), name);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;

CREATE TABLE schedule_firings (
    schedule_id TEXT NOT NULL,
    fire_time   DOUBLE PRECISION NOT NULL,
    task_id     TEXT,
    PRIMARY KEY (schedule_id, fire_time)
);
