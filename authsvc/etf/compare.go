package etf

import (
	"cmp"
	"math/big"
	"slices"
	"strings"
)

// Equal reports whether a and b are the same term under Erlang's exact
// equality (=:=): 1 and 1.0 differ, map key order does not matter. Values
// Encode would reject are equal to nothing.
func Equal(a, b any) bool {
	na, err := normalize(a, 0)
	if err != nil {
		return false
	}
	nb, err := normalize(b, 0)
	if err != nil {
		return false
	}
	return compare(na, nb) == 0
}

// Term classes in Erlang term order: number < atom < (reference, fun,
// port, pid: unsupported) < tuple < map < nil < list < binary. Nil and
// non-empty lists share a class because the empty list sorts first among
// lists anyway.
const (
	classNumber = iota
	classAtom
	classTuple
	classMap
	classList
	classBinary
)

func class(t any) int {
	switch t.(type) {
	case int64, *big.Int, float64:
		return classNumber
	case Atom:
		return classAtom
	case Tuple:
		return classTuple
	case Map:
		return classMap
	case []any:
		return classList
	}
	return classBinary
}

// compare orders normalized terms in Erlang's map-key order, the exact
// variant of term order that OTP uses to sort map keys: it differs from
// plain term order only in placing every integer before every float.
// Maps are compared with their keys sorted, as normalize leaves them, so
// decoded maps (wire order) are sorted on the fly.
func compare(a, b any) int {
	if c := cmp.Compare(class(a), class(b)); c != 0 {
		return c
	}
	switch x := a.(type) {
	case int64, *big.Int, float64:
		return compareNumbers(x, b)
	case Atom:
		return strings.Compare(string(x), string(b.(Atom)))
	case string:
		return strings.Compare(x, b.(string))
	case Tuple:
		y := b.(Tuple)
		if c := cmp.Compare(len(x), len(y)); c != 0 {
			return c
		}
		return slices.CompareFunc(x, y, compare)
	case []any:
		return slices.CompareFunc(x, b.([]any), compare)
	case Map:
		return compareMaps(x, b.(Map))
	}
	return 0
}

func compareNumbers(a, b any) int {
	fa, aFloat := a.(float64)
	fb, bFloat := b.(float64)
	switch {
	case aFloat && bFloat:
		return cmp.Compare(fa, fb)
	case aFloat:
		return 1
	case bFloat:
		return -1
	}
	return toBig(a).Cmp(toBig(b))
}

func toBig(n any) *big.Int {
	if i, ok := n.(int64); ok {
		return big.NewInt(i)
	}
	return n.(*big.Int)
}

// compareMaps follows the Erlang rule: size first, then the sorted keys,
// then the values in key order.
func compareMaps(x, y Map) int {
	if c := cmp.Compare(len(x), len(y)); c != 0 {
		return c
	}
	byKey := func(p, q Pair) int { return compare(p.Key, q.Key) }
	x, y = slices.SortedStableFunc(slices.Values(x), byKey), slices.SortedStableFunc(slices.Values(y), byKey)
	for i := range x {
		if c := compare(x[i].Key, y[i].Key); c != 0 {
			return c
		}
	}
	for i := range x {
		if c := compare(x[i].Value, y[i].Value); c != 0 {
			return c
		}
	}
	return 0
}
