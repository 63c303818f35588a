package svckit

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadPrecedence(t *testing.T) {
	settings := []Setting{
		{"a.str", "def", ""},
		{"a.num", 1, ""},
		{"a.dur", time.Second, ""},
		{"a.list", []string{}, ""},
		{"a.flag", false, ""},
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("a:\n  str: file\n  num: 2\n  dur: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAT_A_NUM", "3")
	t.Setenv("CHAT_A_LIST", "x, y,,z")
	v, err := Load("t", []string{"--config", file, "--a-dur", "4s", "--a-flag"}, settings, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.GetString("a.str"); got != "file" {
		t.Errorf("file over default: %q", got)
	}
	if got := v.GetInt("a.num"); got != 3 {
		t.Errorf("env over file: %d", got)
	}
	if got := v.GetDuration("a.dur"); got != 4*time.Second {
		t.Errorf("flag over file: %v", got)
	}
	if got := List(v, "a.list"); len(got) != 3 || got[0] != "x" || got[2] != "z" {
		t.Errorf("list from env: %q", got)
	}
	if !v.GetBool("a.flag") {
		t.Error("bool flag")
	}
	if err := Positive(v, "a.num"); err != nil {
		t.Error(err)
	}
	t.Setenv("CHAT_A_NUM", "0")
	if err := Positive(v, "a.num"); err == nil {
		t.Error("Positive accepted 0")
	}
	for _, args := range [][]string{{"--nope"}, {"stray"}, {"--config", "/nonexistent.yaml"}} {
		if _, err := Load("t", args, settings, io.Discard); err == nil {
			t.Errorf("Load(%q) succeeded", args)
		}
	}
}
