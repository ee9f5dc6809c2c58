package apitypes

// GCResponse answers POST /v1/gc (arbor extension): what a garbage
// collection under the retention policies removed, or with dry_run would
// remove.
type GCResponse struct {
	DryRun bool `json:"dry_run"`
	// Images are the untagged images retention deleted, oldest first.
	Images []GCImage `json:"images"`
	// Bytes is the disk that comes back: LayerBytes, the layer
	// directories removed (Layers), ExportBytes, the export registry's
	// blobs that only the deleted images used (ExportBlobs), and
	// UploadBytes, the contents of the expired uploads (Uploads).
	Bytes       int64 `json:"bytes"`
	Layers      int   `json:"layers"`
	LayerBytes  int64 `json:"layer_bytes"`
	ExportBlobs int   `json:"export_blobs"`
	ExportBytes int64 `json:"export_bytes"`
	Uploads     int   `json:"uploads"`
	UploadBytes int64 `json:"upload_bytes"`
	// Checkpoints: memory checkpoints removed, with the deleted images or
	// older than the daemon's --checkpoint-ttl (their images stay);
	// CheckpointBytes their sizes (in Bytes too).
	Checkpoints     int   `json:"checkpoints"`
	CheckpointBytes int64 `json:"checkpoint_bytes"`
	// ImageRows are rows of deleted images and import layers purged.
	ImageRows int `json:"image_rows"`
	// Operations and Events: finished operations and their log events
	// deleted because they outlived the operation TTL.
	Operations int64 `json:"operations"`
	Events     int64 `json:"events"`
}

// GCImage is an image retention deleted.
type GCImage struct {
	UUID      string `json:"uuid"`
	Account   string `json:"account"`
	CreatedAt string `json:"created_at"`
}

// DiskUsageResponse answers GET /v1/df (arbor extension).
type DiskUsageResponse struct {
	Accounts []AccountDiskUsage `json:"accounts"`
	// Layers and Bytes: every layer directory the store holds for images,
	// each once.
	Layers          int   `json:"layers"`
	Bytes           int64 `json:"bytes"`
	MaxStorageBytes int64 `json:"max_storage_bytes"` // per account; 0: unlimited
	MaxConcurrent   int   `json:"max_concurrent_operations"`
}

// AccountDiskUsage is one account's use of the daemon.
type AccountDiskUsage struct {
	Account      string `json:"account"`
	Images       int    `json:"images"`
	TaggedImages int    `json:"tagged_images"`
	// Layers its images need (whole chains, each layer once) and their bytes.
	Layers    int   `json:"layers"`
	DiskBytes int64 `json:"disk_bytes"`
	// SharedBytes: part of DiskBytes in layers other accounts use too.
	// AttributedBytes: DiskBytes with those split evenly among their
	// accounts (the accounts' sum is the store's).
	SharedBytes     int64 `json:"shared_bytes"`
	AttributedBytes int64 `json:"attributed_bytes"`
	// QuotaBytes is what the storage quota counts (also uploads and exports).
	QuotaBytes int64 `json:"quota_bytes"`
	// CheckpointBytes: memory checkpoints kept with its images (part of
	// QuotaBytes; arbor extension).
	CheckpointBytes int64 `json:"checkpoint_bytes"`
	Pending         int64 `json:"pending"`
	Running         int64 `json:"running"`
	// The account's retention, in seconds; 0: kept forever.
	ImageTTLSeconds     int64 `json:"image_ttl_seconds"`
	OperationTTLSeconds int64 `json:"operation_ttl_seconds"`
	UploadTTLSeconds    int64 `json:"upload_ttl_seconds"`
}
