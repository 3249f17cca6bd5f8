-- Agents: assignment state (PRODUCT.md §5). Dispatch mode per queue (a queue without a row
-- is `pull`, so claims never look here), and auction bids.

CREATE TABLE queue_dispatch (
    queue             TEXT PRIMARY KEY,
    mode              TEXT NOT NULL CHECK (mode IN ('pull', 'push', 'hybrid', 'auction')),
    hybrid_threshold  INTEGER NOT NULL DEFAULT 8 CHECK (hybrid_threshold BETWEEN 1 AND 10),
    auction_window_ms INTEGER NOT NULL DEFAULT 200,
    updated_at        DOUBLE PRECISION NOT NULL
);

-- One open auction per task; closes_at ends the bidding window.
CREATE TABLE auctions (
    task_id    TEXT PRIMARY KEY,
    opened_at  DOUBLE PRECISION NOT NULL,
    closes_at  DOUBLE PRECISION NOT NULL,
    closed     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE auction_bids (
    task_id  TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    cost     DOUBLE PRECISION NOT NULL,
    eta_s    DOUBLE PRECISION NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_id, agent_id)
);

-- The maintenance pass finds silent agents without scanning offline ones.
CREATE INDEX agents_live ON agents (last_heartbeat) WHERE status != 'offline';

-- A task's team ({size, roles, mode}); NULL for the usual one-agent task.
ALTER TABLE tasks ADD COLUMN team TEXT;
