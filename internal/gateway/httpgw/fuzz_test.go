package httpgw

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever a viewer puts in next, the login redirects to a path
// on this host.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil", "/\\evil", "https://evil/", "/%2F%2Fevil", "/x?porthole_token=t", "\t/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") ||
			strings.ContainsAny(got, "\\\r\n\t\x00") {
			t.Fatalf("safeNext(%q) = %q", next, got)
		}
		u, err := url.Parse(got)
		if err != nil || u.Host != "" || u.Scheme != "" || u.Query().Has(TokenParam) {
			t.Fatalf("safeNext(%q) = %q: %v %+v", next, got, err, u)
		}
	})
}
