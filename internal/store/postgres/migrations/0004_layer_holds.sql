-- Layers a node holds in a bucket that several nodes share (a run's chain,
-- a view, a layer being committed): no node's collection deletes a layer
-- while a hold on it has not expired by the database's clock. The holding
-- node renews its holds; a node that dies lets them expire. See LayerGuard.
CREATE TABLE layer_holds (
	layer text COLLATE "C" NOT NULL,
	node text COLLATE "C" NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (layer, node)
);
CREATE INDEX layer_holds_node ON layer_holds(node);
-- The collection asks which layers image rows name, as layer or as flat.
CREATE INDEX images_flat ON images(flat) WHERE flat IS NOT NULL;
-- PurgeImages keeps a row another row lies on (parent or base).
CREATE INDEX images_base ON images(base) WHERE base IS NOT NULL;
