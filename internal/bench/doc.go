// Package bench measures arbor on the machine it runs on and compares it,
// side by side in one run, with the raw OCI runtimes it drives. It backs
// `arbor bench` and the numbers in BENCHMARKS.md.
//
// [Run] starts two private daemons through [Options.Serve] (the CLI passes
// internal/daemon.Run; each on a loopback port with its own home): "cold",
// with the warm pool off, so every run boots a sandbox, and "warm", with the
// engine's default pool of pre-booted sandboxes. It reaches them only
// through the Go client, and the raw runtimes only through their binaries,
// so it links nothing of the engine. It imports a busybox base image into
// each, prepares raw OCI bundles of the same root filesystem, and
// then measures:
//
//  1. time to result: spawn → completion through the HTTP API, per runtime,
//     cold and warm, disposable and non-disposable, against `<runtime> run`
//     on the raw bundle, with each run split into phases by the daemon's
//     own event timestamps and its CPU cost counted;
//  2. fan-out: n parallel branches from one image against n parallel raw runs;
//  3. commit cost: a one-file change on a small and on a 1 GiB image;
//  4. deep chains: step latency at growing chain depths;
//  5. inspect: list, read and grep latency on a deep image;
//  6. storage: bytes stored per snapshot of a k-byte change;
//  7. agent loop ("continue"): chained non-disposable steps on the warm
//     daemon, with a 1 s pause and straight back, against a raw run;
//  8. live forks ("fork"): an idle python3 after its set-up forked into 1,
//     4 and 8 copies until every copy answers, against the program started
//     fresh on the warm pool and one cold `runsc run` of it, on a daemon
//     of its own; the python3 is the host's (baseimage.WriteHostPythonTar).
//
// Every comparison is a ratio within the same run, so a busy or slow machine
// moves both sides. The targets of the benchmark issue are printed next to
// each ratio; they are goals, not assertions: Run never fails on time.
//
// Sections 3 to 6 use the cold daemon. Run needs root (the daemons mount
// overlays and start sandboxes).
//
// Whether the warm pool has settled comes from GET /v1/status. One thing is
// not in the API, so the benchmark reads it from the daemon's home: the
// config.json arbor writes for a run (copied from run/<operation>/bundle for
// the raw comparison). Squashes, and so how many layers a deep image mounts,
// come from the daemon's log.
package bench
