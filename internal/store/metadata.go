package store

import (
	"context"
	"time"
)

// Metadata is the contract of arbor's metadata store: accounts, tokens,
// images and their tags, uploaded files, operations and their event logs,
// and the usage sums computed from them. [Store] (SQLite) is the one
// implementation today; a second one (PostgreSQL, issue 17) must pass the
// conformance suite in internal/store/storetest, which checks every rule
// written below.
//
// # Rows
//
// Methods take and return the row types of this package ([Image],
// [Operation], [Event], [Account], [Token], [File]). Only the engine sees
// them. Times keep at least microsecond precision; a zero [time.Time]
// means "not set" wherever a field allows it (a row's CreatedAt is always
// set by its writer).
//
// # Transactions
//
// Every method is atomic on its own. [Metadata.Update] groups the writes
// of [Tx] into one transaction: it commits when fn returns nil, and rolls
// back when fn returns an error (Update returns that error, wrapped or
// joined but matching errors.Is) or panics (the panic goes on). fn runs
// exactly once per call: callers keep in-memory state in step with it (the
// engine's next event ID), so an implementation gets isolation from locks,
// never by running fn again. Update transactions are serializable as far as
// a Tx can tell: its one read, LastEventID, still holds when it commits
// (no other writer appends to that log in between). A write is visible to every read that starts after its
// commit, from any goroutine; no read sees a transaction's writes before.
// A [Tx] must not be used after fn returns, nor from two goroutines.
//
// # Errors
//
// Errors are classed with internal/errdefs, so the API maps them to HTTP
// without knowing the implementation:
//
//   - a row that does not exist, or not for the given account, or is
//     deleted or hidden where the method says so, or the account a new
//     token names: [errdefs.ErrNotFound];
//   - a write that would duplicate a unique key (an image, operation or
//     token UUID, a tag already on another image of the account in an
//     insert, a hidden chain already in the account, an event ID already in
//     the operation's log): [errdefs.ErrConflict];
//   - the concurrency limit of [Operations.InsertOperationLimited]:
//     [errdefs.ErrResourceExhausted];
//   - an unknown, revoked or expired token, or a revoked or expired parent
//     when creating one: [errdefs.ErrUnauthorized].
//
// Anything else (I/O, a closed store, a cancelled context) is returned
// wrapped, unclassed.
//
// # A second implementation
//
// Notes for PostgreSQL (issue 17), from what SQLite gives for free: the
// unique keys above are partial unique indexes there too (tags WHERE tag
// IS NOT NULL, chains WHERE hidden); SQLSTATE 23505 maps to Conflict and
// 23503 (a token's account) to NotFound. SQLite has one writer, so every
// check-then-write is atomic; PostgreSQL must lock instead:
// InsertOperationLimited per account (a row lock on the account, or
// pg_advisory_xact_lock on its hash, taken before the count), SetTag's
// untag-then-tag in one transaction, and LastEventID inside Update (an
// advisory lock on the operation, taken by LastEventID and AppendEvent,
// keeps its log to one writer; the suite's UpdatesSerialize checks it). Revocation's subtree is a WITH
// RECURSIVE query there too. Times are timestamptz (microseconds).
type Metadata interface {
	// Tx's methods are also Metadata's: each runs in a transaction of its own.
	Tx
	Accounts
	Tokens
	Images
	Files
	Operations
	Events
	Usage

	// Update runs fn in one write transaction (see Transactions above).
	Update(ctx context.Context, fn func(tx Tx) error) error
	// Close releases the store. Calls after Close fail; Close itself may
	// be called again.
	Close() error
}

// FinishOperation (in Tx) records an operation's outcome all or nothing:
// its images (out.Images, in order), its tag (moved to the result image),
// its terminal row (Status, Error, FinishedAt, ResultImageUUID, ResultTag,
// Metadata replaced, CPUSeconds, MaxRSSBytes, ImageSize) and its
// completion event, if out.Completion has a Type (an ID below 0 takes the
// next one). An operation no longer in flight, or unknown, is left
// untouched and the error is FailedPrecondition: an operation finishes
// once.
//
// Tx is the set of writes that may be grouped in one transaction by
// [Metadata.Update]: an image together with the operation that produced
// it, its tag and the operation's completion event. Each method has the
// semantics of the [Metadata] method of the same name.
type Tx interface {
	InsertImage(ctx context.Context, im Image) error
	SetTag(ctx context.Context, account, uuid, tag string) error
	FinishOperation(ctx context.Context, out Outcome) error
	AppendEvent(ctx context.Context, op string, ev Event) error
	// LastEventID reads inside the transaction, so an event appended
	// after it by the same transaction gets the next ID.
	LastEventID(ctx context.Context, op string) (int64, error)
}

