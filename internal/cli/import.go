package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/spf13/cobra"
)

// importResult is import's --json output.
type importResult struct {
	Operation string  `json:"operation"`
	Status    string  `json:"status"`
	Source    string  `json:"source"`
	Image     *string `json:"image"`
	Tag       *string `json:"tag"`
	Duration  float64 `json:"duration"`
	Error     *string `json:"error,omitempty"`
}

func newImport(g *globals) *cobra.Command {
	var (
		tag, username, timeout         string
		passwordStdin, busybox, python bool
	)
	cmd := &cobra.Command{
		Use:   "import REF | import --busybox | import --python",
		Short: "Import an image from a registry, a tar archive or a directory",
		Long: `Import a base image, showing progress on stderr. REF is one of:

  a registry reference   docker.io/library/python:3.12-slim, docker://ghcr.io/org/img:tag
  a local tar archive    rootfs.tar, rootfs.tar.gz, rootfs.tgz (uploaded first)
  a local directory      ./rootfs (archived and uploaded)
  an uploaded file       upload://<file uuid or sha256>

--busybox builds a small busybox root filesystem from this host's
busybox-static package instead (for machines without registry access); its
tag defaults to "busybox". --python builds a Debian bookworm base with python3
and pytest from this host's apt mirror with debootstrap (2-3 minutes, as
root); its tag defaults to "python:bookworm".

Private registries: --username U --password-stdin reads the password (or
token) from standard input.

Human output names the new image; --json prints operation, status, source,
image, tag, duration and error.`,
		Example: `  arbor import docker.io/library/python:3.12-slim --tag python
  arbor import --busybox
  sudo arbor import --python
  arbor import ./rootfs --tag my-base
  echo "$GHCR_TOKEN" | arbor import ghcr.io/me/private:1 --username me --password-stdin`,
		Args: func(cmd *cobra.Command, args []string) error {
			if busybox || python {
				return cobra.NoArgs(cmd, args)
			}
			if len(args) != 1 {
				return errors.New("import needs one REF (a registry reference, a .tar/.tar.gz file or a directory), or --busybox")
			}
			return nil
		},
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if tag == "" && busybox {
				tag = "busybox"
			}
			if tag == "" && python {
				tag = "python:bookworm"
			}
			if tag != "" {
				if err := apitypes.ValidTag(tag); err != nil {
					return err
				}
			}
			if username != "" && !passwordStdin {
				return errors.New("--username needs --password-stdin: echo \"$PASSWORD\" | arbor import REF --username U --password-stdin")
			}
			req := apitypes.ImageImportRequest{}
			if tag != "" {
				req.Tag = &tag
			}
			if timeout != "" {
				t, err := parseSeconds("--timeout", timeout)
				if err != nil {
					return err
				}
				req.Timeout = &t
			}
			if passwordStdin {
				line, err := bufio.NewReader(g.stdin).ReadString('\n')
				if err != nil && err != io.EOF {
					return fmt.Errorf("read password from stdin: %w", err)
				}
				req.Registry.Credentials = &apitypes.Credentials{Username: username, Password: strings.TrimRight(line, "\r\n")}
			}
			prog := newProgress(g.stderr, !g.json)
			source := "busybox (from this host)"
			var err error
			switch {
			case busybox:
				req.Registry.URL, err = g.uploadBuilt(ctx, c, prog, "busybox", baseimage.WriteBusyboxTar)
			case python:
				source = "python (debootstrap on this host)"
				req.Registry.URL, err = g.buildPython(ctx, c, prog)
			default:
				source = args[0]
				req.Registry.URL, err = g.importURL(ctx, c, prog, args[0])
			}
			if err != nil {
				return err
			}
			op, err := c.ImportImage(ctx, req)
			if err != nil {
				return err
			}
			res, err := followImport(ctx, c, op, prog)
			if ctx.Err() != nil {
				prog.done("")
				g.cancelAndWait(ctx, c, op)
				return exitError{130}
			}
			if err != nil {
				prog.done("")
				return fmt.Errorf("following import %s: %w (check it with `arbor wait %s`)", op, err, op)
			}
			res.Source = source
			if res.Status == apitypes.StatusSuccess && res.Image != nil && tag != "" {
				res.Tag = &tag
			}
			prog.done("")
			if g.json {
				if err := g.printJSON(res); err != nil {
					return err
				}
			}
			if res.Status != apitypes.StatusSuccess || res.Image == nil {
				return &cliError{fmt.Sprintf("import of %s %s: %s (operation %s)", source, strings.ToLower(res.Status), deref(res.Error), op), nil}
			}
			if !g.json {
				t := ""
				if res.Tag != nil {
					t = " as tag " + *res.Tag
				}
				fmt.Fprintf(g.stdout, "imported %s%s: image %s (%s)\n", source, t, *res.Image, seconds(res.Duration))
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&tag, "tag", "", "tag the imported image")
	fl.BoolVar(&busybox, "busybox", false, "import a busybox root filesystem built from this host's busybox-static")
	fl.BoolVar(&python, "python", false, "build and import a Debian base with python3 and pytest (debootstrap, needs root)")
	fl.StringVar(&username, "username", "", "registry user name (with --password-stdin)")
	fl.BoolVar(&passwordStdin, "password-stdin", false, "read the registry password or token from stdin")
	fl.StringVar(&timeout, "timeout", "", "give up after this long (seconds or 10m, 1h; default: the server's)")
	return cmd
}

// buildPython builds the Debian python base locally and uploads it.
func (g *globals) buildPython(ctx context.Context, c *client.Client, prog *progress) (string, error) {
	tmp, err := os.MkdirTemp("", "arbor-python-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	rootfs := tmp + "/rootfs"
	fmt.Fprintln(g.stderr, "arbor: building a Debian python base with debootstrap (2-3 minutes)")
	if err := baseimage.BuildPython(ctx, rootfs, "", g.stderr); err != nil {
		return "", err
	}
	return g.uploadBuilt(ctx, c, prog, "python", func(w io.Writer) error { return writeDirTar(w, rootfs) })
}

// importURL turns REF into the URL the daemon imports, uploading local
// archives and directories first.
func (g *globals) importURL(ctx context.Context, c *client.Client, prog *progress, ref string) (string, error) {
	if strings.Contains(ref, "://") {
		return ref, nil
	}
	fi, err := os.Stat(ref)
	switch {
	case err == nil && fi.IsDir():
		return g.uploadBuilt(ctx, c, prog, ref, func(w io.Writer) error { return writeDirTar(w, ref) })
	case err == nil && fi.Mode().IsRegular():
		up, err := g.uploadFile(ctx, c, prog, ref)
		if err != nil {
			return "", err
		}
		return "upload://" + up.UUID, nil
	case err == nil:
		return "", fmt.Errorf("%s is neither a regular file nor a directory", ref)
	case strings.HasSuffix(ref, ".tar") || strings.HasSuffix(ref, ".tar.gz") || strings.HasSuffix(ref, ".tgz") ||
		strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "/"):
		return "", fmt.Errorf("import %s: %w", ref, err)
	}
	return "docker://" + ref, nil
}

// uploadBuilt writes an archive with build into a temporary file, uploads
// it and returns its upload:// URL.
func (g *globals) uploadBuilt(ctx context.Context, c *client.Client, prog *progress, what string, build func(io.Writer) error) (string, error) {
	f, err := os.CreateTemp("", "arbor-import-*.tar")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	prog.update("archive", 0, 0, "")
	// Zeros stay holes: a sparse file in the tree does not take its size on
	// disk while the archive is staged.
	sw := archive.NewSparseWriter(f)
	bw := bufio.NewWriterSize(sw, 1<<20)
	if err := build(bw); err != nil {
		return "", fmt.Errorf("archive %s: %w", what, err)
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	if err := sw.Close(); err != nil {
		return "", err
	}
	up, err := g.uploadFile(ctx, c, prog, f.Name())
	if err != nil {
		return "", err
	}
	return "upload://" + up.UUID, nil
}

// uploadFile uploads the file at p unless the daemon has its content
// already, showing progress.
func (g *globals) uploadFile(ctx context.Context, c *client.Client, prog *progress, p string) (*apitypes.FileResponse, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, &progressReader{r: f, p: prog, phase: "hash", total: fi.Size()}); err != nil {
		return nil, fmt.Errorf("hash %s: %w", p, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if have, err := c.File(ctx, sum); err == nil {
		return &apitypes.FileResponse{UUID: have.UUID, SHA256: have.SHA256, Size: have.Size}, nil
	} else if !client.IsNotFound(err) {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	up, err := c.UploadFile(ctx, &progressReader{r: f, p: prog, phase: "upload", total: fi.Size()})
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", p, err)
	}
	if up.SHA256 != sum {
		return nil, fmt.Errorf("upload %s corrupted: the daemon stored sha256 %s, the file has %s", p, up.SHA256, sum)
	}
	return up, nil
}

// followImport shows an import's progress events until it completes.
func followImport(ctx context.Context, c *client.Client, op string, prog *progress) (*importResult, error) {
	res := &importResult{Operation: op}
	err := c.FollowEvents(ctx, op, -1, func(ev apitypes.OperationEvent) error {
		switch ev.Type {
		case apitypes.EventProgress:
			var d apitypes.EventDataProgress
			if json.Unmarshal(ev.Data, &d) == nil {
				prog.update(d.Phase, d.Done, d.Total, d.Unit)
			}
		case apitypes.EventCompletion:
			var d apitypes.EventDataCompletion
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return fmt.Errorf("decode completion event: %w", err)
			}
			res.Status, res.Image, res.Error, res.Duration = d.Status, d.ResultImageUUID, d.Error, float64(d.DurationMs)/1000
		}
		return nil
	})
	return res, err
}
