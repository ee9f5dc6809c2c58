package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/arborsh/arbor/internal/engine"
)

// Catalog page sizes: what a request without n gets, and the most it may
// ask for (a larger n is cut to it, with a Link to the rest).
const (
	catalogDefaultPage = 1000
	catalogMaxPage     = 10000
)

// repoPathRE is a repository name as docker references spell it (the
// distribution spec's path components, lower case).
var repoPathRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// serveCatalog serves GET /v2/_catalog (distribution spec "listing
// repositories"): the repositories of the caller's account in lexical
// order, paginated with n and last and a Link header to the next page.
// Each image is listed as arbor/<uuid> and arbor-layers/<uuid>, and each
// tag "<name>:<t>" or "<name>" whose name is a valid repository as
// arbor/<name> and arbor-layers/<name>.
func (x *Exporter) serveCatalog(ctx context.Context, w http.ResponseWriter, r *http.Request, account string) {
	q := r.URL.Query()
	n := catalogDefaultPage
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			writeRegError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", fmt.Sprintf("n=%q is not a non-negative number of repositories", s))
			return
		}
		n = min(v, catalogMaxPage)
	}
	last := q.Get("last")
	repos, err := x.repositories(ctx, account)
	if err != nil {
		x.writeError(w, err, "NAME_UNKNOWN")
		return
	}
	start := sort.SearchStrings(repos, last)
	if start < len(repos) && repos[start] == last {
		start++
	}
	page := repos[start:]
	if len(page) > n {
		page = page[:n]
		if n > 0 {
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[len(page)-1]}}
			w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?%s>; rel="next"`, next.Encode()))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string][]string{"repositories": append([]string{}, page...)})
}

// repositories lists account's repositories, sorted.
func (x *Exporter) repositories(ctx context.Context, account string) ([]string, error) {
	set := map[string]bool{}
	const batch = 1000
	for off := 0; ; off += batch {
		ims, err := x.e.ListImages(ctx, engine.ImageFilter{Account: account, Limit: batch, Offset: off})
		if err != nil {
			return nil, err
		}
		for _, im := range ims {
			names := []string{im.UUID}
			if nm := tagRepo(im.Tag); nm != "" && !engine.IsUUID(nm) {
				names = append(names, nm)
			}
			for _, nm := range names {
				set[flatRepo+nm] = true
				set[layeredRepo+nm] = true
			}
		}
		if len(ims) < batch {
			break
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// tagRepo is the repository name under which tag is pulled ("" if it
// cannot be): "<name>" of "<name>:<t>", or the tag itself (pulled as
// :latest).
func tagRepo(tag string) string {
	if tag == "" {
		return ""
	}
	name := tag
	if i := strings.LastIndexByte(tag, ':'); i >= 0 {
		if !dockerTagRE.MatchString(tag[i+1:]) {
			return ""
		}
		name = tag[:i]
	}
	if !repoPathRE.MatchString(name) {
		return ""
	}
	return name
}
