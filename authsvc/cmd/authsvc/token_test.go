package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// vectorsPath holds tokens signed by the real Phoenix.Token (see testdata/README.md).
var vectorsPath = filepath.Join("testdata", "phoenix_token.json")

type tokenVectors struct {
	SecretKeyBase string `json:"secret_key_base"`
	Salt          string `json:"salt"`
	Vectors       []struct {
		Name       string          `json:"name"`
		Data       json.RawMessage `json:"data"`
		SignedAt   json.Number     `json:"signed_at"`
		SignMaxAge *json.Number    `json:"sign_max_age"`
		Token      string          `json:"token"`
		Checks     []struct {
			NowMs        int64        `json:"now_ms"`
			VerifyMaxAge *json.Number `json:"verify_max_age"`
			Expect       struct {
				OK    json.RawMessage `json:"ok"`
				Error string          `json:"error"`
			} `json:"expect"`
		} `json:"checks"`
	} `json:"vectors"`
	InvalidTokens []struct {
		Name  string `json:"name"`
		Token string `json:"token"`
	} `json:"invalid_tokens"`
}

func loadTokenVectors(t *testing.T) *tokenVectors {
	t.Helper()
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("Phoenix vectors: %v (they belong in the repository, see testdata/README.md)", err)
	}
	var tv tokenVectors
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&tv); err != nil {
		t.Fatal(err)
	}
	if len(tv.Vectors) == 0 || len(tv.InvalidTokens) == 0 {
		t.Fatal("vectors file has no vectors or no invalid tokens")
	}
	return &tv
}

type result struct {
	code           int
	stdout, stderr string
}

func run(args ...string) result {
	var out, errOut bytes.Buffer
	code := runToken(args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// sameJSON compares JSON documents by meaning, numbers by their text.
func sameJSON(t *testing.T, got, want string) bool {
	t.Helper()
	decode := func(s string) any {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("bad JSON %q: %v", s, err)
		}
		return v
	}
	return reflect.DeepEqual(decode(got), decode(want))
}

func nowArg(ms int64) string { return fmt.Sprintf("%d.%03d", ms/1000, ms%1000) }

func TestTokenVectors(t *testing.T) {
	tv := loadTokenVectors(t)
	keys := []string{"--secret-key-base", tv.SecretKeyBase, "--salt", tv.Salt}
	for _, v := range tv.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			args := append([]string{"sign"}, keys...)
			args = append(args, "--signed-at", v.SignedAt.String())
			if v.SignMaxAge != nil {
				args = append(args, "--max-age", v.SignMaxAge.String())
			}
			args = append(args, "--", string(v.Data))
			if r := run(args...); r.code != 0 || r.stdout != v.Token+"\n" || r.stderr != "" {
				t.Errorf("sign = %+v, want token %s", r, v.Token)
			}

			for _, c := range v.Checks {
				args := append([]string{"verify"}, keys...)
				args = append(args, "--now", nowArg(c.NowMs))
				if c.VerifyMaxAge != nil {
					args = append(args, "--max-age", c.VerifyMaxAge.String())
				}
				r := run(append(args, v.Token)...)
				if c.Expect.Error != "" {
					if r.code != 1 || r.stderr != c.Expect.Error+"\n" || r.stdout != "" {
						t.Errorf("verify %v = %+v, want %s", args[5:], r, c.Expect.Error)
					}
					continue
				}
				if r.code != 0 || r.stderr != "" || !sameJSON(t, r.stdout, string(c.Expect.OK)) {
					t.Errorf("verify %v = %+v, want %s", args[5:], r, c.Expect.OK)
				}
			}
		})
	}
	for _, it := range tv.InvalidTokens {
		t.Run("invalid/"+it.Name, func(t *testing.T) {
			r := run(append(append([]string{"verify"}, keys...), "--max-age", "infinity", it.Token)...)
			if r.code != 1 || r.stderr != "invalid\n" || r.stdout != "" {
				t.Errorf("verify = %+v, want invalid", r)
			}
		})
	}
}

