package etf

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"unicode/utf8"
)

// A DecodeError reports input that Decode rejects: malformed bytes, a
// term type this package does not support (pids, funs, references,
// LOCAL_EXT, bit strings, ...), or a safety limit being exceeded.
type DecodeError struct {
	// Offset is the byte offset of the problem in the input; for a
	// compressed term it is an offset into the uncompressed term.
	Offset int
	Reason string
}

// Error implements error.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("etf: %s at offset %d", e.Reason, e.Offset)
}

// Decode parses one complete external term, including the leading version
// byte 131 and optionally compressed (tag 80). It never panics: anything
// outside the supported subset, trailing bytes, nesting deeper than
// MaxDepth and compressed terms declaring more than MaxUncompressedSize
// bytes are reported as a *DecodeError. Like binary_to_term, it rejects
// improper lists, duplicate map keys, non-finite floats and over-long atoms.
func Decode(data []byte) (any, error) {
	if len(data) == 0 || data[0] != tagVersion {
		return nil, &DecodeError{0, "missing version byte 131"}
	}
	body, base := data[1:], 1
	if len(body) > 0 && body[0] == tagCompressed {
		var err error
		if body, err = inflate(body[1:]); err != nil {
			return nil, err
		}
		base = 0
	}
	d := decoder{buf: body, base: base}
	t, err := d.term(0)
	if err != nil {
		return nil, err
	}
	if d.off != len(d.buf) {
		return nil, d.errorf("%d trailing bytes", len(d.buf)-d.off)
	}
	return t, nil
}

// inflate expands the body of a COMPRESSED term: a 4-byte uncompressed
// size followed by a zlib stream that must end exactly at the input's end.
func inflate(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, &DecodeError{2, "truncated compressed term"}
	}
	size := binary.BigEndian.Uint32(b)
	if size > MaxUncompressedSize {
		return nil, &DecodeError{2, fmt.Sprintf("compressed term declares %d bytes, limit is %d", size, MaxUncompressedSize)}
	}
	r := bytes.NewReader(b[4:])
	zr, err := zlib.NewReader(r)
	if err != nil {
		return nil, &DecodeError{6, "bad zlib header: " + err.Error()}
	}
	defer zr.Close()
	// Reading one byte past the declared size detects streams that lie.
	out, err := io.ReadAll(io.LimitReader(zr, int64(size)+1))
	if err != nil {
		return nil, &DecodeError{6, "bad zlib data: " + err.Error()}
	}
	if len(out) != int(size) {
		return nil, &DecodeError{6, fmt.Sprintf("compressed term inflates to %d bytes, header says %d", len(out), size)}
	}
	if r.Len() != 0 {
		return nil, &DecodeError{len(b) + 2 - r.Len(), "trailing bytes after compressed data"}
	}
	return out, nil
}

type decoder struct {
	buf  []byte
	off  int
	base int // offset of buf within the caller's input, for error messages
}

func (d *decoder) errorf(format string, args ...any) error {
	return &DecodeError{d.base + d.off, fmt.Sprintf(format, args...)}
}

// take consumes n bytes, failing instead of slicing past the end.
func (d *decoder) take(n uint64) ([]byte, error) {
	if n > uint64(len(d.buf)-d.off) {
		return nil, d.errorf("unexpected end of input (need %d bytes)", n)
	}
	b := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

func (d *decoder) u8() (uint64, error) {
	b, err := d.take(1)
	if err != nil {
		return 0, err
	}
	return uint64(b[0]), nil
}

func (d *decoder) u16() (uint64, error) {
	b, err := d.take(2)
	if err != nil {
		return 0, err
	}
	return uint64(binary.BigEndian.Uint16(b)), nil
}

func (d *decoder) u32() (uint64, error) {
	b, err := d.take(4)
	if err != nil {
		return 0, err
	}
	return uint64(binary.BigEndian.Uint32(b)), nil
}

// count reads a length with read and checks that the rest of the input can
// hold that many items of at least minSize bytes each, so a forged header
// cannot make us allocate more than the input justifies.
func (d *decoder) count(read func() (uint64, error), minSize uint64) (int, error) {
	n, err := read()
	if err != nil {
		return 0, err
	}
	if n*minSize > uint64(len(d.buf)-d.off) {
		return 0, d.errorf("length %d exceeds remaining input", n)
	}
	return int(n), nil
}

func (d *decoder) term(depth int) (any, error) {
	if depth > MaxDepth {
		return nil, d.errorf("terms nest deeper than %d", MaxDepth)
	}
	start := d.off
	tag, err := d.u8()
	if err != nil {
		return nil, err
	}
	switch tag {
	case tagSmallInteger:
		n, err := d.u8()
		return int64(n), err
	case tagInteger:
		n, err := d.u32()
		return int64(int32(uint32(n))), err
	case tagSmallBig:
		return d.bigInt(d.u8)
	case tagLargeBig:
		return d.bigInt(d.u32)
	case tagNewFloat:
		b, err := d.take(8)
		if err != nil {
			return nil, err
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(b))
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.off = start
			return nil, d.errorf("non-finite float")
		}
		return f, nil
	case tagAtom:
		return d.atom(d.u16, true)
	case tagSmallAtom:
		return d.atom(d.u8, true)
	case tagAtomUTF8:
		return d.atom(d.u16, false)
	case tagSmallAtomUTF8:
		return d.atom(d.u8, false)
	case tagSmallTuple:
		return d.tuple(d.u8, depth)
	case tagLargeTuple:
		return d.tuple(d.u32, depth)
	case tagMap:
		return d.mapTerm(depth)
	case tagNil:
		return []any{}, nil
	case tagString:
		n, err := d.count(d.u16, 1)
		if err != nil {
			return nil, err
		}
		b, _ := d.take(uint64(n))
		l := make([]any, n)
		for i, c := range b {
			l[i] = int64(c)
		}
		return l, nil
	case tagList:
		return d.list(depth)
	case tagBinary:
		n, err := d.count(d.u32, 1)
		if err != nil {
			return nil, err
		}
		b, _ := d.take(uint64(n))
		return string(b), nil
	}
	d.off = start
	switch tag {
	case tagCompressed:
		return nil, d.errorf("compressed term nested inside a term")
	case tagLocal:
		return nil, d.errorf("LOCAL_EXT (tag 121) only decodes on the node that made it")
	case tagBitBinary:
		return nil, d.errorf("bit strings (tag 77) are not supported")
	}
	return nil, d.errorf("unsupported term tag %d", tag)
}

