package main

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
)

// presView is one socket's presence state, kept as phoenix.js's Presence
// class keeps it: presence_state replaces it (Presence.syncState: every key
// of the new state with its metas, every other key gone), presence_diff
// changes it (Presence.syncDiff: a join adds the metas whose phx_ref the
// key lacks, a leave removes the metas of its phx_refs and the key when
// none is left), and diffs that come before the first state wait for it
// (phoenix.js' pendingDiffs).
//
// It is compact, since a load run holds one per socket of a room of
// thousands: the run's own users ("<prefix><index>") are slots of a slice,
// each meta is a 32-bit hash of its phx_ref, and other keys go to a map.
type presView struct {
	mu       sync.Mutex
	prefix   []byte
	first    []uint32            // per user index: its first meta (0: none)
	extra    map[int][]uint32    // further metas of a user index
	foreign  map[string][]uint32 // keys not of this run
	users    int                 // keys with at least one meta
	metas    int
	gotState bool
	pending  [][]byte // diffs received before the state
}

func newPresView(prefix string, n int) *presView {
	return &presView{prefix: []byte(prefix), first: make([]uint32, n)}
}

// refHash is the meta's identity: FNV-1a of its phx_ref, never 0.
func refHash(ref []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range ref {
		h ^= uint32(c)
		h *= 16777619
	}
	if h == 0 {
		h = 1
	}
	return h
}

// slot is the user index of key, or -1 for a key not of this run.
func (v *presView) slot(key []byte) int {
	rest, ok := bytes.CutPrefix(key, v.prefix)
	if !ok || len(rest) == 0 {
		return -1
	}
	n := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
		if n >= len(v.first) {
			return -1
		}
	}
	return n
}

// metasOf returns the metas of key (a copy for a run user).
func (v *presView) metasOf(key []byte) []uint32 {
	if i := v.slot(key); i >= 0 {
		if v.first[i] == 0 {
			return nil
		}
		return append([]uint32{v.first[i]}, v.extra[i]...)
	}
	return v.foreign[string(key)]
}

// setMetas replaces key's metas and keeps the counts.
func (v *presView) setMetas(key []byte, ms []uint32) {
	old := v.metasOf(key)
	v.metas += len(ms) - len(old)
	if len(old) == 0 && len(ms) > 0 {
		v.users++
	} else if len(old) > 0 && len(ms) == 0 {
		v.users--
	}
	if i := v.slot(key); i >= 0 {
		if len(ms) == 0 {
			v.first[i] = 0
			delete(v.extra, i)
			return
		}
		v.first[i] = ms[0]
		if len(ms) > 1 {
			if v.extra == nil {
				v.extra = map[int][]uint32{}
			}
			v.extra[i] = append([]uint32(nil), ms[1:]...)
		} else {
			delete(v.extra, i)
		}
		return
	}
	if len(ms) == 0 {
		delete(v.foreign, string(key))
		return
	}
	if v.foreign == nil {
		v.foreign = map[string][]uint32{}
	}
	v.foreign[string(key)] = ms
}

// reset forgets every presence.
func (v *presView) reset() {
	clear(v.first)
	v.extra, v.foreign = nil, nil
	v.users, v.metas = 0, 0
}

// applyState is Presence.syncState with a presence_state payload, then the
// diffs that waited for it.
func (v *presView) applyState(payload []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reset()
	if err := eachPresence(payload, func(key []byte, refs []uint32) {
		v.setMetas(key, union(v.metasOf(key), refs))
	}); err != nil {
		return err
	}
	v.gotState = true
	for _, d := range v.pending {
		if err := v.diffLocked(d); err != nil {
			return err
		}
	}
	v.pending = nil
	return nil
}

// applyDiff is Presence.syncDiff with a presence_diff payload.
func (v *presView) applyDiff(payload []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.gotState {
		v.pending = append(v.pending, bytes.Clone(payload))
		return nil
	}
	return v.diffLocked(payload)
}

