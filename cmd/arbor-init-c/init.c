// arbor-init-c is arbor's init for cold batch runs, in C: the `serve
// --exit` mode of the Go init (internal/initproc, serve.go and proto.go)
// and nothing else. Under gVisor every system call and thread switch of
// Go's runtime costs host CPU: the Go init added ~21 ms of CPU to a cold
// run whose raw `runsc run` is ~100 ms; a C program that forks and waits
// adds ~2 (BENCHMARKS.md, "Where the init's cost goes"). Warm, forkable,
// exec, place and relay sandboxes keep the Go init.
//
// The protocol is proto.go's, over stdin (from the engine) and stdout (to
// it): frames of one type byte, a big-endian uint32 length, the payload.
// The request comes as a 'C' frame (compact, see encodeCompact in
// proto.go) rather than JSON: no string unescaping or number parsing in C.
//
// Build: gcc -static -O2 -o bin/arbor-init-c cmd/arbor-init-c/init.c
// (scripts/setup.sh). It must be static: images need not contain a libc.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum {
	MAX_FRAME = 1 << 20,   // maxFrame: a frame's payload, either way
	OUT_CHUNK = 32 << 10,  // outChunk: output frames
	MAX_MSG = 64 << 10,    // maxMessage: 'e' and 'p' texts
	STDIN_CAP = 2 << 20,   // stdin held for the command before reading stops
};

// holderGrace and drainBound of serve.go, in milliseconds.
static const long holder_grace_ms = 20, drain_bound_ms = 10000;

static const char default_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static volatile sig_atomic_t got_chld;

// _dl_get_origin replaces static glibc's (sysdeps/unix/sysv/linux/dl-origin.c),
// which its start-up calls for $ORIGIN in dlopen paths: it asserts that
// readlink("/proc/self/exe") is absolute, and under runsc --exec-fd (how
// arbor hands over its init, see runtime.InitPath) it is "host:[4]", so
// the init aborted before main. This init loads nothing: no origin.
const char *_dl_get_origin(void);
const char *_dl_get_origin(void) { return (const char *)-1; }

// on_signal catches every signal: caught (not ignored, which the command
// would inherit), so the command starts with default dispositions, and
// none of them ends or stops this init.
static void on_signal(int sig) {
	if (sig == SIGCHLD) got_chld = 1;
}

// glibc keeps signals 32 and 33 for itself and refuses handlers for them,
// but under runsc a command's kill of them ends PID 1 (see
// TestInitIgnoresSignalsFromInside). This init, single-threaded and
// without pthread_cancel, ignores them through the raw system call; the
// command gets them back at their default (see child).
static const int glibc_signals[] = {32, 33};

struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	uint64_t mask;
};

static void raw_disposition(int sig, void (*handler)(int)) {
	struct kernel_sigaction ka = {.handler = handler};
	syscall(SYS_rt_sigaction, sig, &ka, NULL, sizeof ka.mask);
}

