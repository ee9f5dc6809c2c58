// Package mcp serves arbor to any MCP-capable agent (Model Context Protocol,
// built on github.com/modelcontextprotocol/go-sdk).
//
// The server talks to the daemon only through a [Backend], which
// *client.Client satisfies, so the same tools run in `arbor mcp` (stdio, a
// client found with client.Discover) and on the daemon's /mcp endpoint
// (streamable HTTP, one client per request, bound to the caller's token).
//
// # Tools
//
// Free, read-only inspection (no sandbox starts): list_images, get_image,
// lineage, diff, list_files, read_file, grep, get_operation,
// list_operations, wait_operations, get_guide. Naming: checkpoint,
// rollback, set_tag. Sandboxes: run (one), branch (one per command),
// fork_instance (copies of a running instance, memory and all),
// save_instance and restore_instance (the same, kept for later),
// expose_port (a signed URL to a port inside a running instance),
// send_input (a running instance's stdin and signals, and what it printed
// after; run keep_stdin=true starts such an instance).
// Files: upload, and, when [Options.LocalFiles] is set, sync and download,
// which touch the filesystem of the machine the server runs on. Images:
// import_image. Operations: cancel_operation.
//
// The workflow the descriptions teach: checkpoint a state, branch N
// candidate commands from it in parallel, compare the results (diff,
// read_file), keep the winner by checkpointing it, and roll back to a
// checkpoint when a path fails.
//
// # Resources and prompts
//
// arbor://image/{image}/read/{path}, arbor://image/{image}/ls/{path},
// arbor://image/{image}/lineage, arbor://operations/{id} and
// arbor://guide/{section}; prompts explore-fixes, beam-search, resume,
// debug-failure and inspect-image.
package mcp
