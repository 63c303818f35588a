package etf

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func bigPow2(n uint) *big.Int { return new(big.Int).Lsh(big.NewInt(1), n) }

func TestEncode(t *testing.T) {
	manyBytes := make([]any, 70000)
	for i := range manyBytes {
		manyBytes[i] = int64(1)
	}
	tests := []struct {
		name string
		in   any
		want string // hex, without the version byte
	}{
		{"small int", 42, "612a"},
		{"zero", int64(0), "6100"},
		{"255", uint8(255), "61ff"},
		{"256", 256, "6200000100"},
		{"negative", -7, "62fffffff9"},
		{"min int32", int64(math.MinInt32), "6280000000"},
		{"max int32 + 1", int64(math.MaxInt32) + 1, "6e040000000080"},
		{"ms timestamp", int64(1700000000000), "6e06000068e5cf8b01"},
		{"min int64", int64(math.MinInt64), "6e08010000000000000080"},
		{"uint64 beyond int64", uint64(math.MaxUint64), "6e0800ffffffffffffffff"},
		{"big 2^64", bigPow2(64), "6e0900000000000000000001"},
		{"big that fits is small", big.NewInt(5), "6105"},
		{"float", 1.5, "463ff8000000000000"},
		{"binary", "hi", "6d000000026869"},
		{"empty binary", "", "6d00000000"},
		{"bytes are a binary", []byte{1, 2}, "6d000000020102"},
		{"atom ok (OTP 25 ATOM_EXT)", Atom("ok"), "6400026f6b"},
		{"latin-1 atom", Atom("é"), "640001e9"},
		{"utf-8 atom", Atom("✓"), "7703e29c93"},
		{"nil", nil, "6400036e696c"},
		{"true", true, "64000474727565"},
		{"false atom", False, "64000566616c7365"},
		{"empty list", []any{}, "6a"},
		{"byte list is STRING_EXT", []any{1, 2, 3}, "6b0003010203"},
		{"list with big element", []any{1, 256}, "6c00000002610162000001006a"},
		{"list of binaries", []any{"a"}, "6c000000016d00000001616a"},
		{"empty tuple", Tuple{}, "6800"},
		{"tuple", Tuple{Atom("ok"), 1}, "68026400026f6b6101"},
		{"empty map", Map{}, "7400000000"},
		// [verified-local] in PROTOCOL.md: atoms sort before binaries.
		{"map in term order", Map{{"body", "hi"}, {Atom("user_id"), 1}},
			"7400000002 640007757365725f6964 6101 6d00000004626f6479 6d000000026869"},
		{"go map sorted", map[string]any{"b": 1, "a": 2}, "7400000002 6d0000000161 6102 6d0000000162 6101"},
		{"integer keys before float keys", Map{{1.0, "f"}, {2, "i"}},
			"7400000002 6102 6d0000000169 463ff0000000000000 6d0000000166"},
		{"shorter tuple key first", Map{{Tuple{1, 1}, 0}, {Tuple{2}, 0}},
			"7400000002 68016102 6100 680261016101 6100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Encode(tt.in)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			want := append([]byte{131}, mustHex(t, tt.want)...)
			if !bytes.Equal(got, want) {
				t.Errorf("Encode = %x, want %x", got, want)
			}
		})
	}

	t.Run("long byte list is LIST_EXT", func(t *testing.T) {
		got, err := Encode(manyBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got[1] != tagList {
			t.Errorf("tag = %d, want %d", got[1], tagList)
		}
	})
	t.Run("large tuple", func(t *testing.T) {
		got, err := Encode(make(Tuple, 256))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(got, mustHex(t, "83 69 00000100 6400036e696c")) {
			t.Errorf("prefix = %x", got[:12])
		}
	})
	t.Run("LARGE_BIG_EXT", func(t *testing.T) {
		got, err := Encode(bigPow2(8 * 256))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(got, mustHex(t, "83 6f 00000101 00")) || len(got) != 1+1+4+1+257 {
			t.Errorf("got %x... (%d bytes)", got[:8], len(got))
		}
	})
}

func TestEncodeErrors(t *testing.T) {
	deep := []any{}
	for range MaxDepth + 1 {
		deep = []any{deep}
	}
	tests := []struct {
		name string
		in   any
	}{
		{"NaN", math.NaN()},
		{"infinity", math.Inf(1)},
		{"duplicate map key", Map{{"a", 1}, {"a", 2}}},
		{"duplicate nested key", Map{{Tuple{1}, 1}, {Tuple{int64(1)}, 2}}},
		{"atom too long", Atom(strings.Repeat("a", 256))},
		{"atom not utf-8", Atom("\xff")},
		{"struct", struct{}{}},
		{"nil big", (*big.Int)(nil)},
		{"unsupported inside list", []any{1, make(chan int)}},
		{"too deep", deep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Encode(tt.in); err == nil {
				t.Errorf("Encode succeeded with %x, want error", b)
			}
		})
	}
}

