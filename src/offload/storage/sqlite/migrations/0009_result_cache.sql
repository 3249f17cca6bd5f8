-- Result cache (PRODUCT.md §4.10): a completed result, keyed by type, type version and the
-- canonical input, reused by submits within its TTL.
CREATE TABLE result_cache (
    key        TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    result     TEXT,
    task_id    TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX result_cache_type ON result_cache (type);
CREATE INDEX result_cache_expires ON result_cache (expires_at);

-- The key a task's result is cached under (NULL: no cache_ttl_s).
ALTER TABLE tasks ADD COLUMN cache_key TEXT;
