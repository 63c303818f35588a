package proto

import (
	"encoding/json"
	"maps"
	"testing"
)

func TestDecodeBroadcast(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"new_msg", `{"event":"new_msg","payload":{"body":"hi"}}`, true},
		{"empty payload object", `{"event":"x","payload":{}}`, true},
		{"not json", `hello`, false},
		{"no event", `{"payload":{}}`, false},
		{"reserved event", `{"event":"phx_close","payload":{}}`, false},
		{"payload string", `{"event":"x","payload":"s"}`, false},
		{"payload missing", `{"event":"x"}`, false},
		{"payload array", `{"event":"x","payload":[1]}`, false},
		{"event not string", `{"event":1,"payload":{}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeBroadcast([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("DecodeBroadcast(%s) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestReplyValidate(t *testing.T) {
	good := []Reply{OK(nil), OK(json.RawMessage(`{"a":1}`)), Error("unauthorized"), NoReply()}
	for _, r := range good {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	bad := []Reply{{Status: "maybe"}, {Status: "ok", Response: json.RawMessage(`[1]`)}}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%+v: want an error", r)
		}
	}
	if got := string(Error("unauthorized").Response); got != `{"reason":"unauthorized"}` {
		t.Errorf("Error response = %s", got)
	}
}

func TestBinaryBroadcast(t *testing.T) {
	b, err := DecodeBroadcast([]byte(`{"event":"frame","binary":"AQID"}`))
	if err != nil || string(b.Binary) != "\x01\x02\x03" {
		t.Fatalf("binary broadcast: %+v %v", b, err)
	}
	if _, err := DecodeBroadcast([]byte(`{"event":"frame","binary":"AQID","payload":{}}`)); err == nil {
		t.Fatal("both payload and binary accepted")
	}
	if _, err := DecodeBroadcast([]byte(`{"event":"frame","binary":"!!"}`)); err == nil {
		t.Fatal("bad base64 accepted")
	}
}

func TestDisconnectSubject(t *testing.T) {
	for _, user := range []string{"alice", "a.b", "*", "42"} {
		subj, err := DisconnectSubject(user)
		if err != nil {
			t.Fatal(err)
		}
		back, err := UserFromSubject(subj)
		if err != nil || back != user {
			t.Fatalf("%q -> %q -> %q, %v", user, subj, back, err)
		}
	}
	if _, err := DisconnectSubject(""); err == nil {
		t.Fatal("empty user accepted")
	}
}

// FuzzDecodeBroadcast: whatever arrives on a room subject, decoding never
// panics, and what it accepts is deliverable (a valid event, an object or bytes).
func FuzzDecodeBroadcast(f *testing.F) {
	for _, s := range []string{`{"event":"new_msg","payload":{"body":"hi"}}`, `{"event":"b","binary":"AQID"}`, `{"event":"phx_close","payload":{}}`, `[]`, `{"event":"x","payload":{"a":[1,{"b":null}]},"from":"u","exclude_from":true}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBroadcast(data)
		if err != nil {
			return
		}
		if b.Event == "" || len(b.Event) > MaxEventLength || (b.Binary == nil && !isJSONObject(b.Payload)) {
			t.Fatalf("accepted an undeliverable broadcast: %+v", b)
		}
	})
}

func TestIgnoreUpdate(t *testing.T) {
	set := func(ids ...string) map[string]struct{} {
		m := make(map[string]struct{})
		for _, id := range ids {
			m[id] = struct{}{}
		}
		return m
	}
	tests := []struct {
		name    string
		update  IgnoreUpdate
		json    string
		current map[string]struct{}
		want    map[string]struct{}
	}{
		{"whole list replaces", IgnoreUpdate{Ignored: []string{"bob"}}, `{"ignored":["bob"]}`, set("carol"), set("bob")},
		{"empty whole list clears", IgnoreUpdate{Ignored: []string{}}, `{"ignored":[]}`, set("carol"), set()},
		{"add", IgnoreUpdate{Add: []string{"bob"}}, `{"add":["bob"]}`, set("carol"), set("bob", "carol")},
		{"remove", IgnoreUpdate{Remove: []string{"carol"}}, `{"remove":["carol"]}`, set("bob", "carol"), set("bob")},
		{"add to nothing", IgnoreUpdate{Add: []string{"bob"}}, `{"add":["bob"]}`, nil, set("bob")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := json.Marshal(tt.update)
			if err != nil || string(data) != tt.json {
				t.Fatalf("Marshal = %s, %v; want %s", data, err, tt.json)
			}
			var back IgnoreUpdate
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			before := len(tt.current)
			got := back.Apply(tt.current)
			if !maps.Equal(got, tt.want) {
				t.Fatalf("Apply(%v) = %v, want %v", tt.current, got, tt.want)
			}
			if len(tt.current) != before {
				t.Fatal("Apply modified the current set")
			}
		})
	}
}

// Any message decodes to one form, and the form survives a round trip.
func FuzzIgnoreUpdate(f *testing.F) {
	for _, s := range []string{`{"ignored":[]}`, `{"ignored":null}`, `{"add":["a"],"remove":["b"]}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var u IgnoreUpdate
		if json.Unmarshal(data, &u) != nil {
			return
		}
		out, err := json.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		var back IgnoreUpdate
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if back.IsDiff() != u.IsDiff() || !maps.Equal(back.Apply(nil), u.Apply(nil)) {
			t.Fatalf("%s became %s", data, out)
		}
	})
}

func TestIsDisconnect(t *testing.T) {
	subject, data, err := DisconnectMessage("a.b")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		subject, data string
		ok            bool
	}{
		{subject, string(data), true},
		{subject, ``, false},
		{subject, `{}`, false},
		{subject, `{"stream":"PHX_ROOMS","seq":7}`, false}, // a JetStream acknowledgement aimed here
		{subject, `{"disconnect":"alice"}`, false},         // another user's
		{"phx.user.a_2Eb.kick", string(data), false},
		{"phx.user.a_2Eb.disconnect", `{"disconnect":"a.b"}`, true},
	} {
		user, ok := IsDisconnect(tc.subject, []byte(tc.data))
		if ok != tc.ok || ok && user != "a.b" {
			t.Errorf("IsDisconnect(%s, %s) = %q, %v; want ok=%v", tc.subject, tc.data, user, ok, tc.ok)
		}
	}
}