// Accounts are the owners of everything else. An account's ID and name are
// each unique.
type Accounts interface {
	// EnsureAccount creates the account (id, name) unless one with that id
	// or name exists, and returns the account named name.
	EnsureAccount(ctx context.Context, id, name string) (Account, error)
	// AccountByName returns the account named name, or NotFound.
	AccountByName(ctx context.Context, name string) (Account, error)
}

// Tokens are bearer tokens. Only the sha256 of a secret is stored
// ([HashSecret]); a token is found by its secret, never listed with it.
type Tokens interface {
	// CreateToken stores t with the given secret. t.Account must exist
	// (NotFound otherwise). A zero t.CreatedAt means now. With t.Parent set, the token is stored only if the parent exists
	// and is neither revoked nor expired, checked atomically with the
	// insert; otherwise nothing is stored and the error is Unauthorized. A
	// duplicate UUID or secret is a Conflict.
	CreateToken(ctx context.Context, t Token, secret string) error
	// TokenBySecret returns the token whose secret is secret. An unknown
	// secret, a revoked token or one whose ExpiresAt has passed is
	// Unauthorized (the revoked or expired token is returned with the error).
	TokenBySecret(ctx context.Context, secret string) (Token, error)
	// ListTokens returns account's tokens, revoked and expired ones
	// included, oldest first.
	ListTokens(ctx context.Context, account string) ([]Token, error)
	// RevokeToken revokes account's token uuid and, in the same
	// transaction, every token created below it (its children, their
	// children...), whatever their account. A token that is not account's,
	// or is already revoked, is NotFound.
	RevokeToken(ctx context.Context, account, uuid string) error
}

// Images are image rows. A live image is neither deleted nor hidden; only
// live images are visible through the methods that take an account, and
// only they carry tags. A tag names at most one live image per account
// (the same tag may name images of different accounts).
type Images interface {
	// InsertImage writes a new image row. A duplicate UUID, a tag already
	// on a live image of the account, or a second hidden row with the same
	// Chain in the account is a Conflict.
	InsertImage(ctx context.Context, im Image) error
	// InsertImages writes new image rows in one transaction: all or none.
	InsertImages(ctx context.Context, ims ...Image) error
	// Image returns account's live image uuid, or NotFound.
	Image(ctx context.Context, account, uuid string) (Image, error)
	// ImageAny returns the row uuid whatever its account, deletion or
	// hiding (chains cross deleted ancestors), or NotFound.
	ImageAny(ctx context.Context, uuid string) (Image, error)
	// ImageByTag returns account's live image tagged tag, or NotFound.
	ImageByTag(ctx context.Context, account, tag string) (Image, error)
	// ListImages returns the live images f selects, newest first (ties by
	// UUID, ascending), the image tagged exactly f.TagPrefix first when
	// that is set, f.Limit at most (default 100) after skipping f.Offset.
	ListImages(ctx context.Context, f ImageFilter) ([]Image, error)
	// AllImages returns every row, deleted and hidden ones included, in no
	// particular order (chain reconstruction and garbage collection).
	AllImages(ctx context.Context) ([]Image, error)
	// SetTag puts tag on account's live image uuid, taking it off any
	// other image of the account in the same transaction (a retag). An
	// image that is not live is NotFound, and then no tag moves.
	SetTag(ctx context.Context, account, uuid, tag string) error
	// RemoveTag takes the tag off account's live image uuid (NotFound if
	// there is none). With tag non-empty, the image must carry exactly that
	// tag, else the error is a Conflict and nothing changes.
	RemoveTag(ctx context.Context, account, uuid, tag string) error
	// SetFlat records a squashed layer holding image uuid's whole chain
	// and the bytes it uses, replacing an earlier one.
	SetFlat(ctx context.Context, uuid, layer string, bytes int64) error
	// DeleteImage marks account's live image uuid deleted and drops its
	// tag; the row stays for the chains of its descendants (see
	// PurgeImages). An image that is not live is NotFound.
	DeleteImage(ctx context.Context, account, uuid string) error
	// ExpireImages marks the live images uuids deleted (retention), all or
	// none: if any of them is tagged or no longer live when the
	// transaction runs, nothing changes and the error is a Conflict. Unlike
	// DeleteImage it never drops a tag.
	ExpireImages(ctx context.Context, uuids []string) error
	// PurgeImages removes the rows among uuids that are deleted or hidden,
	// in one transaction; live visible images among them are kept.
	PurgeImages(ctx context.Context, uuids []string) error
}