func (v *presView) diffLocked(payload []byte) error {
	s := jscan{b: payload}
	// Joins first, then leaves, as syncDiff does.
	var joins, leaves []byte
	s.object(func(k []byte) {
		start := s.i
		s.skip()
		switch string(k) {
		case "joins":
			joins = payload[start:s.i]
		case "leaves":
			leaves = payload[start:s.i]
		}
	})
	if s.err != nil {
		return s.err
	}
	if joins != nil {
		if err := eachPresence(joins, func(key []byte, refs []uint32) {
			v.setMetas(key, union(v.metasOf(key), refs))
		}); err != nil {
			return err
		}
	}
	if leaves != nil {
		if err := eachPresence(leaves, func(key []byte, refs []uint32) {
			cur := v.metasOf(key)
			if len(cur) == 0 {
				return
			}
			kept := cur[:0:0]
			for _, m := range cur {
				if !contains(refs, m) {
					kept = append(kept, m)
				}
			}
			v.setMetas(key, kept)
		}); err != nil {
			return err
		}
	}
	return nil
}

// counts returns the keys and metas the socket sees now.
func (v *presView) counts() (users, metas int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.users, v.metas
}

func contains(s []uint32, x uint32) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// union is cur plus the refs it lacks.
func union(cur, refs []uint32) []uint32 {
	out := cur
	for _, r := range refs {
		if !contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// eachPresence calls f with every key of a presence state object
// ({"key": {"metas": [{"phx_ref": ...}, ...]}, ...}) and its metas' refs.
func eachPresence(b []byte, f func(key []byte, refs []uint32)) error {
	s := jscan{b: b}
	var refs []uint32
	s.object(func(key []byte) {
		refs = refs[:0]
		s.object(func(k []byte) {
			if string(k) != "metas" {
				s.skip()
				return
			}
			s.array(func() {
				s.object(func(mk []byte) {
					if string(mk) == "phx_ref" {
						refs = append(refs, refHash(s.str()))
					} else {
						s.skip()
					}
				})
			})
		})
		if s.err == nil {
			f(key, refs)
		}
	})
	return s.err
}

// jscan is a small JSON reader for the presence payloads: no allocation,
// strings returned raw (escapes kept; the keys compared hold none).
type jscan struct {
	b   []byte
	i   int
	err error
}

var errJSON = errors.New("presence payload: bad JSON")

func (s *jscan) fail() {
	if s.err == nil {
		s.err = errJSON
	}
	s.i = len(s.b)
}

func (s *jscan) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\n' || s.b[s.i] == '\t' || s.b[s.i] == '\r') {
		s.i++
	}
}

// str reads a string and returns its raw contents.
func (s *jscan) str() []byte {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		s.fail()
		return nil
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			s.i = j + 1
			return s.b[start:j]
		}
	}
	s.fail()
	return nil
}

// object reads an object, calling f at each key with the reader before
// its value; f must read the value.
func (s *jscan) object(f func(key []byte)) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		s.fail()
		return
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return
	}
	for s.err == nil {
		k := s.str()
		s.ws()
		if s.err != nil || s.i >= len(s.b) || s.b[s.i] != ':' {
			s.fail()
			return
		}
		s.i++
		f(k)
		s.ws()
		if s.i >= len(s.b) {
			s.fail()
			return
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			s.fail()
		}
	}
}

// array reads an array, calling f for each element; f must read it.
func (s *jscan) array(f func()) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		s.fail()
		return
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return
	}
	for s.err == nil {
		f()
		s.ws()
		if s.i >= len(s.b) {
			s.fail()
			return
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return
		default:
			s.fail()
		}
	}
}

// skip reads any value.
func (s *jscan) skip() {
	s.ws()
	if s.i >= len(s.b) {
		s.fail()
		return
	}
	switch c := s.b[s.i]; {
	case c == '"':
		s.str()
	case c == '{':
		s.object(func([]byte) { s.skip() })
	case c == '[':
		s.array(s.skip)
	default: // number, true, false, null
		j := s.i
		for j < len(s.b) && s.b[j] != ',' && s.b[j] != '}' && s.b[j] != ']' && s.b[j] != ' ' {
			j++
		}
		if j == s.i {
			s.fail()
			return
		}
		if _, err := strconv.ParseFloat(string(s.b[s.i:j]), 64); err != nil {
			if w := string(s.b[s.i:j]); w != "true" && w != "false" && w != "null" {
				s.fail()
				return
			}
		}
		s.i = j
	}
}