func TestTokenRoundTrip(t *testing.T) {
	keys := []string{"--secret-key-base", "test-secret", "--salt", "user socket"}
	tests := []struct {
		name, data, want string
	}{
		{"string id", `"user-1"`, `"user-1"`},
		{"integer id", `42`, `42`},
		{"negative", `-7`, `-7`},
		{"big integer", `123456789012345678901234567890`, `123456789012345678901234567890`},
		{"float", `1.5`, `1.5`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
		{"byte list", `[1,2,3]`, `[1,2,3]`},
		{"map sorted in term order", `{"roles":["admin"],"id":7}`, `{"id":7,"roles":["admin"]}`},
		{"unicode and html", `"<ünï> ✓"`, `"<ünï> ✓"`},
		{"empty containers", `{"a":[],"b":{}}`, `{"a":[],"b":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signed := run(append(append([]string{"sign"}, keys...), "--signed-at", "1700000000", "--", tt.data)...)
			if signed.code != 0 {
				t.Fatalf("sign = %+v", signed)
			}
			token := strings.TrimSuffix(signed.stdout, "\n")
			r := run(append(append([]string{"verify"}, keys...), "--now", "1700000001", token)...)
			if r.code != 0 || r.stdout != tt.want+"\n" || r.stderr != "" {
				t.Errorf("verify = %+v, want stdout %s", r, tt.want)
			}
		})
	}
}

func TestTokenVerifyOutcomes(t *testing.T) {
	keys := []string{"--secret-key-base", "test-secret", "--salt", "s"}
	signed := run(append(append([]string{"sign"}, keys...), "--signed-at", "1000", "--max-age", "60", `"u"`)...)
	if signed.code != 0 {
		t.Fatalf("sign = %+v", signed)
	}
	token := strings.TrimSuffix(signed.stdout, "\n")
	verify := func(extra ...string) []string {
		return append(append([]string{"verify"}, keys...), extra...)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"valid", verify("--now", "1060", token), 0, "\"u\"\n", ""},
		{"flags after token", append([]string{"verify", token}, append(keys, "--now", "1001")...), 0, "\"u\"\n", ""},
		{"expired", verify("--now", "1060.001", token), 1, "", "expired\n"},
		{"max age override", verify("--now", "1100", "--max-age", "100", token), 0, "\"u\"\n", ""},
		{"max age zero expires", verify("--now", "1000", "--max-age", "0", token), 1, "", "expired\n"},
		{"max age infinity", verify("--now", "9999999", "--max-age", "infinity", token), 0, "\"u\"\n", ""},
		{"signed in the future", verify("--now", "999", token), 1, "", "invalid\n"},
		{"wrong salt", []string{"verify", "--secret-key-base", "test-secret", "--salt", "t", "--now", "1001", token}, 1, "", "invalid\n"},
		{"garbage", verify("--now", "1001", "bogus"), 1, "", "invalid\n"},
		{"missing", verify("--now", "1001", ""), 1, "", "missing\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(tt.args...)
			if r.code != tt.code || r.stdout != tt.stdout || r.stderr != tt.stderr {
				t.Errorf("runToken(%q) = %+v, want code %d stdout %q stderr %q", tt.args, r, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestTokenUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no subcommand", nil},
		{"unknown subcommand", []string{"decode"}},
		{"no secret", []string{"sign", "--salt", "s", "1"}},
		{"no salt", []string{"sign", "--secret-key-base", "k", "1"}},
		{"no data", []string{"sign", "--secret-key-base", "k", "--salt", "s"}},
		{"two arguments", []string{"sign", "--secret-key-base", "k", "--salt", "s", "1", "2"}},
		{"bad json", []string{"sign", "--secret-key-base", "k", "--salt", "s", "{"}},
		{"trailing json", []string{"sign", "--secret-key-base", "k", "--salt", "s", "1 2"}},
		{"duplicate key", []string{"sign", "--secret-key-base", "k", "--salt", "s", `{"a":1,"a":2}`}},
		{"unknown flag", []string{"sign", "--secret-key-base", "k", "--salt", "s", "--ttl", "1", "1"}},
		{"bad signed-at", []string{"sign", "--secret-key-base", "k", "--salt", "s", "--signed-at", "yesterday", "1"}},
		{"zero max-age on sign", []string{"sign", "--secret-key-base", "k", "--salt", "s", "--max-age", "0", "1"}},
		{"negative number without --", []string{"sign", "--secret-key-base", "k", "--salt", "s", "-7"}},
		{"bad now", []string{"verify", "--secret-key-base", "k", "--salt", "s", "--now", "1/2", "t"}},
		{"bad verify max-age", []string{"verify", "--secret-key-base", "k", "--salt", "s", "--max-age", "forever", "t"}},
		{"no token", []string{"verify", "--secret-key-base", "k", "--salt", "s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(tt.args...)
			if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "usage:") {
				t.Errorf("runToken(%q) = %+v, want exit 2 with usage", tt.args, r)
			}
		})
	}

	t.Run("help", func(t *testing.T) {
		for _, args := range [][]string{{"help"}, {"sign", "-h"}, {"verify", "--help"}} {
			if r := run(args...); r.code != 0 || !strings.Contains(r.stdout, "usage:") {
				t.Errorf("runToken(%q) = %+v, want usage on stdout", args, r)
			}
		}
	})
}
