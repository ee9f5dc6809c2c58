// Package testdaemon starts a real arbor daemon for tests: an engine on a
// temporary home behind the REST API, with a *client.Client of the default
// account and, if asked, a busybox base image imported through the API.
//
// It is separate from package testutil because the engine's own tests
// import testutil, and this package imports the engine.
package testdaemon

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/copyroot"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/runtime/fakeruntime"
	"github.com/arborsh/arbor/internal/testutil"
)

// Options configures a test daemon.
type Options struct {
	// Engine configures the engine; Home is set by the helper. Runtime
	// defaults to runc (fast to start). The warm pool is off unless Warm,
	// or Engine.WarmPerImage > 0 with the init the engine finds by itself
	// (for tests of what it says when it finds none).
	Engine engine.Config
	// Warm turns the warm pool on, with an arbor-init built without cgo.
	// The test binary itself must never serve as the sandboxes' init: it is
	// not arbor, and under -race it is not static either.
	Warm bool
	// API configures the REST API served over httptest. Unused with Serve.
	API api.Options
	// Busybox, if set, is the tag of a busybox image imported through the
	// API (as a user without registry access gets one); Daemon.Busybox is
	// its UUID.
	Busybox string
	// Fake, if set, runs the daemon without root: the engine's only runtime
	// is a fakeruntime whose processes Fake plays (Shell plays simple shell
	// lines), and sandbox roots are copies (internal/copyroot), not
	// overlayfs mounts. Busybox is then imported with its files owned by
	// the caller (and its directories writable by them), as a user without
	// root can store it. Warm is ignored: the pool boots through the init.
	Fake fakeruntime.Handler
	// Serve, if set, runs the daemon instead of the in-process engine and
	// API, until ctx ends: the CLI's tests pass daemon.Run, so they use the
	// product's own composition root and discovery files. It must call
	// ready with the daemon's URL and leave the default account's token in
	// <home>/token.
	Serve func(ctx context.Context, home string, cfg engine.Config, ready func(url string)) error
}

// Daemon is a running test daemon.
type Daemon struct {
	Home   string
	URL    string
	Token  string // the default account's
	Client *client.Client
	// Engine and Server are the in-process engine and API server; nil
	// with Options.Serve.
	Engine *engine.Engine
	Server *httptest.Server
	// Busybox is the UUID of the image Options.Busybox asked for.
	Busybox string

	ownFiles bool // fake, without root: images are imported owned by the caller
}

// ImportBusybox imports busybox through c as tag, as Options.Busybox did:
// owned by the caller on a fake daemon without root.
func (d *Daemon) ImportBusybox(ctx context.Context, c *client.Client, tag string) (string, error) {
	if d.ownFiles {
		return importOwnBusybox(ctx, c, tag)
	}
	return ImportBusybox(ctx, c, tag)
}

// startTimeout bounds starting a daemon, busybox import included.
const startTimeout = 2 * time.Minute

// New starts a daemon of the test's own, stopped and removed when t ends.
// It needs root unless o.Fake is set.
func New(t testing.TB, o Options) *Daemon {
	t.Helper()
	if o.Fake == nil {
		testutil.RequiresRoot(t)
	}
	skipInCluster(t, o)
	home := testutil.Home(t) // before the cleanup below, so it is removed after the daemon stops
	d, stop, err := start(t, home, o)
	t.Cleanup(stop)
	if err != nil {
		t.Fatalf("start test daemon: %v", err)
	}
	return d
}

var shared struct {
	sync.Mutex
	daemons map[string]*sharedDaemon
	stops   []func()
}

type sharedDaemon struct {
	once sync.Once
	d    *Daemon
	err  error
}

// Shared returns the daemon that the package's tests calling Shared with
// the same name share, starting it with o on first use. Main stops it.
func Shared(t testing.TB, name string, o Options) *Daemon {
	t.Helper()
	if o.Fake == nil {
		testutil.RequiresRoot(t)
	}
	skipInCluster(t, o)
	shared.Lock()
	if shared.daemons == nil {
		shared.daemons = map[string]*sharedDaemon{}
	}
	s := shared.daemons[name]
	if s == nil {
		s = &sharedDaemon{}
		shared.daemons[name] = s
	}
	shared.Unlock()
	s.once.Do(func() {
		home, err := os.MkdirTemp("", "arbor-test-"+name+"-")
		if err == nil {
			// Traversable, as testutil.Home: runc and crun sandboxes run
			// as unprivileged host users.
			err = os.Chmod(home, 0o711)
		}
		if err != nil {
			s.err = err
			return
		}
		var stop func()
		s.err = errors.New("it failed to start in an earlier test")
		s.d, stop, s.err = start(t, home, o)
		shared.Lock()
		shared.stops = append(shared.stops, func() { stop(); os.RemoveAll(home) })
		shared.Unlock()
	})
	if s.err != nil {
		t.Fatalf("start shared test daemon %s: %v", name, s.err)
	}
	return s.d
}

// Main runs the tests and then stops the shared daemons. A package whose
// tests use Shared calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testdaemon.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	shared.Lock()
	stops := shared.stops
	shared.stops = nil
	shared.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	stopInfra()
	testutil.RemoveBuildDir()
	return code
}

