-- The (queue, owner, sort_key) index of queued tasks serves only queues with
-- fairness 'owner', yet every queued task paid an index entry for it (6-8% of a bulk
-- submit). The store now keeps it only while such a queue exists: it builds it again at
-- open, or when a queue's fairness is set to 'owner' (see storage/flow_sql.py).
DROP INDEX IF EXISTS tasks_ready_owner;
