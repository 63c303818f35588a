package hist

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func TestIndexBoundsRoundTrip(t *testing.T) {
	// Every bucket's bounds map back to it, buckets tile the number line,
	// and the relative width of a bucket never exceeds 1/64.
	prevHi := int64(-1)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if index(lo) != i || index(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: index(lo)=%d index(hi)=%d", i, lo, hi, index(lo), index(hi))
		}
		if lo > 0 && float64(hi-lo)/float64(lo) > 1.0/64 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/64", i, lo, hi)
		}
		prevHi = hi
		if hi == math.MaxInt64 {
			return
		}
	}
	t.Fatalf("buckets end at %d, before MaxInt64", prevHi)
}

func TestSmallValuesExact(t *testing.T) {
	h := New()
	for v := int64(1); v <= 100; v++ {
		h.Record(v)
	}
	for _, c := range []struct {
		p    float64
		want int64
	}{{1, 1}, {50, 50}, {90, 90}, {99, 99}, {99.5, 100}, {100, 100}} {
		if got := h.Percentile(c.p); got != c.want {
			t.Errorf("p%v = %d, want %d", c.p, got, c.want)
		}
	}
	if h.Min() != 1 || h.Max() != 100 || h.Count() != 100 || h.Mean() != 50.5 {
		t.Errorf("min %d max %d count %d mean %v", h.Min(), h.Max(), h.Count(), h.Mean())
	}
}

func TestPercentilesWithinPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := New()
	vals := make([]int64, 100000)
	for i := range vals {
		// log-uniform between 1 µs and 10 s
		vals[i] = int64(math.Exp(r.Float64()*math.Log(1e7)) * 1e3)
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, p := range []float64{10, 50, 90, 99, 99.9, 100} {
		rank := int(math.Ceil(p/100*float64(len(vals)))) - 1
		want := vals[rank]
		got := h.Percentile(p)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 1.0/64 {
			t.Errorf("p%v = %d, exact %d (%.2f%% off)", p, got, want, rel*100)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Errorf("min/max %d/%d, want %d/%d", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
}

func TestEmptyAndNegative(t *testing.T) {
	h := New()
	if h.Percentile(99) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(-5)
	if h.Min() != 0 || h.Max() != 0 || h.Count() != 1 {
		t.Fatalf("negative not clamped: min %d max %d", h.Min(), h.Max())
	}
}

func TestMergeAndJSON(t *testing.T) {
	a, b := New(), New()
	for v := int64(0); v < 1000; v++ {
		a.Record(v * 1000)
	}
	for v := int64(1000); v < 3000; v++ {
		b.Record(v * 1000)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	b2 := New()
	if err := json.Unmarshal(raw, b2); err != nil {
		t.Fatal(err)
	}
	if b2.Count() != b.Count() || b2.Percentile(50) != b.Percentile(50) || b2.Min() != b.Min() || b2.Max() != b.Max() {
		t.Fatalf("JSON round trip changed the histogram")
	}
	a.Merge(b2)
	if a.Count() != 3000 || a.Min() != 0 || a.Max() != 2999000 {
		t.Fatalf("merged count %d min %d max %d", a.Count(), a.Min(), a.Max())
	}
	if got := a.Percentile(50); math.Abs(float64(got-1499000))/1499000 > 1.0/64 {
		t.Fatalf("merged p50 = %d", got)
	}
	s := a.Summarize()
	if s.Count != 3000 || s.Max != 2.999 {
		t.Fatalf("summary %+v", s)
	}
}

func TestConcurrentRecord(t *testing.T) {
	h := New()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(1); i <= 10000; i++ {
				h.Record(i)
			}
		}()
	}
	wg.Wait()
	if h.Count() != 80000 || h.Min() != 1 || h.Max() != 10000 {
		t.Fatalf("count %d min %d max %d", h.Count(), h.Min(), h.Max())
	}
}

func BenchmarkRecord(b *testing.B) {
	h := New()
	b.RunParallel(func(pb *testing.PB) {
		v := int64(12345)
		for pb.Next() {
			h.Record(v)
			v = v*7 + 1&0xffffff
		}
	})
}
