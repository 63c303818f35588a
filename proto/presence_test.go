package proto

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestPresenceKey(t *testing.T) {
	for _, tt := range []struct {
		topic, instance, key string
	}{
		{"rooms:lobby", "gw-a-0f3c", "rooms_3Alobby.gw-a-0f3c"},
		{"rooms:a.b", "gw.1", "rooms_3Aa_2Eb.gw_2E1"},
		{"rooms:>", "x_y", "rooms_3A_3E.x_5Fy"},
	} {
		key, err := PresenceKey(tt.topic, tt.instance)
		if err != nil || key != tt.key {
			t.Errorf("PresenceKey(%q, %q) = %q, %v; want %q", tt.topic, tt.instance, key, err, tt.key)
			continue
		}
		for _, k := range []string{key, PresenceSubjectPrefix + key} {
			topic, inst, err := ParsePresenceKey(k)
			if err != nil || topic != tt.topic || inst != tt.instance {
				t.Errorf("ParsePresenceKey(%q) = %q, %q, %v", k, topic, inst, err)
			}
		}
	}
	for _, bad := range []string{"", "rooms_3Alobby", "rooms_3Alobby.a.b", "rooms_3Alobby._", "_ZZ.gw"} {
		if _, _, err := ParsePresenceKey(bad); err == nil {
			t.Errorf("ParsePresenceKey(%q) accepted", bad)
		}
	}
	if _, err := PresenceKey("rooms:lobby", ""); err == nil {
		t.Error("empty instance accepted")
	}
}

func TestDecodePresenceState(t *testing.T) {
	for _, tt := range []struct {
		value string
		ok    bool
		users int
	}{
		{`{}`, true, 0},
		{`{"alice":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAA","online_at":"1700000000"}]}}`, true, 1},
		{`{"alice":{"metas":[{"phx_ref":"a"},{"phx_ref":"b"}]},"bob":{"metas":[{"phx_ref":"c"}]}}`, true, 2},
		{`null`, false, 0},
		{`[]`, false, 0},
		{`{"alice":{"metas":[]}}`, false, 0},
		{`{"alice":{"metas":[{"online_at":"1"}]}}`, false, 0},
		{`{"":{"metas":[{"phx_ref":"a"}]}}`, false, 0},
		{`{"a\u0000":{"metas":[{"phx_ref":"a"}]}}`, false, 0},
		{`{"alice":{"metas":[{"phx_ref":"` + strings.Repeat("r", MaxPresenceRefLength+1) + `"}]}}`, false, 0},
	} {
		st, err := DecodePresenceState([]byte(tt.value))
		if (err == nil) != tt.ok || len(st) != tt.users {
			t.Errorf("DecodePresenceState(%s) = %v, %v; want ok %v with %d users", tt.value, st, err, tt.ok, tt.users)
		}
	}
}

// Whatever a value holds, a state that decodes is valid and encodes back
// to what decodes to the same.
func FuzzDecodePresenceState(f *testing.F) {
	f.Add([]byte(`{"alice":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAA","online_at":"1700000000"}]}}`))
	f.Add([]byte(`{"b":{"metas":[{"phx_ref":"x","phx_ref_prev":"y","online_at":"1"},{"phx_ref":"z"}]}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"__proto__":{"metas":[{"phx_ref":"p"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := DecodePresenceState(data)
		if err != nil {
			return
		}
		for user, p := range st {
			if ValidUserID(user) != nil || len(p.Metas) == 0 {
				t.Fatalf("accepted %q: %v", user, p)
			}
		}
		again, err := Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := DecodePresenceState(again)
		if err != nil || len(st2) != len(st) {
			t.Fatalf("re-decode of %s: %v", again, err)
		}
	})
}

func TestMergePresence(t *testing.T) {
	a := PresenceState{"alice": {Metas: []Meta{{PhxRef: "1"}}}, "bob": {Metas: []Meta{{PhxRef: "2"}}}}
	b := PresenceState{"alice": {Metas: []Meta{{PhxRef: "3"}}}}
	got, _ := json.Marshal(MergePresence(a, nil, b))
	want := `{"alice":{"metas":[{"phx_ref":"1","online_at":""},{"phx_ref":"3","online_at":""}]},"bob":{"metas":[{"phx_ref":"2","online_at":""}]}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got, _ := json.Marshal(MergePresence()); string(got) != `{}` {
		t.Fatalf("no state: %s", got)
	}
	// The inputs are not changed.
	if len(a["alice"].Metas) != 1 {
		t.Fatal("MergePresence changed its input")
	}
}

func TestNewPresenceRef(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{16}$`)
	seen := map[string]bool{}
	for range 1000 {
		r := NewPresenceRef()
		if !re.MatchString(r) || seen[r] {
			t.Fatalf("ref %q: not 16 base64url characters, or seen before", r)
		}
		seen[r] = true
	}
}
