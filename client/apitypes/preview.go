package apitypes

// PreviewRequest is the body of POST /v1/operations/{id}/previews (an
// arbor extension): expose a TCP port inside a running instance through
// the daemon.
type PreviewRequest struct {
	Port int `json:"port"`
	// TTLSeconds is how long the returned link works: 1 to 86400
	// (default 3600). It dies sooner if the port is unexposed or the
	// instance ends.
	TTLSeconds int `json:"ttl_seconds,omitempty"`
}

// Preview is an exposed port. URL, Path and Token are set only in the
// answer to an expose: the signed link (open URL in a browser; no other
// credential is needed). With a bearer token instead, use Path with the
// token segment "_".
type Preview struct {
	Operation string `json:"operation"`
	Port      int    `json:"port"`
	// ExpiresAt (RFC 3339) is when the port's exposure ends: the expiry
	// of its latest link.
	ExpiresAt string `json:"expires_at"`
	URL       string `json:"url,omitempty"`
	Path      string `json:"path,omitempty"`
	Token     string `json:"token,omitempty"`
}

// PreviewList answers GET /v1/operations/{id}/previews.
type PreviewList struct {
	Previews []Preview `json:"previews"`
}
