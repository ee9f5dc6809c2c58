-- The work queue of store.Queue: workers announce themselves with a
-- heartbeat row; an operation claimed by one carries its lease. Leases
-- are decided by the database clock (clock_timestamp()) only.
CREATE TABLE workers (
	id text COLLATE "C" PRIMARY KEY,
	slots integer NOT NULL CHECK (slots > 0),
	registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

ALTER TABLE operations
	-- when the operation (re)entered PENDING: the locality delay counts from it
	ADD COLUMN queued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	-- the worker holding (or that last held) the lease; kept when the
	-- operation ends, so a step on its result prefers that worker
	ADD COLUMN lease_owner text COLLATE "C",
	-- the fencing number: one more on every claim
	ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0,
	ADD COLUMN lease_expires timestamptz,
	ADD COLUMN attempts integer NOT NULL DEFAULT 0;
CREATE INDEX operations_queued ON operations(queued_at, uuid) WHERE status = 'PENDING';
CREATE INDEX operations_leased ON operations(lease_expires) WHERE status IN ('ASSIGNED', 'EXECUTING');
CREATE INDEX operations_owner ON operations(lease_owner) WHERE status IN ('ASSIGNED', 'EXECUTING');
