package rooms

import (
	"strings"
	"testing"

	"github.com/phxnats/phxnats/proto"
)

func TestIsPublic(t *testing.T) {
	r := Rules{PublicTopics: []string{"rooms:bench*", "rooms:help"}}
	tests := []struct {
		topic string
		want  bool
	}{
		{"rooms:lobby", true},
		{"rooms:help", true},
		{"rooms:helpdesk", false},
		{"rooms:bench", true},
		{"rooms:bench-17", true},
		{"rooms:secret", false},
		{"rooms:lobby2", false},
	}
	for _, tt := range tests {
		if got := r.IsPublic(tt.topic); got != tt.want {
			t.Errorf("IsPublic(%q) = %v, want %v", tt.topic, got, tt.want)
		}
	}
}

func TestNewMsg(t *testing.T) {
	r := Rules{MaxBodyBytes: 10}
	tests := []struct {
		name, payload, want, err string
	}{
		{"ok", `{"body":"hi"}`, "hi", ""},
		{"extra fields ignored", `{"body":"hi","x":1}`, "hi", ""},
		{"five 2-byte runes", `{"body":"ééééé"}`, "ééééé", ""},
		{"limit in bytes", `{"body":"ééééé!"}`, "", "body is 11 bytes, the limit is 10 bytes"},
		{"too long", `{"body":"12345678901"}`, "", "limit is 10 bytes"},
		{"escapes count as what they decode to", `{"body":"\u00e9\u00e9\u00e9\u00e9\u00e9"}`, "ééééé", ""},
		{"empty, as the guide", `{"body":""}`, "", ""},
		{"blank, as the guide", `{"body":"  \n"}`, "  \n", ""},
		{"number", `{"body":1}`, "", "must be a string"},
		{"null", `{"body":null}`, "", "must be a string"},
		{"missing", `{"nobody":1}`, "", "needs a payload"},
		{"not object", `"hi"`, "", "needs a payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.NewMsg([]byte(tt.payload))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NewMsg = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDefaultBodyLimit(t *testing.T) {
	var r Rules
	body := strings.Repeat("€", DefaultMaxBodyBytes/3) // 3 bytes each
	if _, err := r.NewMsg([]byte(`{"body":"` + body + `"}`)); err != nil {
		t.Fatalf("a %d-byte body: %v", len(body), err)
	}
	if _, err := r.NewMsg([]byte(`{"body":"` + body + `xx"}`)); err == nil || !strings.Contains(err.Error(), "the limit is 65536 bytes") {
		t.Fatalf("a body over 64 KiB: %v", err)
	}
	if err := r.NewMsgBinary(make([]byte, DefaultMaxBodyBytes+1)); err == nil {
		t.Fatal("a binary body over the limit was accepted")
	}
	if err := r.NewMsgBinary(nil); err != nil {
		t.Fatalf("an empty binary body: %v", err)
	}
}

func TestCheckFits(t *testing.T) {
	tests := []struct {
		limit   int
		payload int64
		ok      bool
	}{
		{0, 1 << 20, true}, // the default fits NATS's default max_payload
		{DefaultMaxBodyBytes, 1 << 20, true},
		{170 << 10, 1 << 20, true},
		{175 << 10, 1 << 20, false},
		{DefaultMaxBodyBytes, 256 << 10, false},
		{1, 1 << 10, false},
	}
	for _, tt := range tests {
		r := Rules{MaxBodyBytes: tt.limit}
		err := r.CheckFits(tt.payload)
		if (err == nil) != tt.ok {
			t.Errorf("CheckFits(body %d, payload %d) = %v, want ok=%v", tt.limit, tt.payload, err, tt.ok)
		}
		if err == nil && int64(r.MaxEscapedBody()) > tt.payload {
			t.Errorf("body %d accepted though its broadcast may take %d > %d", tt.limit, r.MaxEscapedBody(), tt.payload)
		}
	}
}

// FuzzNewMsg: an accepted body's broadcast, written by proto.Marshal,
// never exceeds MaxEscapedBody, the bound CheckFits compares with NATS's
// max_payload.
func FuzzNewMsg(f *testing.F) {
	for _, s := range []string{`{"body":"hi"}`, `{"body":"\u0001\u0002"}`, `{"body":"\u2028<>&"}`, `{"body":1}`, `[`} {
		f.Add([]byte(s))
	}
	r := Rules{MaxBodyBytes: 64}
	f.Fuzz(func(t *testing.T, payload []byte) {
		body, err := r.NewMsg(payload)
		if err != nil {
			return
		}
		b, _ := proto.Marshal(proto.Broadcast{Event: "new_msg", Payload: mustMarshal(t, newMsg{Body: body}), From: strings.Repeat("u", 255)})
		if len(b) > r.MaxEscapedBody() {
			t.Fatalf("a %d-byte body took %d bytes in its broadcast, over %d", len(body), len(b), r.MaxEscapedBody())
		}
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := proto.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
