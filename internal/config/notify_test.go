package config

import (
	"reflect"
	"strings"
	"testing"
)

const notifySvc = "  - {name: cam, target: \"192.168.1.20:554\", port: 10554, allow: [any]}\n"

func TestNotifyTargets(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(svcHead+notifySvc+`notify:
  - type: webhook
    url: https://hooks.example.com/porthole
    headers: {X-Key: "${HOOK_KEY}"}
  - {type: ntfy, url: "https://ntfy.sh/my-cams", token: "${NTFY}"}
  - {type: Shoutrrr, url: "${TG_URL}"}
`), envOf("HOOK_KEY", "k1", "NTFY", "tk_x", "TG_URL", "telegram://123:abc@telegram?chats=42"))
	checkErrs(t, err)
	want := []NotifyTarget{
		{Type: "webhook", URL: "https://hooks.example.com/porthole", Headers: map[string]string{"X-Key": "k1"}, Line: 6},
		{Type: "ntfy", URL: "https://ntfy.sh/my-cams", Token: "tk_x", Line: 9},
		{Type: "shoutrrr", URL: "telegram://123:abc@telegram?chats=42", Line: 10},
	}
	if !reflect.DeepEqual(a.Notify, want) {
		t.Errorf("notify\n%+v\nwant\n%+v", a.Notify, want)
	}
	if s := a.Notify[2].String(); strings.Contains(s, "abc") || strings.Contains(a.Notify[1].String(), "tk_x") {
		t.Errorf("String leaks a secret: %s", s)
	}
}

func TestNotifyErrors(t *testing.T) {
	_, err := ParseAgent("a.yaml", []byte(svcHead+notifySvc+`notify:
  - {type: slack, url: "https://x.example/"}
  - {type: ntfy, url: "https://ntfy.sh/"}
  - {type: webhook, url: "ftp://secret@x/"}
  - {type: ntfy, url: "https://ntfy.sh/t", headers: {A: b}}
  - {type: webhook}
  - {type: shoutrrr, url: "no-scheme-secret"}
  - {type: webhook, url: "https://x.example/", headers: {Content-Type: x}}
`), nil)
	checkErrs(t, err,
		want{6, "notify[0].type", "unknown type"},
		want{7, "notify[1].url", "needs the topic"},
		want{8, "notify[2].url", "expected an http(s):// URL"},
		want{9, "notify[3].headers", "not a key of type ntfy"},
		want{10, "notify[4].url", "required"},
		want{11, "notify[5].url", "shoutrrr service URL"},
		want{12, "notify[6].headers.Content-Type", "not a header name"},
	)
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("an error echoes a URL: %v", err)
	}
}
