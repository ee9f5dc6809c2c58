package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupRefusesPostgres: with the metadata in PostgreSQL (from the
// environment or serve's config file), arbor backup and restore refuse,
// name pg_dump and pg_restore and what to do with the layers, and never
// print the database password.
func TestBackupRefusesPostgres(t *testing.T) {
	home := t.TempDir()
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"--home", home}, args...), strings.NewReader(""), &out, &errb)
		return code, errb.String()
	}
	t.Setenv("ARBOR_CONFIG", "")
	t.Setenv("ARBOR_DB", "postgres://arbor:s3cret@db.example:5432/arbor")
	t.Setenv("ARBOR_BLOBS", "s3://layers/prod")
	for _, cmd := range []string{"backup", "restore"} {
		code, stderr := run(cmd, filepath.Join(t.TempDir(), "b.db"))
		if code == 0 {
			t.Fatalf("arbor %s on PostgreSQL succeeded", cmd)
		}
		for _, want := range []string{"PostgreSQL", "pg_dump", "pg_restore", "env ARBOR_DB", "db.example:5432/arbor", "s3://layers/prod", "versioning"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("arbor %s: %q lacks %q", cmd, stderr, want)
			}
		}
		if strings.Contains(stderr, "s3cret") {
			t.Errorf("arbor %s printed the database password: %s", cmd, stderr)
		}
	}

	// From serve's config file, with layers in the home.
	t.Setenv("ARBOR_DB", "")
	t.Setenv("ARBOR_BLOBS", "")
	conf := filepath.Join(t.TempDir(), "arbor.toml")
	if err := os.WriteFile(conf, []byte("db = \"postgres://arbor@db/arbor\"\nlisten = \"127.0.0.1:7777\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stderr := run("backup", "--config", conf, filepath.Join(t.TempDir(), "b.db"))
	if code == 0 || !strings.Contains(stderr, "pg_dump") || !strings.Contains(stderr, "config "+conf) || !strings.Contains(stderr, filepath.Join(home, "layers")) {
		t.Errorf("arbor backup --config (db in it): %d %s", code, stderr)
	}
}
