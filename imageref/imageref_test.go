package imageref

import (
	"regexp"
	"strings"
	"testing"
)

func TestParseImageRef(t *testing.T) {
	const id = "3f2a9c1e-0b7d-4e2a-9f00-1234567890ab"
	for _, tc := range []struct {
		in      string
		want    ImageRef
		prefix  string
		wantErr bool
	}{
		{in: id, want: ImageRef{UUID: id}},
		{in: "  " + strings.ToUpper(id) + "\n", want: ImageRef{UUID: id}},
		{in: "busybox:latest", want: ImageRef{Tag: "busybox:latest"}},
		{in: "tag:busybox:latest", want: ImageRef{Tag: "busybox:latest", Explicit: true}},
		{in: "tag:" + id, want: ImageRef{Tag: id, Explicit: true}},
		{in: "3f2a", want: ImageRef{Tag: "3f2a"}, prefix: "3f2a"},
		{in: "3F2A9C1E-0b", want: ImageRef{Tag: "3F2A9C1E-0b"}, prefix: "3f2a9c1e-0b"},
		{in: "tag:3f2a", want: ImageRef{Tag: "3f2a", Explicit: true}},
		{in: "3f2", want: ImageRef{Tag: "3f2"}},               // too short for a prefix
		{in: "3f2a9c1e0b", want: ImageRef{Tag: "3f2a9c1e0b"}}, // no dash where the UUID has one
		{in: "beef-cafe", want: ImageRef{Tag: "beef-cafe"}},
		{in: id + "0", want: ImageRef{Tag: id + "0"}},
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "tag:", wantErr: true},
	} {
		got, err := ParseImageRef(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParseImageRef(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseImageRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if p := got.UUIDPrefix(); p != tc.prefix {
			t.Errorf("ParseImageRef(%q).UUIDPrefix() = %q, want %q", tc.in, p, tc.prefix)
		}
		again, err := ParseImageRef(got.String())
		if err != nil || again != got {
			t.Errorf("ParseImageRef(%q.String() = %q) = %+v, %v; want it back", tc.in, got.String(), again, err)
		}
	}
}

func TestIsUUID(t *testing.T) {
	// The regular expression the server, client and CLI each used before.
	re := regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	for _, s := range []string{
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890ab",
		"3F2A9C1E-0B7D-4E2A-9F00-1234567890AB",
		"00000000-0000-0000-0000-000000000000",
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890a",
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890abc",
		"3f2a9c1e0b7d-4e2a-9f00-1234567890ab-",
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890ag",
		"{3f2a9c1e-0b7d-4e2a-9f00-1234567890ab}",
		"3f2a9c1e0b7d4e2a9f001234567890ab",
		"",
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890ab\n",
	} {
		if got, want := IsUUID(s), re.MatchString(s); got != want {
			t.Errorf("IsUUID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestIsUUIDPrefix(t *testing.T) {
	for s, want := range map[string]bool{
		"3f2a": true, "3F2A": true, "3f2a9c1e": true, "3f2a9c1e-": true, "3f2a9c1e-0b7d-4e2a-9f00-1234567890ab": true,
		"3f2": false, "3f2g": false, "3f2a9c1e0": false, "-3f2a": false, "3f2a9c1e-0b7d-4e2a-9f00-1234567890ab0": false, "": false,
	} {
		if got := IsUUIDPrefix(s); got != want {
			t.Errorf("IsUUIDPrefix(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestValidTag(t *testing.T) {
	// The regular expression the server and CLI each used before.
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$`)
	for _, tc := range []struct {
		tag string
		ok  bool
	}{
		{"busybox", true},
		{"busybox:latest", true},
		{"common/python-ml/python:3.11-slim", true},
		{"a@sha256+x_y.z", true},
		{"0", true},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{"", false},
		{"-x", false},
		{".x", false},
		{"a b", false},
		{"a\n", false},
		{"é", false},
		{"tag:x", false},
		{"tag", true},
		{"x!", false},
	} {
		err := ValidTag(tc.tag)
		if (err == nil) != tc.ok {
			t.Errorf("ValidTag(%q) = %v, want ok=%v", tc.tag, err, tc.ok)
		}
		if old := re.MatchString(tc.tag) && !strings.HasPrefix(tc.tag, "tag:"); old != tc.ok {
			t.Errorf("ValidTag(%q): the former rule says %v", tc.tag, old)
		}
		if err != nil && !strings.Contains(err.Error(), "letters, digits") {
			t.Errorf("ValidTag(%q) error %q does not say what a tag may hold", tc.tag, err)
		}
	}
}