// write_all writes b in full to fd, waiting if it is non-blocking.
static int write_all(int fd, const unsigned char *b, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0) {
			if (errno == EINTR) continue;
			if (errno == EAGAIN) {
				struct pollfd p = {.fd = fd, .events = POLLOUT};
				poll(&p, 1, -1);
				continue;
			}
			return -1;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static void put32(unsigned char *b, uint32_t v) {
	b[0] = v >> 24, b[1] = v >> 16, b[2] = v >> 8, b[3] = v;
}

static uint32_t get32(const unsigned char *b) {
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

// msgbuf holds a frame to the engine other than output: one write per
// frame (see frameWriter.write).
static unsigned char msgbuf[5 + MAX_MSG];

static void send_frame(char typ, const void *p, size_t n) {
	if (n > MAX_MSG) n = MAX_MSG;
	msgbuf[0] = (unsigned char)typ;
	put32(msgbuf + 1, (uint32_t)n);
	memcpy(msgbuf + 5, p, n);
	(void)write_all(1, msgbuf, 5 + n); // the engine gone: nothing to tell
}

static void send_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void send_error(const char *fmt, ...) {
	static char text[MAX_MSG];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (n < 0) n = 0;
	if ((size_t)n >= sizeof text) n = sizeof text - 1;
	send_frame('e', text, (size_t)n);
}

// errtext is strerror as Go spells errno texts (lower case first letter),
// so errors read the same from either init.
static const char *errtext(int err) {
	static char b[128];
	snprintf(b, sizeof b, "%s", strerror(err));
	if (b[0] >= 'A' && b[0] <= 'Z' && !(b[1] >= 'A' && b[1] <= 'Z')) b[0] = (char)(b[0] - 'A' + 'a');
	return b;
}

// above2 moves fd above the standard descriptors (which the command's
// pipes replace in the child), keeping it close-on-exec.
static int above2(int fd) {
	if (fd > 2) return fd;
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return nfd;
}

static int pipe_above2(int p[2]) {
	if (pipe2(p, O_CLOEXEC) < 0) return -1;
	p[0] = above2(p[0]);
	p[1] = above2(p[1]);
	if (p[0] < 0 || p[1] < 0) {
		if (p[0] >= 0) close(p[0]);
		if (p[1] >= 0) close(p[1]);
		return -1;
	}
	return 0;
}

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// The request, decoded from a 'C' frame into its own memory.
struct request {
	uint32_t uid, gid;
	uint64_t fsize;
	char *cwd;
	char **argv, **envp;
	char *mem;
};

static void free_request(struct request *r) {
	free(r->argv);
	free(r->envp);
	free(r->mem);
	memset(r, 0, sizeof *r);
}

// decode parses p: uid, gid (uint32), fsize (uint64), the number of args
// and of env entries (uint32), then cwd, the args and the env, each a
// uint32 length and its bytes. It returns NULL or what is wrong.
static const char *decode(const unsigned char *p, size_t n, struct request *r) {
	memset(r, 0, sizeof *r);
	if (n < 24) return "bad request: too short";
	r->uid = get32(p);
	r->gid = get32(p + 4);
	r->fsize = (uint64_t)get32(p + 8) << 32 | get32(p + 12);
	uint32_t nargs = get32(p + 16), nenv = get32(p + 20);
	size_t off = 24;
	// Every string takes at least its 4-byte length: bounds the counts.
	if (nargs > n / 4 || nenv > n / 4 || (size_t)nargs + nenv + 1 > (n - off) / 4) return "bad request: counts";
	r->argv = calloc((size_t)nargs + 1, sizeof(char *));
	r->envp = calloc((size_t)nenv + 1, sizeof(char *));
	r->mem = malloc(n); // the strings and their terminators fit in n
	if (!r->argv || !r->envp || !r->mem) return "bad request: out of memory";
	char *m = r->mem;
	int nul = 0;
	for (size_t i = 0; i < 1 + (size_t)nargs + nenv; i++) {
		if (n - off < 4) return "bad request: truncated";
		uint32_t l = get32(p + off);
		off += 4;
		if (l > n - off) return "bad request: truncated";
		if (memchr(p + off, 0, l)) nul = 1;
		memcpy(m, p + off, l);
		m[l] = 0;
		if (i == 0) r->cwd = m;
		else if (i <= nargs) r->argv[i - 1] = m;
		else r->envp[i - 1 - nargs] = m;
		m += l + 1;
		off += l;
	}
	if (off != n) return "bad request: trailing bytes";
	if (nargs == 0) return "no command";
	if (r->fsize > INT64_MAX) return "bad request: file size";
	if (nul) return "\0"; // as Go's ForkExec: EINVAL, named by the caller
	return NULL;
}

// look_path resolves name as serve.go's lookPath: as it is with a slash,
// else through PATH from the command's environment (the last one wins).
static char *look_path(const char *name, char **envp) {
	if (strchr(name, '/')) return strdup(name);
	const char *path = default_path;
	for (char **e = envp; *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
	size_t nl = strlen(name);
	for (const char *d = path;; d++) {
		const char *end = strchrnul(d, ':');
		size_t dl = (size_t)(end - d);
		char *p = malloc((dl ? dl : 1) + nl + 2);
		if (!p) return NULL;
		if (dl) memcpy(p, d, dl);
		else p[0] = '.', dl = 1;
		p[dl] = '/';
		memcpy(p + dl + 1, name, nl + 1);
		struct stat st;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111)) return p;
		free(p);
		if (!*end) return NULL;
		d = end;
	}
}

// The child's view, set before vfork: the child only reads it and writes
// child_errno, in memory it shares with this process until it execs.
static struct {
	const char *path, *cwd;
	char **argv, **envp;
	uid_t uid;
	gid_t gid;
	int fds[3];
} spawn;
static volatile int child_errno;

// child becomes the command, as Go's ForkExec with Setsid and Credential
// (no supplementary groups) and the pipes as fds 0-2; raw system calls
// only, as a vfork child must not touch libc state.
static void __attribute__((noinline, noreturn)) child(void) {
	sigset_t none;
	sigemptyset(&none);
	if (syscall(SYS_setsid) < 0 || syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setgid, spawn.gid) < 0 ||
	    syscall(SYS_setuid, spawn.uid) < 0 || syscall(SYS_chdir, spawn.cwd) < 0)
		goto fail;
	for (int i = 0; i < 3; i++)
		if (syscall(SYS_dup3, spawn.fds[i], i, 0) < 0) goto fail;
	syscall(SYS_close_range, 3, ~0U, 0); // all close-on-exec anyway
	for (size_t i = 0; i < sizeof glibc_signals / sizeof glibc_signals[0]; i++)
		raw_disposition(glibc_signals[i], SIG_DFL); // a vfork child has its own dispositions
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, _NSIG / 8);
	syscall(SYS_execve, spawn.path, spawn.argv, spawn.envp);