func compress(t testing.TB, term []byte, declared int) []byte {
	t.Helper()
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(term[1:])
	w.Close()
	out := binary.BigEndian.AppendUint32([]byte{131, 80}, uint32(declared))
	return append(out, z.Bytes()...)
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string // hex, without the version byte
		want any
	}{
		{"small int", "612a", int64(42)},
		{"integer", "62fffffff9", int64(-7)},
		{"small big", "6e06000068e5cf8b01", int64(1700000000000)},
		{"small big negative", "6e0201ff01", int64(-511)},
		{"unnormalized big", "6e0400050000 00", int64(5)},
		{"zero-digit big", "6e0000", int64(0)},
		{"big 2^64", "6e0900000000000000000001", bigPow2(64)},
		{"large big", "6f000000010007", int64(7)},
		{"float", "463ff8000000000000", 1.5},
		{"binary", "6d000000026869", "hi"},
		{"ATOM_EXT", "6400026f6b", Atom("ok")},
		{"latin-1 ATOM_EXT", "640001e9", Atom("é")},
		{"SMALL_ATOM_EXT", "73026f6b", Atom("ok")},
		{"ATOM_UTF8_EXT", "760003e29c93", Atom("✓")},
		{"SMALL_ATOM_UTF8_EXT", "7704747275 65", True},
		{"nil", "6a", []any{}},
		{"string ext", "6b0003010203", []any{int64(1), int64(2), int64(3)}},
		{"list", "6c000000026101 6d00000001616a", []any{int64(1), "a"}},
		{"list with list tail", "6c00000001 6101 6b00020203", []any{int64(1), int64(2), int64(3)}},
		{"tuple", "68026400026f6b6101", Tuple{Atom("ok"), int64(1)}},
		{"large tuple", "6900000001 6101", Tuple{int64(1)}},
		{"map any order", "7400000002 6d00000001626101 6d00000001616102", Map{{"a", int64(2)}, {"b", int64(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(append([]byte{131}, mustHex(t, tt.in)...))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !Equal(got, tt.want) {
				t.Errorf("Decode = %#v, want %#v", got, tt.want)
			}
		})
	}

	t.Run("keeps wire order of map keys", func(t *testing.T) {
		got, err := Decode(mustHex(t, "83 7400000002 6d00000001626101 6d00000001616102"))
		if err != nil {
			t.Fatal(err)
		}
		if m := got.(Map); m[0].Key != "b" || m[1].Key != "a" {
			t.Errorf("order = %v", m)
		}
	})
	t.Run("string ext gives int64 elements", func(t *testing.T) {
		got, _ := Decode(mustHex(t, "83 6b000101"))
		if _, ok := got.([]any)[0].(int64); !ok {
			t.Errorf("element type %T", got.([]any)[0])
		}
	})
	t.Run("compressed", func(t *testing.T) {
		plain, _ := Encode(Tuple{strings.Repeat("x", 1000), 1})
		got, err := Decode(compress(t, plain, len(plain)-1))
		if err != nil {
			t.Fatal(err)
		}
		if !Equal(got, Tuple{strings.Repeat("x", 1000), 1}) {
			t.Errorf("got %v", got)
		}
	})
}

func TestDecodeErrors(t *testing.T) {
	plain, _ := Encode("hello hello hello")
	deep := bytes.Repeat([]byte{104, 1}, MaxDepth+1)
	tests := []struct {
		name   string
		in     []byte
		reason string
	}{
		{"empty", nil, "version"},
		{"wrong version", []byte{130, 97, 1}, "version"},
		{"no term", []byte{131}, "end of input"},
		{"LOCAL_EXT", []byte{131, 121, 0}, "LOCAL_EXT"},
		{"bit binary", mustHex(t, "83 4d00000001 07 ff"), "bit strings"},
		{"fun", mustHex(t, "83 70 00"), "unsupported term tag 112"},
		{"pid", mustHex(t, "83 58 00"), "unsupported term tag 88"},
		{"reference", mustHex(t, "83 5a 00"), "unsupported term tag 90"},
		{"old float", mustHex(t, "83 63 00"), "unsupported term tag 99"},
		{"huge binary length", mustHex(t, "83 6d ffffffff 00"), "exceeds remaining"},
		{"huge list length", mustHex(t, "83 6c ffffffff 6a"), "exceeds remaining"},
		{"huge map length", mustHex(t, "83 74 00000004 6101 6102 6103"), "exceeds remaining"},
		{"huge big", mustHex(t, "83 6f ffffffff 00 01"), "exceeds remaining"},
		{"truncated integer", mustHex(t, "83 62 0000"), "end of input"},
		{"truncated big", mustHex(t, "83 6e 02 00 01"), "end of input"},
		{"improper list", mustHex(t, "83 6c00000001 6101 6102"), "improper list"},
		{"trailing bytes", mustHex(t, "83 6101 00"), "trailing"},
		{"too deep", append(append([]byte{131}, deep...), 106), "nest deeper"},
		{"NaN", mustHex(t, "83 46 7ff8000000000000"), "non-finite"},
		{"infinity", mustHex(t, "83 46 7ff0000000000000"), "non-finite"},
		{"invalid utf-8 atom", mustHex(t, "83 77 01 ff"), "UTF-8"},
		{"atom too long", append(mustHex(t, "83 64 0100"), bytes.Repeat([]byte("a"), 256)...), "longer than 255"},
		{"duplicate map key", mustHex(t, "83 7400000002 6101 6a 6200000001 6a"), "duplicate"},
		{"duplicate nested map key", mustHex(t, "83 7400000002 7400000000 6101 7400000000 6102"), "duplicate"},
		{"nested compressed", mustHex(t, "83 6c00000001 50 00"), "nested"},
		{"compressed bomb", compress(t, plain, MaxUncompressedSize+1), "limit"},
		{"compressed size lie (short)", compress(t, plain, len(plain)), "header says"},
		{"compressed size lie (long)", compress(t, plain, len(plain)-2), "header says"},
		{"compressed trailing", append(compress(t, plain, len(plain)-1), 0), "trailing"},
		{"compressed garbage", mustHex(t, "83 50 00000010 0102030405"), "zlib"},
		{"compressed truncated", mustHex(t, "83 50 0000"), "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode = %#v, %v; want a *DecodeError", got, err)
			}
			if !strings.Contains(de.Reason, tt.reason) {
				t.Errorf("reason %q does not mention %q", de.Reason, tt.reason)
			}
		})
	}
}

