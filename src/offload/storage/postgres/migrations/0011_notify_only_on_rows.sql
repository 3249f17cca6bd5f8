-- A statement-level trigger fires even when its INSERT … SELECT appends no rows, and every
-- empty claim holds such an INSERT for its 'claimed' events: each idle worker's empty claim
-- woke every other idle worker, which claimed again — a busy loop at half a core per worker.
-- Notify only when the statement really appended events.
DROP TRIGGER task_events_notify ON task_events;

CREATE OR REPLACE FUNCTION offload_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM appended) THEN
        PERFORM pg_notify('offload_tasks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_events_notify AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION offload_notify();
