-- Roles (issue 17): API nodes queue runs with their request for workers to
-- claim; a node that runs an operation itself (an import, a fork) names
-- itself in node, so workers never claim it and only that node's restart
-- fails it; a cancel reaches the worker through the row; workers publish the address other nodes reach them at; the
-- nodes authenticate to each other with the cluster's secret, made here
-- from PostgreSQL's strong random source (gen_random_uuid, PostgreSQL 13+).
ALTER TABLE operations
	ADD COLUMN request text,
	ADD COLUMN node text COLLATE "C",
	-- a cancel asked on a node that does not run it: the worker that does
	-- hears it (NOTIFY arbor_cancel) or finds it at its next heartbeat
	ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE workers ADD COLUMN address text NOT NULL DEFAULT '';
CREATE TABLE cluster (
	id integer PRIMARY KEY CHECK (id = 1),
	secret text NOT NULL
);
INSERT INTO cluster(id, secret) VALUES (1, replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''));
