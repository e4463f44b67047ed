-- What the lists of a pool's queue read (an agent's search for a job, the
-- queue watch) without walking the pool's whole history.

-- A job's demands in a column of their own, beside its spec: those lists
-- match or show only demands, and read this small JSON array instead of
-- decoding every job's spec. NULL when the job has none.
ALTER TABLE jobs ADD COLUMN demands TEXT;
UPDATE jobs SET demands = json_extract(spec, '$.demands') WHERE json_type(spec, '$.demands') = 'array';

-- The agents that hold a job, by pool: the queue watch lists their
-- finished jobs, and a pool may have thousands of idle agents.
CREATE INDEX agents_holding ON agents (pool_id, request_id) WHERE request_id != 0;