fail:
	child_errno = errno ? errno : EINVAL;
	syscall(SYS_exit_group, 127);
	for (;;);
}

// The state of the one run.
static struct {
	pid_t pid;         // the command; 0 before it starts
	int exited;        // its exit was reaped
	int status;        // its wait status
	struct rusage ru;  // and resource usage
	int in, out, err;  // the init's ends of its stdio; -1 once closed
	unsigned char *stdin_buf;
	size_t stdin_off;  // where the queued bytes start in stdin_buf
	size_t stdin_len;  // bytes queued for its stdin
	int stdin_eof;     // the engine ended stdin: close once drained
	struct timespec deadline; // after the exit, for the output to end
} run = {.in = -1, .out = -1, .err = -1};

static int runs;

static void close_stdin(void) {
	if (run.in >= 0) close(run.in);
	run.in = -1;
	free(run.stdin_buf);
	run.stdin_buf = NULL;
	run.stdin_off = run.stdin_len = 0;
}

// start starts the command of a 'C' frame and reports 's' or 'e'.
static void start(const unsigned char *p, size_t n) {
	struct request req;
	const char *bad = decode(p, n, &req);
	if (bad && !bad[0]) {
		send_error("%s: invalid argument", req.argv[0]);
		goto out;
	}
	if (bad) {
		send_error("%s", bad);
		goto out;
	}
	if (run.pid || runs > 0) {
		send_error("this sandbox cannot run another command now");
		goto out;
	}
	char *path = look_path(req.argv[0], req.envp);
	if (!path) {
		send_error("%s: executable file not found in $PATH", req.argv[0]);
		goto out;
	}
	int in[2], o[2], e[2];
	if (pipe_above2(in) < 0) {
		send_error("pipe: %s", errtext(errno));
		goto out_path;
	}
	if (pipe_above2(o) < 0) {
		send_error("pipe: %s", errtext(errno));
		close(in[0]), close(in[1]);
		goto out_path;
	}
	if (pipe_above2(e) < 0) {
		send_error("pipe: %s", errtext(errno));
		close(in[0]), close(in[1]), close(o[0]), close(o[1]);
		goto out_path;
	}
	if (req.fsize > 0) {
		// Inherited by the command; this init writes only to pipes.
		struct rlimit rl = {.rlim_cur = req.fsize, .rlim_max = req.fsize};
		if (setrlimit(RLIMIT_FSIZE, &rl) < 0) {
			send_error("RLIMIT_FSIZE: %s", errtext(errno));
			goto out_pipes;
		}
	}
	spawn.path = path;
	spawn.cwd = req.cwd[0] ? req.cwd : "/";
	spawn.argv = req.argv;
	spawn.envp = req.envp;
	spawn.uid = req.uid;
	spawn.gid = req.gid;
	spawn.fds[0] = in[0], spawn.fds[1] = o[1], spawn.fds[2] = e[1];
	child_errno = 0;
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid_t pid = vfork();
	if (pid == 0) child();
	int verr = pid < 0 ? errno : child_errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid > 0 && verr) {
		int ws;
		while (waitpid(pid, &ws, 0) < 0 && errno == EINTR);
	}
	if (pid < 0 || verr) {
		send_error("%s: %s", req.argv[0], errtext(verr));
		goto out_pipes;
	}
	close(in[0]), close(o[1]), close(e[1]);
	run.pid = pid;
	runs++;
	run.in = in[1], run.out = o[0], run.err = e[0];
	nonblock(run.in), nonblock(run.out), nonblock(run.err);
	// The pid goes out before any output: the engine takes nothing else first.
	unsigned char b[4];
	put32(b, (uint32_t)pid);
	send_frame('s', b, 4);
	goto out_path;
