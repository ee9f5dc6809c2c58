-- Memory checkpoints kept with images in the bucket the nodes share: their
-- sizes, recorded once a checkpoint is uploaded and deleted with the
-- bucket's copy, so that every node counts them (an image's
-- checkpoint_bytes, df, the storage quota) whether it holds a copy or not.
CREATE TABLE checkpoints (
	image text COLLATE "C" PRIMARY KEY,
	account text COLLATE "C" NOT NULL,
	bytes bigint NOT NULL,
	stored_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX checkpoints_account ON checkpoints(account);
