package etf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"unicode/utf8"
)

var errTooDeep = fmt.Errorf("etf: terms nest deeper than %d", MaxDepth)

// Encode returns the external term format of v, starting with the version
// byte 131. The bytes are what OTP 25's term_to_binary/1 produces for the
// same term, so signatures computed over them match Phoenix's:
//
//   - integers use the smallest of SMALL_INTEGER_EXT, INTEGER_EXT and
//     SMALL_BIG_EXT/LARGE_BIG_EXT;
//   - atoms that fit Latin-1 use ATOM_EXT, the others SMALL_ATOM_UTF8_EXT
//     (OTP 26 and later write UTF-8 atom tags for all atoms);
//   - lists of 1..65535 integers in 0..255 use STRING_EXT;
//   - map keys are written sorted in Erlang map-key order, as OTP stores maps
//     of up to 32 keys. Larger OTP maps are hash-ordered, which is not
//     reproduced, so only their bytes (not their meaning) may differ.
//
// Duplicate map keys, non-finite floats, atoms over 255 characters and
// values of other Go types are errors.
func Encode(v any) ([]byte, error) {
	t, err := normalize(v, 0)
	if err != nil {
		return nil, err
	}
	return appendTerm([]byte{tagVersion}, t), nil
}

// normalize converts v to the canonical types Decode returns and sorts map
// keys, validating along the way, so that appendTerm and compare only
// deal with canonical terms.
func normalize(v any, depth int) (any, error) {
	if depth > MaxDepth {
		return nil, errTooDeep
	}
	switch x := v.(type) {
	case nil:
		return Nil, nil
	case bool:
		if x {
			return True, nil
		}
		return False, nil
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case uint:
		return normalizeUint(uint64(x)), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		return normalizeUint(x), nil
	case *big.Int:
		if x == nil {
			return nil, errors.New("etf: cannot encode nil *big.Int")
		}
		if x.IsInt64() {
			return x.Int64(), nil
		}
		return x, nil
	case float32:
		return normalizeFloat(float64(x))
	case float64:
		return normalizeFloat(x)
	case string:
		if uint64(len(x)) > math.MaxUint32 {
			return nil, errors.New("etf: binary longer than 4 GiB")
		}
		return x, nil
	case []byte:
		return normalize(string(x), depth)
	case Atom:
		if err := checkAtom(x); err != nil {
			return nil, err
		}
		return x, nil
	case []any:
		return normalizeSlice(x, depth)
	case Tuple:
		s, err := normalizeSlice(x, depth)
		return Tuple(s), err
	case Map:
		return normalizeMap(x, depth)
	case map[string]any:
		m := make(Map, 0, len(x))
		for k, v := range x {
			m = append(m, Pair{k, v})
		}
		return normalizeMap(m, depth)
	case map[Atom]any:
		m := make(Map, 0, len(x))
		for k, v := range x {
			m = append(m, Pair{k, v})
		}
		return normalizeMap(m, depth)
	default:
		return nil, fmt.Errorf("etf: cannot encode Go type %T", v)
	}
}

func normalizeUint(x uint64) any {
	if x <= math.MaxInt64 {
		return int64(x)
	}
	return new(big.Int).SetUint64(x)
}

// normalizeFloat rejects NaN and infinities, which Erlang floats cannot hold.
func normalizeFloat(f float64) (any, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("etf: cannot encode non-finite float %v", f)
	}
	return f, nil
}

func checkAtom(a Atom) error {
	if !utf8.ValidString(string(a)) {
		return errors.New("etf: atom is not valid UTF-8")
	}
	if utf8.RuneCountInString(string(a)) > maxAtomChars {
		return fmt.Errorf("etf: atom longer than %d characters", maxAtomChars)
	}
	return nil
}

