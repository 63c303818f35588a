package proto

import (
	"errors"
	"strings"
	"testing"
)

func TestValidUserID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"plain", "alice", true},
		{"dots and wildcards", "o.dd*user >", true},
		{"integer id", "42", true},
		{"non-ASCII", "zoë 🦊", true},
		{"longest", strings.Repeat("a", MaxUserIDLength), true},
		{"longest in runes", strings.Repeat("é", MaxUserIDLength/2), true},
		{"empty", "", false},
		{"one byte too long", strings.Repeat("a", MaxUserIDLength+1), false},
		{"newline", "ali\nce", false},
		{"NUL", "a\x00", false},
		{"DEL", "a\x7f", false},
		{"C1", "a\u0085", false},
		{"invalid UTF-8", "a\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidUserID(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidUserID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadUserID) {
				t.Fatalf("error %v is not ErrBadUserID", err)
			}
		})
	}
}

// Every valid id can be addressed: its per-user subjects exist and give
// the id back, so it can always be kicked and disconnected.
func FuzzValidUserID(f *testing.F) {
	for _, s := range []string{"alice", "", "a.b*>", "\x00", strings.Repeat("x", 256), "é\u0085"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidUserID(id) != nil {
			return
		}
		for _, mk := range []func(string) (string, error){DisconnectSubject, KickSubject, IgnoresSubject} {
			subject, err := mk(id)
			if err != nil {
				t.Fatalf("valid id %q has no subject: %v", id, err)
			}
			back, err := UserFromSubject(subject)
			if err != nil || back != id {
				t.Fatalf("UserFromSubject(%q) = %q, %v; want %q", subject, back, err, id)
			}
		}
	})
}
