package engine

import (
	"time"

	"github.com/arborsh/arbor/internal/store"
)

// The engine's own types: what its callers (api, registry) see of images,
// operations, files and tokens. The rows of the metadata store stay behind
// the engine, so a store can change its schema (or be PostgreSQL) without
// the callers noticing; api converts these to and from the wire.

// Image is a user-visible image.
type Image struct {
	UUID       string
	Account    string
	Parent     string // "" for a base image
	Tag        string // "" if untagged
	Operation  string // the operation that produced it, "" for imports
	Env        string // JSON object of the environment it keeps, "" if none
	Depth      int    // layers in its chain
	LayerBytes int64  // bytes its own layer uses
	// CheckpointBytes: the memory checkpoint kept with it (RestoreImage), 0 if none.
	CheckpointBytes int64
	CreatedAt       time.Time
	// Deleted is set only on a Lineage's ancestors: a deleted image whose
	// layers its descendants still use.
	Deleted bool
}

func toImage(r store.Image) Image {
	return Image{UUID: r.UUID, Account: r.Account, Parent: r.Parent, Tag: r.Tag, Operation: r.Operation, Env: r.Env,
		Depth: r.Depth, LayerBytes: r.LayerBytes, CreatedAt: r.CreatedAt, Deleted: r.Deleted}
}

func toImages(rs []store.Image) []Image {
	out := make([]Image, 0, len(rs))
	for _, r := range rs {
		out = append(out, toImage(r))
	}
	return out
}

// ImageFilter selects images to list. Zero fields select everything; the
// image tagged exactly TagPrefix comes first.
type ImageFilter struct {
	Account    string
	TagPrefix  string
	Tagged     bool
	UUID       string
	UUIDPrefix string // lower-case
	Parent     string
	Since      time.Time
	Until      time.Time
	Limit      int // default 100
	Offset     int
}

func (f ImageFilter) row() store.ImageFilter {
	return store.ImageFilter{Account: f.Account, TagPrefix: f.TagPrefix, Tagged: f.Tagged, UUID: f.UUID, UUIDPrefix: f.UUIDPrefix,
		Parent: f.Parent, Since: f.Since, Until: f.Until, Limit: f.Limit, Offset: f.Offset}
}

// Operation is a run or an import. Metadata is the wire JSON of the request
// echo (and, for a finished run, its result); a listed operation has none.
type Operation struct {
	UUID            string
	Account         string
	Kind            string
	Status          string
	Error           string
	CreatedAt       time.Time
	StartedAt       time.Time // zero until it is assigned
	FinishedAt      time.Time // zero until it is terminal
	ImageUUID       string    // the image it ran on
	ResultImageUUID string
	ResultTag       string
	Metadata        string
	CPUSeconds      float64
	MaxRSSBytes     int64
	ImageSize       int64
	QueuePosition   int // while PENDING behind other runs: 1 for the next to execute
}

func toOperation(r store.Operation) Operation {
	return Operation{UUID: r.UUID, Account: r.Account, Kind: r.Kind, Status: r.Status, Error: r.Error,
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, ImageUUID: r.ImageUUID,
		ResultImageUUID: r.ResultImageUUID, ResultTag: r.ResultTag, Metadata: r.Metadata,
		CPUSeconds: r.CPUSeconds, MaxRSSBytes: r.MaxRSSBytes, ImageSize: r.ImageSize}
}

// OperationFilter selects operations to list, newest first.
type OperationFilter struct {
	Account  string
	Statuses []string
	Kind     string
	Since    time.Time
	Until    time.Time
	Limit    int // default 100
	Offset   int
}

func (f OperationFilter) row() store.OperationFilter {
	return store.OperationFilter{Account: f.Account, Statuses: f.Statuses, Kind: f.Kind, Since: f.Since, Until: f.Until,
		Limit: f.Limit, Offset: f.Offset}
}

// File is an uploaded file, content-addressed per account.
type File struct {
	UUID      string
	Account   string
	SHA256    string
	Size      int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

func toFile(r store.File) File {
	return File{UUID: r.UUID, Account: r.Account, SHA256: r.SHA256, Size: r.Size, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// Token is a bearer token of an account; its secret is never kept.
type Token struct {
	UUID      string
	Account   string
	Name      string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	RevokedAt time.Time // zero: active
	Parent    string    // the token that made it; revoking that revokes this
}

func toToken(r store.Token) Token {
	return Token{UUID: r.UUID, Account: r.Account, Name: r.Name, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt,
		RevokedAt: r.RevokedAt, Parent: r.Parent}
}
