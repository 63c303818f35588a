// Package etf encodes and decodes the subset of the Erlang External Term
// Format (ETF) that Phoenix.Token payloads use: numbers, atoms, binaries,
// lists, tuples and maps.
//
// Terms are represented by these Go values:
//
//	integer        int64 when it fits, *big.Int otherwise
//	float          float64
//	binary         string (Elixir strings; the bytes need not be UTF-8)
//	atom           Atom; Elixir's true, false and nil are True, False and Nil
//	list           []any (a STRING_EXT decodes to []any of int64)
//	tuple          Tuple
//	map            Map, pairs in wire order
//
// Decode only ever returns those types. Encode accepts them and, for
// convenience, also Go's other integer types, float32, bool (the atoms true
// and false), untyped nil (the atom nil), []byte (a binary) and
// map[string]any / map[Atom]any.
package etf

// Atom is an Erlang atom, held as UTF-8 text.
type Atom string

// The atoms Elixir uses for its booleans and nil.
const (
	True  Atom = "true"
	False Atom = "false"
	Nil   Atom = "nil"
)

// Tuple is an Erlang tuple.
type Tuple []any

// Pair is one key/value association of a Map.
type Pair struct {
	Key, Value any
}

// Map is an Erlang map. It is a slice rather than a Go map because keys may
// be unhashable terms (lists, maps) and because decoding keeps wire order.
// Key order carries no meaning: Encode writes keys sorted (see Encode) and
// Equal ignores order.
type Map []Pair

// Get returns the value associated with key, compared with Equal.
func (m Map) Get(key any) (any, bool) {
	for _, p := range m {
		if Equal(p.Key, key) {
			return p.Value, true
		}
	}
	return nil, false
}

// MaxDepth is how deeply containers may nest, in both Decode and Encode.
// It bounds recursion on hostile input; token payloads nest a few levels.
const MaxDepth = 64

// MaxUncompressedSize bounds the size a compressed term (tag 80) may
// declare, so that a small input cannot inflate into a huge allocation.
const MaxUncompressedSize = 1 << 20

// Wire tags, named as in erts/doc/guides/erl_ext_dist.md.
const (
	tagVersion       = 131
	tagCompressed    = 80
	tagNewFloat      = 70
	tagBitBinary     = 77
	tagSmallInteger  = 97
	tagInteger       = 98
	tagAtom          = 100
	tagSmallTuple    = 104
	tagLargeTuple    = 105
	tagNil           = 106
	tagString        = 107
	tagList          = 108
	tagBinary        = 109
	tagSmallBig      = 110
	tagLargeBig      = 111
	tagSmallAtom     = 115
	tagMap           = 116
	tagAtomUTF8      = 118
	tagSmallAtomUTF8 = 119
	tagLocal         = 121
)

// maxAtomChars is the longest atom the Erlang VM accepts, in characters.
const maxAtomChars = 255
