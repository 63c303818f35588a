package proto

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeTopic(t *testing.T) {
	tests := []struct {
		topic, want string
	}{
		{"rooms:lobby", "rooms:lobby"},
		{"rooms:a.b", "rooms:a_2Eb"},
		{"rooms:*", "rooms:_2A"},
		{"rooms:>", "rooms:_3E"},
		{"rooms:a b", "rooms:a_20b"},
		{"rooms:under_score", "rooms:under_5Fscore"},
		{"rooms:é", "rooms:_C3_A9"},
		{"rooms:\x00", "rooms:_00"},
		{"_", "_5F"},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			got, err := EncodeTopic(tt.topic)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("EncodeTopic(%q) = %q, want %q", tt.topic, got, tt.want)
			}
			back, err := DecodeTopic(got)
			if err != nil || back != tt.topic {
				t.Fatalf("DecodeTopic(%q) = %q, %v", got, back, err)
			}
		})
	}
}

func TestEncodeTopicRefuses(t *testing.T) {
	for _, topic := range []string{"", strings.Repeat("a", MaxTopicLength+1)} {
		if _, err := EncodeTopic(topic); !errors.Is(err, ErrBadTopic) {
			t.Errorf("EncodeTopic(%d bytes) err = %v, want ErrBadTopic", len(topic), err)
		}
	}
}

func TestDecodeTopicRefusesNonCanonical(t *testing.T) {
	for _, tok := range []string{
		"", "a.b", "a*", ">", "a b", "_", "_2", "_2e", "_zz", "_41", // _41 is 'A', which must stand for itself
		"rooms:_3a", "é",
	} {
		if got, err := DecodeTopic(tok); err == nil {
			t.Errorf("DecodeTopic(%q) = %q, want an error", tok, got)
		}
	}
}

func TestKey(t *testing.T) {
	for _, s := range []string{"", "alice", "rooms:ops", "a.b", "_", "é"} {
		k := EncodeKey(s)
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(keySafe(c) || c == '_') {
				t.Fatalf("EncodeKey(%q) = %q holds %q, not allowed in a KV key", s, k, c)
			}
		}
		back, err := DecodeKey(k)
		if err != nil || back != s {
			t.Fatalf("DecodeKey(%q) = %q, %v; want %q", k, back, err, s)
		}
	}
}

// FuzzTopic checks the three promises of the mapping: the token is a single
// literal subject level, it decodes back to the topic, and a decoded token
// re-encodes to itself (so no two tokens name one topic).
func FuzzTopic(f *testing.F) {
	for _, s := range []string{"rooms:lobby", "rooms:a.b", "rooms:*", "rooms:>", "a b\t", "_5F", "é", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		tok, err := EncodeTopic(topic)
		if err != nil {
			if topic != "" && len(topic) <= MaxTopicLength {
				t.Fatalf("EncodeTopic(%q): %v", topic, err)
			}
			return
		}
		if strings.ContainsAny(tok, ".*> \t\r\n") || !utf8.ValidString(tok) {
			t.Fatalf("EncodeTopic(%q) = %q is not a literal subject token", topic, tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] > 0x7e || tok[i] < 0x21 {
				t.Fatalf("EncodeTopic(%q) = %q holds byte %#x", topic, tok, tok[i])
			}
		}
		back, err := DecodeTopic(tok)
		if err != nil || back != topic {
			t.Fatalf("DecodeTopic(EncodeTopic(%q)) = %q, %v", topic, back, err)
		}
		// Any string taken as a token either fails or is canonical.
		if dec, err := DecodeTopic(topic); err == nil {
			if re, _ := EncodeTopic(dec); re != topic {
				t.Fatalf("token %q decodes to %q which encodes to %q", topic, dec, re)
			}
		}
		k := EncodeKey(topic)
		if kb, err := DecodeKey(k); err != nil || kb != topic {
			t.Fatalf("DecodeKey(EncodeKey(%q)) = %q, %v", topic, kb, err)
		}
	})
}
