-- One NOTIFY channel per kind of change instead of one for all (see
-- offload.storage.postgres.store.CHANNELS): offload_work when work may have become
-- claimable, offload_done when a task may have finished, offload_other for the rest
-- (claims). Each process LISTENs only to the channels it waits on, so an idle worker no
-- longer wakes for other workers' claims, nor a waiter for results for every submit.
-- The payload still holds the flags ('w', 'd', '-').
CREATE OR REPLACE FUNCTION offload_promote(p_now double precision, p_aging double precision,
                                           p_event text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    moved_count integer;
BEGIN
    WITH due AS (
        SELECT id FROM tasks WHERE status = 'scheduled' AND run_at <= p_now
        LIMIT 1000 FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE tasks SET status = 'queued', queued_at = p_now,
               sort_key = p_now - priority * p_aging, updated_at = p_now, paused_from = NULL
         WHERE id IN (SELECT id FROM due)
        RETURNING id
    )
    INSERT INTO task_events (task_id, at, kind, actor, data)
    SELECT id, p_now, 'status_changed', NULL, p_event FROM moved;
    GET DIAGNOSTICS moved_count = ROW_COUNT;
    IF moved_count > 0 THEN
        PERFORM pg_notify('offload_work', 'wd');
        PERFORM pg_notify('offload_done', 'wd');
    END IF;
    RETURN moved_count;
END
$$;