func normalizeSlice(s []any, depth int) ([]any, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return nil, errors.New("etf: list or tuple longer than 2^32-1")
	}
	out := make([]any, len(s))
	for i, e := range s {
		n, err := normalize(e, depth+1)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

func normalizeMap(m Map, depth int) (Map, error) {
	if uint64(len(m)) > math.MaxUint32 {
		return nil, errors.New("etf: map larger than 2^32-1")
	}
	out := make(Map, len(m))
	for i, p := range m {
		k, err := normalize(p.Key, depth+1)
		if err != nil {
			return nil, err
		}
		v, err := normalize(p.Value, depth+1)
		if err != nil {
			return nil, err
		}
		out[i] = Pair{k, v}
	}
	slices.SortStableFunc(out, func(a, b Pair) int { return compare(a.Key, b.Key) })
	for i := 1; i < len(out); i++ {
		if compare(out[i-1].Key, out[i].Key) == 0 {
			return nil, errors.New("etf: duplicate map key")
		}
	}
	return out, nil
}

// appendTerm appends the encoding of a normalized term.
func appendTerm(b []byte, t any) []byte {
	switch x := t.(type) {
	case int64:
		switch {
		case x >= 0 && x <= math.MaxUint8:
			return append(b, tagSmallInteger, byte(x))
		case x >= math.MinInt32 && x <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(append(b, tagInteger), uint32(int32(x)))
		default:
			return appendBig(b, big.NewInt(x))
		}
	case *big.Int:
		return appendBig(b, x)
	case float64:
		return binary.BigEndian.AppendUint64(append(b, tagNewFloat), math.Float64bits(x))
	case string:
		b = binary.BigEndian.AppendUint32(append(b, tagBinary), uint32(len(x)))
		return append(b, x...)
	case Atom:
		return appendAtom(b, x)
	case []any:
		return appendList(b, x)
	case Tuple:
		if len(x) <= math.MaxUint8 {
			b = append(b, tagSmallTuple, byte(len(x)))
		} else {
			b = binary.BigEndian.AppendUint32(append(b, tagLargeTuple), uint32(len(x)))
		}
		for _, e := range x {
			b = appendTerm(b, e)
		}
		return b
	case Map:
		b = binary.BigEndian.AppendUint32(append(b, tagMap), uint32(len(x)))
		for _, p := range x {
			b = appendTerm(appendTerm(b, p.Key), p.Value)
		}
		return b
	}
	panic(fmt.Sprintf("etf: appendTerm called with unnormalized %T", t))
}

func appendBig(b []byte, x *big.Int) []byte {
	mag := x.Bytes() // big-endian magnitude; ETF wants little-endian digits
	slices.Reverse(mag)
	if len(mag) <= math.MaxUint8 {
		b = append(b, tagSmallBig, byte(len(mag)))
	} else {
		b = binary.BigEndian.AppendUint32(append(b, tagLargeBig), uint32(len(mag)))
	}
	sign := byte(0)
	if x.Sign() < 0 {
		sign = 1
	}
	return append(append(b, sign), mag...)
}

// appendAtom picks ATOM_EXT for Latin-1 atoms, as OTP 25 does, and falls
// back to the UTF-8 tags only when a character does not fit in a byte.
func appendAtom(b []byte, a Atom) []byte {
	latin1 := make([]byte, 0, len(a))
	for _, r := range string(a) {
		if r > 0xFF {
			latin1 = nil
			break
		}
		latin1 = append(latin1, byte(r))
	}
	if latin1 != nil {
		b = binary.BigEndian.AppendUint16(append(b, tagAtom), uint16(len(latin1)))
		return append(b, latin1...)
	}
	if len(a) <= math.MaxUint8 {
		b = append(b, tagSmallAtomUTF8, byte(len(a)))
	} else {
		b = binary.BigEndian.AppendUint16(append(b, tagAtomUTF8), uint16(len(a)))
	}
	return append(b, a...)
}

func appendList(b []byte, l []any) []byte {
	if len(l) == 0 {
		return append(b, tagNil)
	}
	if len(l) <= math.MaxUint16 && isByteList(l) {
		b = binary.BigEndian.AppendUint16(append(b, tagString), uint16(len(l)))
		for _, e := range l {
			b = append(b, byte(e.(int64)))
		}
		return b
	}
	b = binary.BigEndian.AppendUint32(append(b, tagList), uint32(len(l)))
	for _, e := range l {
		b = appendTerm(b, e)
	}
	return append(b, tagNil)
}

func isByteList(l []any) bool {
	for _, e := range l {
		n, ok := e.(int64)
		if !ok || n < 0 || n > math.MaxUint8 {
			return false
		}
	}
	return true
}
