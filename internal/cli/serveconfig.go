package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"
)

// DefaultConfigFile is read by `arbor serve` when it exists and neither
// --config nor $ARBOR_CONFIG names another file.
const DefaultConfigFile = "/etc/arbor/arbor.toml"

// Every `arbor serve` flag is a setting with one precedence rule:
//
//	flag > environment ARBOR_<NAME> > config file key <name> > default
//
// The config key is the flag's name (TOML, e.g. `listen = "127.0.0.1:7777"`,
// `allow-runtime = ["runc"]`), the variable its name upper-cased with "-"
// as "_" (ARBOR_LISTEN, ARBOR_ALLOW_RUNTIME, comma-separated for lists).

// notSettings are the flags that are not settings: they choose what serve
// does, not how the daemon runs.
var notSettings = []string{"config", "print-config", "help"}

// noEnv are settings read from no variable: ARBOR_TOKEN is the clients'
// token, which must not silently become the daemon's.
var noEnv = []string{"token"}

// source says where a setting's value came from.
type source struct {
	kind string // "flag", "env", "config", "default"
	from string // the variable or the file
}

func (s source) String() string {
	if s.from == "" {
		return s.kind
	}
	return s.kind + " " + s.from
}

// envName is the variable that sets the flag name, or "" for none.
func envName(name string) string {
	if slices.Contains(noEnv, name) {
		return ""
	}
	return "ARBOR_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// resolveSettings applies environment and config file (path; "" for none)
// to the flags of fs the command line did not set, and returns where each
// setting's value came from. A config key that is no setting, or a value
// that does not parse, is an error naming the file, key and fix.
func resolveSettings(fs *pflag.FlagSet, getenv func(string) string, path string) (map[string]source, error) {
	file := map[string]any{}
	if path != "" {
		md, err := toml.DecodeFile(path, &file)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		_ = md
		for k := range file {
			if f := fs.Lookup(k); f == nil || slices.Contains(notSettings, k) {
				return nil, fmt.Errorf("config file %s: unknown key %q (the keys are the flags of `arbor serve`: %s)", path, k, strings.Join(settingNames(fs), ", "))
			}
		}
	}
	src := map[string]source{}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if slices.Contains(notSettings, f.Name) {
			return
		}
		switch {
		case f.Changed:
			src[f.Name] = source{kind: "flag"}
		case envName(f.Name) != "" && getenv(envName(f.Name)) != "":
			v := envName(f.Name)
			if err := setFlag(f, []string{getenv(v)}, true); err != nil {
				errs = append(errs, fmt.Errorf("environment %s: %w", v, err))
			}
			src[f.Name] = source{kind: "env", from: v}
		case file[f.Name] != nil:
			vals, err := tomlStrings(file[f.Name])
			if err == nil {
				err = setFlag(f, vals, false)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("config file %s: key %q: %w", path, f.Name, err))
			}
			src[f.Name] = source{kind: "config", from: path}
		default:
			src[f.Name] = source{kind: "default"}
		}
	})
	return src, errors.Join(errs...)
}

// setFlag sets f from values: a list flag takes them all (split at commas
// when they come from a variable), a scalar exactly one.
func setFlag(f *pflag.Flag, vals []string, fromEnv bool) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		if fromEnv {
			vals = strings.Split(vals[0], ",")
		}
		return sv.Replace(vals)
	}
	if len(vals) != 1 {
		return fmt.Errorf("takes one value (%s), not a list", f.Value.Type())
	}
	if err := f.Value.Set(vals[0]); err != nil {
		return fmt.Errorf("%q is not a valid %s: %w", vals[0], f.Value.Type(), err)
	}
	return nil
}

// tomlStrings turns a decoded TOML value into flag value strings.
func tomlStrings(v any) ([]string, error) {
	switch v := v.(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, err := tomlStrings(e)
			if err != nil {
				return nil, err
			}
			if len(s) != 1 {
				return nil, errors.New("nested lists are not settings")
			}
			out = append(out, s[0])
		}
		return out, nil
	case string:
		return []string{v}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'f', -1, 64)}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	}
	return nil, fmt.Errorf("a %T is not a setting value: use a string, number, boolean or list", v)
}

func settingNames(fs *pflag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(notSettings, f.Name) {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	return names
}

// configPath is the config file serve reads: --config, else $ARBOR_CONFIG,
// else DefaultConfigFile if it exists. An explicit file must exist.
func configPath(flag string, getenv func(string) string) (string, error) {
	p := flag
	if p == "" {
		p = getenv("ARBOR_CONFIG")
	}
	if p == "" {
		if _, err := os.Stat(DefaultConfigFile); err == nil {
			return DefaultConfigFile, nil
		}
		return "", nil
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("config file: %w (pass an existing file to --config or $ARBOR_CONFIG)", err)
	}
	return p, nil
}

// printSettings writes the resolved settings as a TOML config file, each
// with where its value came from.
func printSettings(w io.Writer, fs *pflag.FlagSet, src map[string]source, path string) error {
	if path == "" {
		path = "none"
	}
	fmt.Fprintf(w, "# arbor serve settings: flag > environment ARBOR_* > config file (%s) > default\n", path)
	for _, name := range settingNames(fs) {
		f := fs.Lookup(name)
		line := name + " = " + tomlValue(f)
		if name == "token" && f.Value.String() != "" {
			line = "# token = (set, not shown)"
		}
		if u, err := url.Parse(f.Value.String()); name == "db" && err == nil {
			line = name + " = " + strconv.Quote(u.Redacted()) // a DSN's password is not shown
		}
		fmt.Fprintf(w, "%-44s # %s\n", line, src[name])
	}
	return nil
}

// tomlValue renders f's value as TOML.
func tomlValue(f *pflag.Flag) string {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		q := make([]string, 0)
		for _, v := range sv.GetSlice() {
			q = append(q, strconv.Quote(v))
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	switch f.Value.Type() {
	case "int", "int64", "float64", "bool":
		return f.Value.String()
	}
	return strconv.Quote(f.Value.String())
}
