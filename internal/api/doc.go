// Package api serves arbor's HTTP API v1: ConTree's REST API v1 on the wire
// (see shared/contree-api.md), so ConTree's own clients work unchanged, plus
// arbor's extensions under the same /v1 prefix (image deletion, lineage and
// diff, tokens, and an OpenAPI document at /v1/openapi.json).
//
// The package decodes requests, calls the engine and encodes answers; it
// holds no state of its own. Errors of the engine carry an errdefs class,
// which [statusOf] maps to an HTTP status in one place.
//
// # Compatibility rules that shape this package
//
//   - Responses are gzip-compressed only when the request's Accept-Encoding
//     allows it (the contree CLI cannot decode gzip); streams are
//     sync-flushed, and a stream that fails part-way is cut without a valid
//     gzip trailer or final chunk, so clients see the truncation.
//   - Every error body is {"error": "...", "status": N}.
//   - Locations are relative or derived from the request URI, so the API can
//     be mounted under a path prefix.
//   - Query parameters and JSON fields the server does not know are ignored.
package api
