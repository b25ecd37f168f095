package config

import (
	"errors"
	"strings"
	"testing"
)

// TestYAMLErrorLine: a YAML syntax error names the line the user must fix,
// not the line where the enclosing block began (what yaml.v3 reports), and a
// tab in the indentation gets a hint.
func TestYAMLErrorLine(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		line      int
		msg       string
	}{
		{"key indented too far", "name: home\nrelay:\n  address: r.example.com:7443\n   token: x\nservices: []\n", 4, "invalid YAML"},
		{"key dedented", "name: home\nrelay:\n  address: r.example.com:7443\n token: x\n", 4, "invalid YAML"},
		{"list item key dedented", "name: home\nservices:\n  - name: a\n    port: 10554\n   target: x\n", 5, "invalid YAML"},
		{"tab after a key", "name: home\nrelay:\n  address: r.example.com:7443\n\ttoken: x\n", 4, "tabs are not allowed for indentation in YAML; use spaces"},
		{"tab as the first indent", "name: home\nrelay:\n\taddress: r.example.com:7443\n", 3, "tabs are not allowed for indentation in YAML; use spaces"},
		{"tab deep in a list", "name: home\nservices:\n  - name: a\n  \tport: 10554\n", 4, "tabs are not allowed for indentation in YAML; use spaces"},
		{"unclosed flow list", "name: home\nrelay:\n  address: r.example.com:7443\n  token: [x\nfoo: 1\n", 4, "invalid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAgent("a.yaml", []byte(tc.doc), envOf())
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("got %v, want one error", err)
			}
			if es[0].Line != tc.line || !strings.Contains(es[0].Msg, tc.msg) {
				t.Errorf("got %q (line %d), want line %d with %q", es[0].Error(), es[0].Line, tc.line, tc.msg)
			}
			if !strings.Contains(tc.doc, "\t") && strings.Contains(es[0].Msg, "tab") {
				t.Errorf("tab hint without a tab: %q", es[0].Msg)
			}
		})
	}
	// A tab inside a value is no indentation problem: no hint.
	if _, err := ParseAgent("a.yaml", []byte("name: home\nrelay: {address: \"r.example.com:7443\",\ttoken: [}\n"), envOf()); err == nil || strings.Contains(err.Error(), "tabs are not allowed") {
		t.Errorf("got %v", err)
	}
}
