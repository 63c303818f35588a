package history

import (
	"slices"
	"testing"
)

// newTestIndex is an Index fed by hand, without a stream.
func newTestIndex(perRoom int, pos uint64) *Index {
	return &Index{perRm: perRoom, rooms: make(map[string]*room), pos: pos, lostUpTo: pos, closed: make(chan struct{})}
}

func (x *Index) add(subject string, seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.takeLocked(subject, seq)
}

func TestIndex(t *testing.T) {
	x := newTestIndex(3, 10)
	// In stream order, as the consumer delivers.
	for _, m := range []struct {
		subj string
		seq  uint64
	}{{"a", 11}, {"b", 12}, {"a", 13}, {"a", 14}, {"a", 15}, {"b", 18}} {
		x.add(m.subj, m.seq)
	}
	a := x.look("a", 100)
	if !slices.Equal(a.seqs, []uint64{13, 14, 15}) || a.dropped != 12 {
		t.Fatalf("room a past its bound: %+v", a)
	}
	// 16 and 17 were skipped: dropped before the index saw them, from
	// rooms unknown, so every room may have lost one.
	if b := x.look("b", 100); !slices.Equal(b.seqs, []uint64{12, 18}) || b.lostUpTo != 17 {
		t.Fatalf("room b after a skip: %+v", b)
	}
	// Up to a position: only what came before it.
	if a := x.look("a", 14); !slices.Equal(a.seqs, []uint64{13, 14}) {
		t.Fatalf("room a up to 14: %+v", a)
	}
	// Holes in what the stream held when the index opened are other
	// rooms' bounds at work, not losses of every room.
	y := newTestIndex(3, 0)
	y.loadedTo = 20
	y.add("c", 5)
	y.add("c", 9)
	if c := y.look("c", 100); c.lostUpTo != 0 || c.dropped != 0 {
		t.Fatalf("a hole below loadedTo counted as a loss: %+v", c)
	}
	y.add("c", 23)
	if c := y.look("c", 100); c.lostUpTo != 22 || c.dropped != 4 {
		t.Fatalf("room c after a live skip, full: %+v", c)
	}
	// A message found missing is forgotten, and the room's losses reach it.
	x.missing("a", 14)
	if a := x.look("a", 100); !slices.Equal(a.seqs, []uint64{13, 15}) || a.dropped != 14 {
		t.Fatalf("room a after 14 went missing: %+v", a)
	}
	// The stream's front passes 15: room a is forgotten, room b keeps 18.
	x.forgetBefore(16)
	if a := x.look("a", 100); len(a.seqs) != 0 || a.lostUpTo != 17 {
		t.Fatalf("room a after the front passed it: %+v", a)
	}
	x.forgetBefore(13)
	if b := x.look("b", 100); !slices.Equal(b.seqs, []uint64{18}) || b.dropped != 12 {
		t.Fatalf("room b: %+v", b)
	}
	// A consumer starting over delivers what the index has: ignored.
	x.add("b", 12)
	if b := x.look("b", 100); !slices.Equal(b.seqs, []uint64{18}) {
		t.Fatalf("room b after a redelivery: %+v", b)
	}
}