// Files are records of uploaded files; contents live elsewhere, by sha256.
// An account holds one record per content.
type Files interface {
	// PutFile records f and returns the account's record for f.SHA256: f
	// itself if new, else the existing record (same UUID as before) with
	// UpdatedAt refreshed. A non-zero f.UpdatedAt is the time recorded
	// (created and updated); zero takes the current time.
	PutFile(ctx context.Context, f File) (File, error)
	// TouchFiles sets UpdatedAt of account's files uuids to at unless it
	// is later already (a run named them), returning how many it found.
	TouchFiles(ctx context.Context, account string, uuids []string, at time.Time) (int, error)
	// ExpireFiles deletes the records f selects in one transaction and
	// returns them and the contents (sha256) no record names any more;
	// with f.DryRun it only reports them.
	ExpireFiles(ctx context.Context, f FileExpiry) (gone []File, orphans []string, err error)
	// FileBySHA returns account's file with content hash sha (any case),
	// or NotFound.
	FileBySHA(ctx context.Context, account, sha string) (File, error)
	// FileByUUID returns account's file uuid, or NotFound.
	FileByUUID(ctx context.Context, account, uuid string) (File, error)
	// NamedContents returns those of shas (lower-case) that a file record
	// of any account names.
	NamedContents(ctx context.Context, shas []string) (map[string]bool, error)
	// ListFiles returns account's files created within [since, until]
	// (zero: unbounded), newest first, limit at most after skipping offset.
	ListFiles(ctx context.Context, account string, since, until time.Time, limit, offset int) ([]File, error)
}

// Operations are operation rows. PENDING, ASSIGNED and EXECUTING are the
// in-flight states; every other status is terminal.
type Operations interface {
	// InsertOperationLimited writes o (its UUID, Account, Kind, Status,
	// CreatedAt, ImageUUID and Metadata) unless o.Account already has limit
	// operations in flight; then it writes nothing and the error is
	// ResourceExhausted. Check and insert are atomic: of any number of
	// concurrent inserts, at most limit minus those in flight succeed. A
	// duplicate UUID is a Conflict.
	InsertOperationLimited(ctx context.Context, o Operation, limit int) error
	// SetStatus moves operation uuid to status if it is in flight, and
	// sets StartedAt the first time; a terminal or unknown operation is
	// left alone without error.
	SetStatus(ctx context.Context, uuid, status string) error
	// MoveOperation moves operation uuid from status from to status to
	// (both in flight), recording StartedAt the first time. It is a
	// compare-and-set: a row not in from is left alone and the error is
	// FailedPrecondition.
	MoveOperation(ctx context.Context, uuid, from, to string) error
	// Operation returns account's operation uuid with its Metadata, or
	// NotFound.
	Operation(ctx context.Context, account, uuid string) (Operation, error)
	// ListOperations returns the operations f selects, newest first (ties
	// by UUID, ascending), f.Limit at most (default 100) after skipping
	// f.Offset, without their Metadata (it holds a run's output).
	ListOperations(ctx context.Context, f OperationFilter) ([]Operation, error)
	// ExpiredOperations counts the finished operations f selects (never
	// one in flight) and the events of their logs.
	ExpiredOperations(ctx context.Context, f OperationExpiry) (ops, events int64, err error)
	// DeleteExpiredOperations deletes at most f.Limit (default 500) of the
	// operations f selects, with their event logs, in one transaction, and
	// returns the rows deleted; callers repeat it until it deletes none.
	DeleteExpiredOperations(ctx context.Context, f OperationExpiry) (ops, events int64, err error)
	// UnfinishedOperations returns every in-flight operation of every
	// account, oldest first, with Metadata (recovery after a restart).
	UnfinishedOperations(ctx context.Context) ([]Operation, error)
}

// Events are the ordered logs of operations. The writer assigns each
// event's ID: the log of one operation is ordered by ID, and an ID appears
// at most once in it. Nothing checks that the operation exists.
type Events interface {
	// AppendEvent stores ev in op's log; an ID already there is a Conflict.
	AppendEvent(ctx context.Context, op string, ev Event) error
	// Events returns op's events with ID > after, in ascending ID order,
	// limit at most (0: all). An unknown op has no events.
	Events(ctx context.Context, op string, after int64, limit int) ([]Event, error)
	// LastEventID returns the highest event ID of op, or -1 if it has none.
	LastEventID(ctx context.Context, op string) (int64, error)
}

// Usage sums what accounts have used.
type Usage interface {
	// AccountBytes is the storage charged to account: the bytes of each
	// distinct layer of its images that are not deleted (hidden ones
	// included, a layer shared by several rows counted once, at the largest
	// LayerBytes any of them records), of each distinct flat layer of
	// those images likewise, and the sizes of its files.
	AccountBytes(ctx context.Context, account string) (int64, error)
	// OperationStats returns account's operation counts by status and the
	// sum of their CPUSeconds.
	OperationStats(ctx context.Context, account string) (map[string]int64, float64, error)
}

var _ Metadata = (*Store)(nil)