out_pipes:
	close(in[0]), close(in[1]), close(o[0]), close(o[1]), close(e[0]), close(e[1]);
out_path:
	free(path);
out:
	free_request(&req);
}

static void add_ms(struct timespec *t, long ms) {
	clock_gettime(CLOCK_MONOTONIC, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000;
	if (t->tv_nsec >= 1000000000) t->tv_sec++, t->tv_nsec -= 1000000000;
}

// reap reaps what has exited. As PID 1, once the command has exited, it
// kills everything else in the sandbox and reaps it all, so nothing
// writes after the exit is reported (a sandbox ends with its main process).
static void reap(int pid1) {
	for (;;) {
		int ws;
		struct rusage ru;
		pid_t p = wait4(-1, &ws, WNOHANG, &ru);
		if (p < 0 && errno == EINTR) continue;
		if (p <= 0) break;
		if (p == run.pid && !run.exited) {
			run.exited = 1, run.status = ws, run.ru = ru;
			if (pid1) {
				kill(-1, SIGKILL);
				while (wait4(-1, &ws, 0, NULL) >= 0 || errno == EINTR);
			}
			add_ms(&run.deadline, pid1 ? drain_bound_ms : holder_grace_ms);
		}
	}
}

// report sends the exit report (proto.go's Exit as JSON).
static void report(void) {
	char js[2048];
	int code = -1, sig = 0;
	if (WIFSIGNALED(run.status)) sig = WTERMSIG(run.status);
	else code = WEXITSTATUS(run.status);
	const struct rusage *u = &run.ru;
	int n = snprintf(js, sizeof js, "{\"code\":%d", code);
	if (sig) n += snprintf(js + n, sizeof js - n, ",\"signal\":%d", sig);
	n += snprintf(js + n, sizeof js - n,
		",\"rusage\":{\"Utime\":{\"Sec\":%ld,\"Usec\":%ld},\"Stime\":{\"Sec\":%ld,\"Usec\":%ld},"
		"\"Maxrss\":%ld,\"Ixrss\":%ld,\"Idrss\":%ld,\"Isrss\":%ld,\"Minflt\":%ld,\"Majflt\":%ld,\"Nswap\":%ld,"
		"\"Inblock\":%ld,\"Oublock\":%ld,\"Msgsnd\":%ld,\"Msgrcv\":%ld,\"Nsignals\":%ld,\"Nvcsw\":%ld,\"Nivcsw\":%ld}}",
		(long)u->ru_utime.tv_sec, (long)u->ru_utime.tv_usec, (long)u->ru_stime.tv_sec, (long)u->ru_stime.tv_usec,
		u->ru_maxrss, u->ru_ixrss, u->ru_idrss, u->ru_isrss, u->ru_minflt, u->ru_majflt, u->ru_nswap,
		u->ru_inblock, u->ru_oublock, u->ru_msgsnd, u->ru_msgrcv, u->ru_nsignals, u->ru_nvcsw, u->ru_nivcsw);
	send_frame('x', js, (size_t)n);
}

// forward sends one chunk of the command's output; at its end it closes fd.
static void forward(int *fd, char typ) {
	static unsigned char b[5 + OUT_CHUNK];
	ssize_t n = read(*fd, b + 5, OUT_CHUNK);
	if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
	if (n <= 0) {
		close(*fd);
		*fd = -1;
		return;
	}
	b[0] = (unsigned char)typ;
	put32(b + 1, (uint32_t)n);
	(void)write_all(1, b, 5 + (size_t)n);
}

// feed writes what it can of the queued stdin.
static void feed(void) {
	ssize_t w = write(run.in, run.stdin_buf + run.stdin_off, run.stdin_len);
	if (w < 0) {
		if (errno == EINTR || errno == EAGAIN) return;
		close_stdin(); // the command no longer reads: drop the rest
		return;
	}
	run.stdin_off += (size_t)w;
	run.stdin_len -= (size_t)w;
	if (run.stdin_len == 0) run.stdin_off = 0;
	if (run.stdin_len == 0 && run.stdin_eof) close_stdin();
}

static void queue_stdin(const unsigned char *p, size_t n) {
	if (run.in < 0 || n == 0) return;
	if (run.stdin_off > 0) { // written bytes go before the buffer grows
		memmove(run.stdin_buf, run.stdin_buf + run.stdin_off, run.stdin_len);
		run.stdin_off = 0;
	}
	unsigned char *b = realloc(run.stdin_buf, run.stdin_len + n);
	if (!b) {
		close_stdin();
		return;
	}
	memcpy(b + run.stdin_len, p, n);
	run.stdin_buf = b;
	run.stdin_len += n;
}

// The frame being read from the engine.
static unsigned char inframe[5 + MAX_FRAME];
static size_t inhave;
static int placing_bad; // a 'P' chunk held anything but a tar's end

static void handle(unsigned char typ, const unsigned char *p, size_t n) {
	switch (typ) {
	case 'P':
		// Cold batch runs place no files; an empty tar (its end marker,
		// zeros) is accepted, as the Go init places nothing from it.
		for (size_t i = 0; i < n; i++)
			if (p[i]) placing_bad = 1;
		break;
	case 'Q':
		if (placing_bad) {
			static const char m[] = "placing files needs arbor's Go init";
			send_frame('p', m, sizeof m - 1);
		} else {
			send_frame('p', "", 0);
		}
		placing_bad = 0;
		break;
	case 'R':
		send_error("bad request: this init takes compact requests");
		break;
	case 'C':
		start(p, n);
		break;
	case 'I':
		if (run.pid) queue_stdin(p, n);
		break;
	case 'i':
		if (run.pid && !run.stdin_eof) {
			run.stdin_eof = 1;
			if (run.stdin_len == 0) close_stdin();
		}
		break;
	case 'S':
		// Only for the command it names, while it runs.
		if (n == 5 && run.pid > 0 && !run.exited && get32(p + 1) == (uint32_t)run.pid) kill(run.pid, p[0]);
		break;
	}
}

// read_engine reads what is available of the current frame; it returns
// -1 once the engine is gone or broke the framing (serve.go: then reap
// until killed, reporting a running command's exit).
static int read_engine(void) {
	size_t need = 5;
	if (inhave >= 5) need += get32(inframe + 1);
	ssize_t r = read(0, inframe + inhave, need - inhave);
	if (r < 0) return (errno == EINTR || errno == EAGAIN) ? 0 : -1;
	if (r == 0) return -1;
	inhave += (size_t)r;
	if (inhave == 5 && get32(inframe + 1) > MAX_FRAME) return -1;
	if (inhave < 5 || inhave < 5 + (size_t)get32(inframe + 1)) return 0;
	inhave = 0;
	handle(inframe[0], inframe + 5, get32(inframe + 1));
	return 0;
}

// close_self closes the descriptor of this binary that runc and crun
// exec'd it from (fd 3), after checking it is this executable (the Go
// init's closeSelf); every other descriptor the command gets is its pipes.
static void close_self(void) {
	struct stat fd, exe;
	if (fstat(3, &fd) == 0 && stat("/proc/self/exe", &exe) == 0 && S_ISREG(fd.st_mode) && fd.st_dev == exe.st_dev &&
	    fd.st_ino == exe.st_ino)
		close(3);
}

int main(int argc, char **argv) {
	if (argc != 4 || strcmp(argv[1], "__arbor_init") != 0 || strcmp(argv[2], "serve") != 0 || strcmp(argv[3], "--exit") != 0) {
		fprintf(stderr, "usage: %s __arbor_init serve --exit\n", argv[0]);
		return 2;
	}
	// Not dumpable: /proc/<this pid>/fd, mem and environ need
	// CAP_SYS_PTRACE, which no command gets, so the command cannot open
	// this init's pipes to the engine.
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	close_self();
	if (fcntl(2, F_GETFD) < 0 && open("/dev/null", O_RDWR) != 2) return 1;
	struct sigaction sa = {.sa_handler = on_signal};
	sigfillset(&sa.sa_mask);
	for (int s = 1; s < _NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP) sigaction(s, &sa, NULL); // glibc's own refuse (below)
	for (size_t i = 0; i < sizeof glibc_signals / sizeof glibc_signals[0]; i++)
		raw_disposition(glibc_signals[i], SIG_IGN);
	// SIGCHLD is taken only inside ppoll: none is lost between a reap and the wait.
	sigset_t chld, waiting;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &waiting);
	sigdelset(&waiting, SIGCHLD);
	int pid1 = getpid() == 1, engine = 1;
	for (;;) {
		if (got_chld) {
			got_chld = 0;
			reap(pid1);
		}
		if (run.exited) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			int late = now.tv_sec > run.deadline.tv_sec || (now.tv_sec == run.deadline.tv_sec && now.tv_nsec >= run.deadline.tv_nsec);
			if ((run.out < 0 && run.err < 0) || late) {
				report();
				_exit(0); // as PID 1, everything else is dead already (see reap)
			}
		}
		struct pollfd fds[4];
		int nfds = 0, ie = -1, io = -1, ir = -1, iw = -1;
		if (engine && run.stdin_len < STDIN_CAP) ie = nfds, fds[nfds++] = (struct pollfd){.fd = 0, .events = POLLIN};
		if (run.out >= 0) io = nfds, fds[nfds++] = (struct pollfd){.fd = run.out, .events = POLLIN};
		if (run.err >= 0) ir = nfds, fds[nfds++] = (struct pollfd){.fd = run.err, .events = POLLIN};
		if (run.in >= 0 && run.stdin_len > 0) iw = nfds, fds[nfds++] = (struct pollfd){.fd = run.in, .events = POLLOUT};
		struct timespec wait, *tmo = NULL;
		if (run.exited) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			wait.tv_sec = run.deadline.tv_sec - now.tv_sec;
			wait.tv_nsec = run.deadline.tv_nsec - now.tv_nsec;
			if (wait.tv_nsec < 0) wait.tv_sec--, wait.tv_nsec += 1000000000;
			if (wait.tv_sec < 0) wait.tv_sec = 0, wait.tv_nsec = 0;
			tmo = &wait;
		}
		int r = ppoll(fds, (nfds_t)nfds, tmo, &waiting);
		if (r <= 0) continue; // a signal (SIGCHLD), or the deadline
		if (io >= 0 && fds[io].revents) forward(&run.out, 'O');
		if (ir >= 0 && fds[ir].revents) forward(&run.err, 'E');
		if (iw >= 0 && fds[iw].revents && run.in >= 0) feed();
		if (ie >= 0 && fds[ie].revents && read_engine() < 0) engine = 0;
	}
}
