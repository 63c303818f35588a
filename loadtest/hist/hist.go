// Package hist is a concurrent log-linear latency histogram (in the spirit of
// HdrHistogram): values below 128 are counted exactly, larger ones in 64
// sub-buckets per power of two, so every reported percentile is within 1/64
// (1.6 %) of a value that was recorded. Recording is lock-free; histograms
// merge, and travel between processes as sparse JSON.
package hist

import (
	"encoding/json"
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

const (
	subBits    = 6                        // 64 sub-buckets per power of two
	subCount   = 1 << subBits             // 64
	exactLimit = 2 * subCount             // values below 128 have their own bucket
	numBuckets = exactLimit + 56*subCount // up to 2^63-1
)

// Hist counts non-negative int64 values (nanoseconds, by convention).
// The zero value is ready to use; it must not be copied after first use.
type Hist struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Int64
	min    atomic.Int64 // valid when n > 0; stored as value+1 so 0 means unset
	max    atomic.Int64
}

// New returns an empty histogram.
func New() *Hist { return &Hist{} }

// index returns the bucket of v (v >= 0).
func index(v int64) int {
	if v < exactLimit {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - (subBits + 1) // >= 1
	m := int(v >> uint(e))                     // in [64, 128)
	return exactLimit + (e-1)*subCount + (m - subCount)
}

// bounds returns the smallest and largest value that fall in bucket i.
func bounds(i int) (lo, hi int64) {
	if i < exactLimit {
		return int64(i), int64(i)
	}
	e := (i-exactLimit)/subCount + 1
	m := int64((i-exactLimit)%subCount + subCount)
	lo = m << uint(e)
	hi = (m+1)<<uint(e) - 1
	if hi < lo { // overflow in the last bucket
		hi = math.MaxInt64
	}
	return lo, hi
}

// Record adds one value; negative values count as 0.
func (h *Hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[index(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		cur := h.min.Load()
		if cur != 0 && cur-1 <= v {
			break
		}
		if h.min.CompareAndSwap(cur, v+1) {
			break
		}
	}
	for {
		cur := h.max.Load()
		if cur >= v {
			break
		}
		if h.max.CompareAndSwap(cur, v) {
			break
		}
	}
}

// RecordDuration records d in nanoseconds.
func (h *Hist) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Count is the number of recorded values.
func (h *Hist) Count() uint64 { return h.n.Load() }

// Min and Max are exact; both are 0 for an empty histogram.
func (h *Hist) Min() int64 {
	if m := h.min.Load(); m > 0 {
		return m - 1
	}
	return 0
}

// Max is the largest recorded value.
func (h *Hist) Max() int64 { return h.max.Load() }

// Mean is the exact arithmetic mean (0 when empty).
func (h *Hist) Mean() float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Percentile returns the p-th percentile (0 < p <= 100): the smallest
// recorded value v such that at least p % of the values are <= v, up to the
// bucket precision. It reports the middle of the bucket, clamped to the exact
// min and max, and 0 for an empty histogram.
func (h *Hist) Percentile(p float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i].Load()
		if cum >= rank {
			lo, hi := bounds(i)
			v := lo + (hi-lo)/2
			return min(max(v, h.Min()), h.Max())
		}
	}
	return h.Max()
}

// Merge adds every value of o to h.
func (h *Hist) Merge(o *Hist) {
	if o.n.Load() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	omin, omax := o.Min(), o.Max()
	for {
		cur := h.min.Load()
		if cur != 0 && cur-1 <= omin {
			break
		}
		if h.min.CompareAndSwap(cur, omin+1) {
			break
		}
	}
	for {
		cur := h.max.Load()
		if cur >= omax || h.max.CompareAndSwap(cur, omax) {
			break
		}
	}
}

// wireHist is the sparse JSON form: bucket index -> count.
type wireHist struct {
	Buckets [][2]uint64 `json:"b"`
	N       uint64      `json:"n"`
	Sum     int64       `json:"sum"`
	Min     int64       `json:"min"`
	Max     int64       `json:"max"`
}

// MarshalJSON writes only the non-empty buckets.
func (h *Hist) MarshalJSON() ([]byte, error) {
	w := wireHist{N: h.n.Load(), Sum: h.sum.Load(), Min: h.Min(), Max: h.Max(), Buckets: [][2]uint64{}}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			w.Buckets = append(w.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON replaces h's content (h must not be in use).
func (h *Hist) UnmarshalJSON(b []byte) error {
	var w wireHist
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	sort.Slice(w.Buckets, func(i, j int) bool { return w.Buckets[i][0] < w.Buckets[j][0] })
	for _, bc := range w.Buckets {
		if bc[0] < numBuckets {
			h.counts[bc[0]].Store(bc[1])
		}
	}
	h.n.Store(w.N)
	h.sum.Store(w.Sum)
	h.max.Store(w.Max)
	if w.N > 0 {
		h.min.Store(w.Min + 1)
	} else {
		h.min.Store(0)
	}
	return nil
}

// Summary is what reports print, in milliseconds.
type Summary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize returns the usual percentiles of a nanosecond histogram in ms.
func (h *Hist) Summarize() Summary {
	ms := func(ns int64) float64 { return math.Round(float64(ns)/1e3) / 1e3 }
	return Summary{
		Count: h.Count(),
		Mean:  math.Round(h.Mean()/1e3) / 1e3,
		P50:   ms(h.Percentile(50)),
		P90:   ms(h.Percentile(90)),
		P99:   ms(h.Percentile(99)),
		P999:  ms(h.Percentile(99.9)),
		Max:   ms(h.Max()),
	}
}
