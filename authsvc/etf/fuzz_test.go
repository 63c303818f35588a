package etf

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzDecode checks that Decode never panics and that whatever it accepts
// survives an Encode/Decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		"836803612a6e06000068e5cf8b016200015180",
		"8374000000026400077573657269646101",
		"836c00000002610162000001006a",
		"83 6b0003010203",
		"83 7703e29c93",
		"83 73026f6b",
		"83 760003e29c93",
		"83 6900000001 6101",
		"83 6f000000010007",
		"83 463ff8000000000000",
		"83 6c00000001 6101 6b00020203",
	}
	for _, s := range seeds {
		f.Add(mustHex(f, s))
	}
	for _, v := range loadVectors(f) {
		f.Add(mustHex(f, v.PayloadHex))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		term, err := Decode(data)
		if err != nil {
			return
		}
		enc, err := Encode(term)
		if err != nil {
			t.Fatalf("Encode(Decode(%x)) failed: %v", data, err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(%x))) = %v (encoded %x)", data, err, enc)
		}
		if !Equal(term, again) {
			t.Fatalf("round trip changed %#v into %#v", term, again)
		}
		// Encoding is canonical: a second pass must not change the bytes.
		if enc2, _ := Encode(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %s vs %s", hex.EncodeToString(enc), hex.EncodeToString(enc2))
		}
	})
}
