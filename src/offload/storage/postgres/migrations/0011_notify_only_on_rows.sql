-- Wake-ups are sent by the transactions themselves, saying what kind of change they made.
--
-- The statement trigger this replaces fired even when an INSERT … SELECT appended no rows,
-- and every claim ran such an INSERT (scheduled tasks that came due): each idle worker's
-- empty claim woke every other idle worker, which claimed again — a busy loop at half a
-- core per idle worker. Nothing told a waiter for a result from a claim either, so every
-- claim and progress report woke every waiter for a read that competed with the work.
--
-- Now each transaction that appends events sends one NOTIFY before COMMIT whose payload
-- holds flags (see offload.storage.postgres.store): 'w' work may have become claimable,
-- 'd' a task may have finished. Idle workers wake on 'w', waiters for results on 'd', live
-- event streams on any notification.
DROP TRIGGER task_events_notify ON task_events;
DROP FUNCTION offload_notify();

-- Scheduled tasks whose time has come become queued (as SqlStore._set_ready does one by
-- one: queued_at = now, sort_key = now - priority * aging). Every claim runs this first; as
-- a function its plan is made once per connection instead of at every claim (0.3 ms).
CREATE FUNCTION offload_promote(p_now double precision, p_aging double precision,
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
        PERFORM pg_notify('offload_tasks', 'wd');
    END IF;
    RETURN moved_count;
END
$$;
