package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

// imagePathArg resolves an IMAGE:PATH argument. def is the path when arg
// has none ("" makes the path required).
func imagePathArg(ctx context.Context, c *client.Client, verb, arg, def string) (*apitypes.Image, string, error) {
	ref, p, ok := splitImagePath(arg)
	if !ok {
		if def == "" {
			return nil, "", fmt.Errorf("%s needs IMAGE:/PATH with an absolute path, like busybox:/etc/passwd (got %q)", verb, arg)
		}
		p = def
	}
	im, err := resolveImage(ctx, c, ref)
	if err != nil {
		return nil, "", err
	}
	return im, p, nil
}

// notFound rewrites a 404 about path into a message naming the image.
func notFound(err error, im *apitypes.Image, p string) error {
	if client.IsNotFound(err) {
		return noSuchPath(im, p, err)
	}
	return err
}

func noSuchPath(im *apitypes.Image, p string, err error) error {
	return &cliError{fmt.Sprintf("%s: no such file or directory in image %s (list its directory with `arbor ls %s:%s`)", p, shortID(im.UUID), shortID(im.UUID), path.Dir(p)), err}
}

func newLs(g *globals) *cobra.Command {
	var long bool
	cmd := &cobra.Command{
		Use:   "ls IMAGE[:PATH]",
		Short: "List a directory of an image",
		Long: `List a directory of an image without starting a sandbox (PATH defaults to /;
a file lists itself). Names are printed one per line, directories with a
trailing /; -l prints the ls -l long format (mode, links, owner, group,
size, mtime, name, link target), and --json the entries with every field.

` + imageRefHelp + ` PATH is absolute; IMAGE:PATH splits at the first ":/".`,
		Example: `  arbor ls busybox
  arbor ls -l busybox:/etc
  arbor ls --json 3f2a9c1e:/root | jq '.files[].path'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			im, p, err := imagePathArg(ctx, c, "ls", args[0], "/")
			if err != nil {
				return err
			}
			if long && !g.json {
				text, err := c.ListDirText(ctx, im.UUID, p)
				if err != nil {
					return notFound(err, im, p)
				}
				_, err = io.WriteString(g.stdout, text)
				return err
			}
			list, err := c.ListDir(ctx, im.UUID, p)
			if err != nil {
				return notFound(err, im, p)
			}
			if g.json {
				return g.printJSON(list)
			}
			for _, f := range list.Files {
				name := f.Path
				switch {
				case f.IsDir:
					name += "/"
				case f.IsSymlink:
					name += " -> " + f.SymlinkTo
				}
				fmt.Fprintln(g.stdout, name)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&long, "long", "l", false, "long format, like ls -l")
	return cmd
}

func newCat(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cat IMAGE:PATH...",
		Short: "Print files of an image",
		Long: `Print regular files of an image to stdout, without starting a sandbox.
` + imageRefHelp + `

--json prints an array of {"image", "path", "size", "content", "encoding"}
where encoding is "ascii" or "base64" (for binary content).`,
		Example: `  arbor cat busybox:/etc/passwd
  arbor cat with-pytest:/root/.cache/log.txt | grep FAIL`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			type file struct {
				Image    string `json:"image"`
				Path     string `json:"path"`
				Size     int    `json:"size"`
				Content  string `json:"content"`
				Encoding string `json:"encoding"`
			}
			var files []file
			for _, a := range args {
				im, p, err := imagePathArg(ctx, c, "cat", a, "")
				if err != nil {
					return err
				}
				if g.json {
					b, err := c.ReadFile(ctx, im.UUID, p)
					if err != nil {
						return catError(err, im, p)
					}
					r := apitypes.NewStreamRepr(b, false)
					files = append(files, file{Image: im.UUID, Path: p, Size: len(b), Content: r.Value, Encoding: r.Encoding})
					continue
				}
				rc, _, err := c.Download(ctx, im.UUID, p)
				if err != nil {
					return catError(err, im, p)
				}
				_, err = io.Copy(g.stdout, rc)
				rc.Close()
				if err != nil {
					return fmt.Errorf("read %s: %w", a, err)
				}
			}
			if g.json {
				return g.printJSON(files)
			}
			return nil
		}),
	}
	return cmd
}

func catError(err error, im *apitypes.Image, p string) error {
	if client.IsBadRequest(err) {
		return &cliError{fmt.Sprintf("%s is not a regular file in image %s: list a directory with `arbor ls %s:%s`, copy it with `arbor cp`", p, shortID(im.UUID), shortID(im.UUID), p), err}
	}
	return notFound(err, im, p)
}

func newCp(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp IMAGE:PATH LOCAL|-",
		Short: "Copy a file or directory out of an image",
		Long: `Copy a file or a directory tree out of an image, without starting a sandbox.

Like cp -r: if LOCAL is an existing directory the copy goes inside it under
PATH's base name, else it is created as LOCAL. Modes and mtimes are kept,
owners are not; device nodes are skipped. Nothing is written outside LOCAL,
whatever names or symlinks the image holds. With LOCAL "-", a tar archive of
PATH is written to stdout instead.

` + imageRefHelp + ` --json prints {"image", "path", "destination", "type",
"files", "bytes"}.`,
		Example: `  arbor cp with-pytest:/src/report.xml .
  arbor cp 3f2a9c1e:/root/project ./project-attempt-2
  arbor cp busybox:/etc - | tar -t`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			im, p, err := imagePathArg(ctx, c, "cp", args[0], "")
			if err != nil {
				return err
			}
			dst := args[1]
			if dst == "-" {
				rc, err := c.Archive(ctx, im.UUID, p)
				if err != nil {
					return notFound(err, im, p)
				}
				defer rc.Close()
				_, err = io.Copy(g.stdout, rc)
				return err
			}
			isFile, err := c.FileExistsIn(ctx, im.UUID, p)
			if err != nil && !client.IsBadRequest(err) {
				return notFound(err, im, p)
			}
			if !isFile {
				ok, err := c.PathExists(ctx, im.UUID, p)
				if err != nil {
					return notFound(err, im, p)
				}
				if !ok {
					return noSuchPath(im, p, nil)
				}
			}
			base := path.Base(p)
			if base == "/" {
				base = "rootfs"
			}
			if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
				dst = filepath.Join(dst, base)
			}
			rc, err := c.Archive(ctx, im.UUID, p)
			if err != nil {
				return notFound(err, im, p)
			}
			defer rc.Close()
			out := struct {
				Image       string `json:"image"`
				Path        string `json:"path"`
				Destination string `json:"destination"`
				Type        string `json:"type"`
				extractStats
			}{Image: im.UUID, Path: p, Destination: dst, Type: "dir"}
			if isFile {
				out.Type = "file"
				n, err := copyFileMember(rc, dst)
				if err != nil {
					return err
				}
				out.Files, out.Bytes = 1, n
			} else if out.extractStats, err = extractTar(rc, dst); err != nil {
				return fmt.Errorf("copy %s to %s: %w", args[0], dst, err)
			}
			if g.json {
				return g.printJSON(out)
			}
			if out.Skipped > 0 {
				g.errorf("skipped %d device nodes or fifos", out.Skipped)
			}
			return nil
		}),
	}
	return cmd
}

// copyFileMember writes the single regular file of a one-member archive to
// dst through a temporary file in the same directory, keeping its mode.
func copyFileMember(r io.Reader, dst string) (int64, error) {
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		return 0, fmt.Errorf("read archive: %w", err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return 0, errors.New("expected a regular file in the archive")
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".arbor-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, tr)
	if err == nil {
		err = tmp.Chmod(fs.FileMode(hdr.Mode & 0o777))
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(tmp.Name(), hdr.ModTime, hdr.ModTime)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", dst, err)
	}
	return n, nil
}
