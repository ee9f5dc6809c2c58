// Package s3server runs versitygw, a real S3 server, on loopback over a
// temporary directory for tests. scripts/setup.sh installs the pinned
// version; without it a test skips, and under CI (CI=true) it fails.
package s3server

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Version is the versitygw release the tests are written against.
const Version = "v1.8.0"

// Server is a running versitygw.
type Server struct {
	Endpoint             string // http://127.0.0.1:port
	AccessKey, SecretKey string
	Dir                  string // the posix backend's root: Dir/bucket/key are the objects
	addr                 string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// Binary returns the versitygw binary, or skips t (fails it under CI).
func Binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("ARBOR_VERSITYGW"), "/var/cache/arbor/versitygw-" + Version + "/versitygw"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	msg := "versitygw is not installed: run scripts/setup.sh (go install github.com/versity/versitygw/cmd/versitygw@" + Version + ")"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Start runs versitygw on a free loopback port with random credentials,
// stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	s := &Server{AccessKey: "k" + rand.Text()[:15], SecretKey: rand.Text(), Dir: t.TempDir()}
	t.Cleanup(s.Stop)
	var err error
	for range 3 { // another process may take the port between its pick and versitygw's bind
		ln, lerr := net.Listen("tcp", "127.0.0.1:0")
		if lerr != nil {
			t.Fatal(lerr)
		}
		s.addr = ln.Addr().String()
		ln.Close()
		s.Endpoint = "http://" + s.addr
		if err = s.start(t, bin); err == nil {
			return s
		}
	}
	t.Fatal(err)
	return nil
}

func (s *Server) start(t testing.TB, bin string) error {
	t.Helper()
	s.cmd = exec.Command(bin, "--port", s.addr, "posix", s.Dir)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	log, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); log.Close(); close(s.exited) }()
	// Ready when it accepts connections (about 0.2 s), or failed when it exits.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			s.cmd = nil
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("versitygw exited at start: %s", b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s within 30 s", s.addr)
		}
	}
}

// Stop stops the server (S3 unavailable); Restart brings it back on the
// same port and data.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts a stopped server again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(t, Binary(t)); err != nil {
		t.Fatal(err)
	}
}

// Client returns an S3 client for the server with its root credentials.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Bucket creates a bucket with a fresh name and returns it.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("arbor-%x", time.Now().UnixNano())
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return name
}

// Env is the AWS environment that points the SDK's default configuration
// at the server (and away from any ~/.aws of the host).
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey, "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
	}
}

// SetEnv sets Env in t's process environment (t must not be parallel).
func (s *Server) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}
