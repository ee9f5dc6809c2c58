-- The metadata of store.Metadata: the same tables and keys as SQLite's
-- schema (internal/store/store.go), with timestamptz for times and
-- identifiers in the "C" collation, so ties order by UUID byte by byte
-- whatever the database's locale.
CREATE TABLE accounts (
	id text COLLATE "C" PRIMARY KEY,
	name text COLLATE "C" NOT NULL UNIQUE,
	created_at timestamptz NOT NULL
);

CREATE TABLE tokens (
	uuid text COLLATE "C" PRIMARY KEY,
	account text COLLATE "C" NOT NULL REFERENCES accounts(id),
	secret_sha256 text NOT NULL UNIQUE,
	name text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	expires_at timestamptz,
	revoked_at timestamptz,
	parent text COLLATE "C"
);
CREATE INDEX tokens_parent ON tokens(parent);
CREATE INDEX tokens_account ON tokens(account, created_at);

CREATE TABLE images (
	uuid text COLLATE "C" PRIMARY KEY,
	account text COLLATE "C" NOT NULL,
	parent text COLLATE "C",
	layer text NOT NULL,
	flat text,
	flat_bytes bigint NOT NULL DEFAULT 0,
	depth integer NOT NULL,
	tag text COLLATE "C",
	operation text COLLATE "C",
	env text,
	layer_bytes bigint NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL,
	deleted_at timestamptz,
	-- an imported chain's layers: see store.Image.Base, Hidden and Chain
	base text COLLATE "C",
	hidden boolean NOT NULL DEFAULT false,
	chain text
);
CREATE UNIQUE INDEX images_account_tag ON images(account, tag) WHERE tag IS NOT NULL;
CREATE UNIQUE INDEX images_account_chain ON images(account, chain) WHERE hidden;
CREATE INDEX images_account_created ON images(account, created_at);
CREATE INDEX images_parent ON images(parent);
CREATE INDEX images_layer ON images(layer);
CREATE INDEX images_operation ON images(operation);

CREATE TABLE files (
	uuid text COLLATE "C" PRIMARY KEY,
	account text COLLATE "C" NOT NULL,
	sha256 text NOT NULL,
	size bigint NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL,
	UNIQUE (account, sha256)
);

CREATE TABLE operations (
	uuid text COLLATE "C" PRIMARY KEY,
	account text COLLATE "C" NOT NULL,
	kind text NOT NULL,
	status text NOT NULL,
	error text,
	created_at timestamptz NOT NULL,
	started_at timestamptz,
	finished_at timestamptz,
	image_uuid text COLLATE "C",
	result_image_uuid text COLLATE "C",
	result_tag text,
	metadata text NOT NULL,
	cpu_seconds double precision NOT NULL DEFAULT 0,
	max_rss_bytes bigint NOT NULL DEFAULT 0,
	image_size bigint NOT NULL DEFAULT 0
);
-- Listing answers from this index alone (an index-only scan): metadata,
-- a run's output of up to 64 MiB, is never read by a list.
CREATE INDEX operations_list ON operations(account, created_at DESC, uuid)
	INCLUDE (kind, status, error, started_at, finished_at, image_uuid, result_image_uuid, result_tag, cpu_seconds, max_rss_bytes, image_size);
-- The in-flight count of the concurrency limit, and recovery.
CREATE INDEX operations_inflight ON operations(account) WHERE status IN ('PENDING', 'ASSIGNED', 'EXECUTING');
CREATE INDEX operations_finished ON operations(finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE events (
	operation text COLLATE "C" NOT NULL,
	id bigint NOT NULL,
	ts timestamptz NOT NULL,
	spid integer NOT NULL,
	type text NOT NULL,
	data text NOT NULL,
	PRIMARY KEY (operation, id)
);