// bigInt decodes the digits of a SMALL_BIG_EXT/LARGE_BIG_EXT and, like the
// VM, normalizes values that fit a machine integer.
func (d *decoder) bigInt(readLen func() (uint64, error)) (any, error) {
	n, err := d.count(readLen, 1)
	if err != nil {
		return nil, err
	}
	sign, err := d.u8()
	if err != nil {
		return nil, err
	}
	digits, err := d.take(uint64(n))
	if err != nil {
		return nil, err
	}
	be := slices.Clone(digits) // ETF digits are little-endian, SetBytes wants big-endian
	slices.Reverse(be)
	x := new(big.Int).SetBytes(be)
	if sign != 0 {
		x.Neg(x)
	}
	if x.IsInt64() {
		return x.Int64(), nil
	}
	return x, nil
}

func (d *decoder) atom(readLen func() (uint64, error), latin1 bool) (any, error) {
	start := d.off
	n, err := d.count(readLen, 1)
	if err != nil {
		return nil, err
	}
	b, _ := d.take(uint64(n))
	var a Atom
	if latin1 {
		// Latin-1 bytes are code points U+0000..U+00FF.
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		a = Atom(string(r))
	} else {
		if !utf8.Valid(b) {
			d.off = start
			return nil, d.errorf("atom is not valid UTF-8")
		}
		a = Atom(b)
	}
	if utf8.RuneCountInString(string(a)) > maxAtomChars {
		d.off = start
		return nil, d.errorf("atom longer than %d characters", maxAtomChars)
	}
	return a, nil
}

func (d *decoder) elements(n, depth int) ([]any, error) {
	l := make([]any, n)
	for i := range l {
		e, err := d.term(depth + 1)
		if err != nil {
			return nil, err
		}
		l[i] = e
	}
	return l, nil
}

func (d *decoder) tuple(readLen func() (uint64, error), depth int) (any, error) {
	n, err := d.count(readLen, 1)
	if err != nil {
		return nil, err
	}
	l, err := d.elements(n, depth)
	return Tuple(l), err
}

func (d *decoder) list(depth int) (any, error) {
	n, err := d.count(d.u32, 1)
	if err != nil {
		return nil, err
	}
	l, err := d.elements(n, depth)
	if err != nil {
		return nil, err
	}
	tailAt := d.off
	tail, err := d.term(depth + 1)
	if err != nil {
		return nil, err
	}
	// OTP always writes NIL_EXT here, but any proper list is a valid tail.
	rest, ok := tail.([]any)
	if !ok {
		d.off = tailAt
		return nil, d.errorf("improper list")
	}
	return append(l, rest...), nil
}

func (d *decoder) mapTerm(depth int) (any, error) {
	start := d.off - 1
	n, err := d.count(d.u32, 2)
	if err != nil {
		return nil, err
	}
	m := make(Map, n)
	for i := range m {
		k, err := d.term(depth + 1)
		if err != nil {
			return nil, err
		}
		v, err := d.term(depth + 1)
		if err != nil {
			return nil, err
		}
		m[i] = Pair{k, v}
	}
	// Sorting a copy finds duplicates in O(n log n) and leaves wire order.
	keys := make([]any, n)
	for i, p := range m {
		keys[i] = p.Key
	}
	slices.SortFunc(keys, compare)
	for i := 1; i < len(keys); i++ {
		if compare(keys[i-1], keys[i]) == 0 {
			d.off = start
			return nil, d.errorf("duplicate map key")
		}
	}
	return m, nil
}