// start starts a daemon on home. stop is never nil and undoes whatever
// was started, in reverse order, also after an error. t serves only a
// cluster's start (ClusterMode), whose servers outlive it.
func start(t testing.TB, home string, o Options) (d *Daemon, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	cfg := o.Engine
	cfg.Home = home
	if o.Fake != nil {
		cfg.Runtime = "fake"
		cfg.Runtimes = map[string]runtime.Runtime{"fake": fakeruntime.New(o.Fake)}
		cfg.RootFS = copyroot.New()
	} else if cfg.Runtime == "" {
		cfg.Runtime = "runc"
	}
	if o.Fake != nil {
		cfg.WarmPerImage = -1
	} else if o.Warm {
		if cfg.InitBinary, err = StaticInit(); err != nil {
			return nil, stop, err
		}
	} else if cfg.WarmPerImage == 0 {
		cfg.WarmPerImage = -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	d = &Daemon{Home: home, ownFiles: o.Fake != nil && os.Geteuid() != 0}
	if o.Serve != nil {
		err = d.serve(o, cfg, &stops)
	} else if inCluster(o) {
		err = d.cluster(t, o, cfg, &stops)
	} else {
		err = d.inProcess(ctx, o, cfg, &stops)
	}
	if err != nil {
		return nil, stop, err
	}
	if d.Client, err = client.New(d.URL, d.Token); err != nil {
		return nil, stop, err
	}
	if o.Busybox != "" {
		if d.Busybox, err = d.ImportBusybox(ctx, d.Client, o.Busybox); err != nil {
			return nil, stop, fmt.Errorf("import busybox: %w", err)
		}
	}
	return d, stop, nil
}

func (d *Daemon) inProcess(ctx context.Context, o Options, cfg engine.Config, stops *[]func()) error {
	e, err := engine.New(ctx, cfg)
	if err != nil {
		return err
	}
	*stops = append(*stops, func() { e.Close() })
	srv := httptest.NewServer(api.New(e, o.API))
	// Close streams still open (a test's follower) before the engine.
	*stops = append(*stops, func() { srv.CloseClientConnections(); srv.Close() })
	_, secret, err := e.CreateToken(ctx, engine.DefaultAccount, "test", 0)
	if err != nil {
		return err
	}
	d.Engine, d.Server, d.URL, d.Token = e, srv, srv.URL, secret
	return nil
}

func (d *Daemon) serve(o Options, cfg engine.Config, stops *[]func()) error {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- o.Serve(ctx, d.Home, cfg, func(url string) { ready <- url }) }()
	*stops = append(*stops, func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			fmt.Fprintln(os.Stderr, "testdaemon: daemon did not stop within 30 s")
		}
	})
	select {
	case d.URL = <-ready:
	case err := <-done:
		return fmt.Errorf("daemon stopped before serving: %v", err)
	case <-time.After(startTimeout):
		return errors.New("daemon not ready after 2 minutes")
	}
	b, err := os.ReadFile(filepath.Join(d.Home, "token"))
	if err != nil {
		return err
	}
	d.Token = strings.TrimSpace(string(b))
	return nil
}

// ImportBusybox builds the busybox rootfs tar, uploads it and imports it
// as tag through the API, as a user without registry access would. It
// returns the image's UUID.
func ImportBusybox(ctx context.Context, c *client.Client, tag string) (string, error) {
	var buf bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&buf); err != nil {
		return "", err
	}
	return importTar(ctx, c, &buf, tag)
}

// importOwnBusybox imports busybox as ImportBusybox does, with every file
// owned by the caller and every directory writable by them: without root,
// the import could not give files to root, and a fake run could not write
// into its copy of the image, nor a test remove it.
func importOwnBusybox(ctx context.Context, c *client.Client, tag string) (string, error) {
	var in, out bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&in); err != nil {
		return "", err
	}
	tr, tw := tar.NewReader(&in), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = os.Getuid(), os.Getgid(), "", ""
		if hdr.Typeflag == tar.TypeDir {
			hdr.Mode |= 0o700
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return importTar(ctx, c, &out, tag)
}

// importTar uploads a rootfs tar and imports it as tag.
func importTar(ctx context.Context, c *client.Client, r io.Reader, tag string) (string, error) {
	f, err := c.UploadFile(ctx, r)
	if err != nil {
		return "", err
	}
	id, err := c.ImportImage(ctx, apitypes.ImageImportRequest{Registry: apitypes.ImageImportRegistry{URL: "upload://" + f.UUID}, Tag: &tag})
	if err != nil {
		return "", err
	}
	op, err := c.Wait(ctx, id)
	if err != nil {
		return "", err
	}
	if op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
		msg := ""
		if op.Error != nil {
			msg = *op.Error
		}
		return "", &client.Error{Status: 500, Message: "import failed: " + op.Status + " " + msg}
	}
	return *op.ResultImageUUID, nil
}

var initBuild struct {
	once sync.Once
	path string
	err  error
}

// StaticInit builds cmd/arbor-init with CGO_ENABLED=0, and cmd/arbor-init-c
// beside it (as setup.sh does), once per test process and returns its path. Warm sandboxes bind-mount it
// as their init, so it must be static whatever the test binary is.
func StaticInit() (string, error) {
	initBuild.once.Do(func() {
		dir, err := testutil.BuildDir("init")
		if err != nil {
			initBuild.err = err
			return
		}
		p := filepath.Join(dir, "arbor-init")
		cmd := exec.Command("go", "build", "-o", p, "github.com/arborsh/arbor/cmd/arbor-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initBuild.err = fmt.Errorf("build arbor-init: %v\n%s", err, out)
			return
		}
		if !baseimage.IsStatic(p) {
			initBuild.err = fmt.Errorf("%s is not static", p)
			return
		}
		// The C init of cold batch runs, beside it as setup.sh puts it.
		c, err := testutil.ColdInit()
		if err == nil {
			var b []byte
			if b, err = os.ReadFile(c); err == nil {
				err = os.WriteFile(filepath.Join(dir, "arbor-init-c"), b, 0o755)
			}
		}
		if err != nil {
			initBuild.err = err
			return
		}
		initBuild.path = p
	})
	return initBuild.path, initBuild.err
}
