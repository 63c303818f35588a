package rooms

import (
	"strings"
	"testing"
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
	r := Rules{MaxBodyLength: 5}
	tests := []struct {
		name, payload, want, err string
	}{
		{"ok", `{"body":"hi"}`, "hi", ""},
		{"extra fields ignored", `{"body":"hi","x":1}`, "hi", ""},
		{"five runes", `{"body":"ééééé"}`, "ééééé", ""},
		{"too long", `{"body":"123456"}`, "", "limit is 5"},
		{"empty", `{"body":""}`, "", "empty"},
		{"blank", `{"body":"  \n"}`, "", "empty"},
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
