package longpoll

import (
	"testing"

	"github.com/phxnats/phxnats/gateway/wire"
)

// FuzzLongPollBody feeds arbitrary POST bodies to the long-poll parser: it
// must never panic, never return more than the batch limit, and either
// return frames or a status the client can act on.
func FuzzLongPollBody(f *testing.F) {
	for _, seed := range []string{
		`["1","1","rooms:lobby","phx_join",{}]`,
		"[\"1\",\"2\",\"rooms:lobby\",\"ping\",{\"a\":1}]\n[null,\"3\",\"phoenix\",\"heartbeat\",{}]",
		"AAEBCwQxMnJvb21zOmxvYmJ5cGluZwECAw==",
		"\n\n", "{", "[1]", "!!!",
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		for _, ser := range []wire.Serializer{wire.V1, wire.V2} {
			msgs, status, err := decodeBody(ser, body, ndjson, 1<<10)
			if err != nil {
				if status != 400 && status != 413 {
					t.Fatalf("error %v with status %d", err, status)
				}
				if msgs != nil {
					t.Fatal("frames returned with an error")
				}
				continue
			}
			if len(msgs) == 0 || len(msgs) > maxBatch {
				t.Fatalf("%d frames", len(msgs))
			}
		}
	})
}