func TestEqual(t *testing.T) {
	tests := []struct {
		a, b any
		want bool
	}{
		{1, int64(1), true},
		{1, 1.0, false},
		{big.NewInt(1), uint8(1), true},
		{Map{{"a", 1}, {"b", 2}}, Map{{"b", 2}, {"a", 1}}, true},
		{Map{{"a", 1}}, Map{{"a", 2}}, false},
		{Tuple{1}, []any{1}, false},
		{"a", Atom("a"), false},
		{nil, Nil, true},
		{math.NaN(), math.NaN(), false},
	}
	for _, tt := range tests {
		if got := Equal(tt.a, tt.b); got != tt.want {
			t.Errorf("Equal(%#v, %#v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestMapGet(t *testing.T) {
	m := Map{{Atom("data"), 1}, {Atom("signed"), 2}}
	if v, ok := m.Get(Atom("signed")); !ok || v != 2 {
		t.Errorf("Get(signed) = %v, %v", v, ok)
	}
	if _, ok := m.Get("data"); ok {
		t.Error("binary key found an atom key")
	}
}

// vectorsPath holds tokens signed by the real Phoenix.Token (see testdata/README.md).
var vectorsPath = filepath.Join("testdata", "phoenix_token.json")

type vector struct {
	Name           string `json:"name"`
	Data           any    `json:"data"`
	SignedAtMs     int64  `json:"signed_at_ms"`
	EmbeddedMaxAge int64  `json:"embedded_max_age"`
	PayloadHex     string `json:"payload_etf_hex"`
}

// readVectors parses the Phoenix vectors file.
func readVectors() ([]vector, error) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		return nil, err
	}
	var file struct {
		Vectors []vector `json:"vectors"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&file); err != nil {
		return nil, err
	}
	if len(file.Vectors) == 0 {
		return nil, errors.New("no vectors in file")
	}
	return file.Vectors, nil
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	vs, err := readVectors()
	if err != nil {
		t.Fatalf("Phoenix vectors: %v (they belong in the repository, see testdata/README.md)", err)
	}
	return vs
}

// fromJSON maps decoded JSON to the terms Phoenix signed: integers,
// binaries, lists and maps with binary keys.
func fromJSON(t testing.TB, v any) any {
	switch x := v.(type) {
	case json.Number:
		n, ok := new(big.Int).SetString(string(x), 10)
		if !ok {
			t.Fatalf("non-integer number %s in vector", x)
		}
		return n
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromJSON(t, e)
		}
		return out
	case map[string]any:
		m := Map{}
		for k, e := range x {
			m = append(m, Pair{k, fromJSON(t, e)})
		}
		return m
	}
	return v
}

func TestPhoenixPayloads(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			want := mustHex(t, v.PayloadHex)
			got, err := Encode(Tuple{fromJSON(t, v.Data), v.SignedAtMs, v.EmbeddedMaxAge})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Encode = %x\n          want %x", got, want)
			}
			term, err := Decode(want)
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := Encode(term); !bytes.Equal(again, want) {
				t.Errorf("re-encoded decode = %x", again)
			}
		})
	}
}
