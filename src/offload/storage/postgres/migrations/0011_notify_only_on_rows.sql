-- Notifications say what kind of change they carry, so each listener wakes only for its own.
--
-- A statement-level trigger fires even when its INSERT … SELECT appends no rows, and every
-- empty claim holds such an INSERT for its 'claimed' events: each idle worker's empty claim
-- woke every other idle worker, which claimed again — a busy loop at half a core per worker.
-- Now nothing is sent for a statement that appended nothing, and the payload holds flags:
--   w  work may have become claimable (anything but a claim or an attempt's own reports);
--   d  a task may have finished (anything but creation, a claim or an attempt's reports).
-- Idle workers wake on 'w', waiters for a result on 'd', live event streams on any.
DROP TRIGGER task_events_notify ON task_events;

CREATE OR REPLACE FUNCTION offload_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    work boolean;
    done boolean;
BEGIN
    SELECT bool_or(kind NOT IN ('claimed', 'progress', 'log', 'checkpoint', 'artifact')),
           bool_or(kind NOT IN ('created', 'claimed', 'progress', 'log', 'checkpoint',
                                'artifact'))
      INTO work, done
      FROM appended;
    IF work IS NOT NULL THEN
        PERFORM pg_notify('offload_tasks',
                          CASE WHEN work THEN 'w' ELSE '' END
                          || CASE WHEN done THEN 'd' ELSE '' END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_events_notify AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION offload_notify();
