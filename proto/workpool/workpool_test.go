package workpool

import (
	"sync/atomic"
	"testing"
	"time"
)

// Every task runs, never more than the pool's maximum at once, and Wait
// returns only after the last one.
func TestBoundAndWait(t *testing.T) {
	for _, tc := range []struct {
		name           string
		workers, tasks int
	}{
		{"one worker", 1, 50},
		{"fewer tasks than workers", 8, 3},
		{"many tasks", 4, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(tc.workers, time.Second)
			var running, peak, done atomic.Int32
			for range tc.tasks {
				p.Go(func() {
					n := running.Add(1)
					for {
						old := peak.Load()
						if n <= old || peak.CompareAndSwap(old, n) {
							break
						}
					}
					time.Sleep(50 * time.Microsecond)
					running.Add(-1)
					done.Add(1)
				})
			}
			p.Wait()
			if got := done.Load(); got != int32(tc.tasks) {
				t.Fatalf("Wait returned after %d of %d tasks", got, tc.tasks)
			}
			if got := peak.Load(); got > int32(tc.workers) {
				t.Fatalf("%d tasks ran at once, pool of %d", got, tc.workers)
			}
		})
	}
}

// Go waits for a free worker when the pool is full, instead of growing.
func TestGoWaitsWhenFull(t *testing.T) {
	p := New(1, time.Second)
	release := make(chan struct{})
	p.Go(func() { <-release })
	handed := make(chan struct{})
	go func() {
		p.Go(func() {})
		close(handed)
	}()
	select {
	case <-handed:
		t.Fatal("Go returned while the only worker was busy")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-handed:
	case <-time.After(5 * time.Second):
		t.Fatal("Go still waiting after the worker was freed")
	}
	p.Wait()
}

// Idle workers end after the linger, so a quiet process keeps none.
func TestIdleWorkersEnd(t *testing.T) {
	p := New(4, 20*time.Millisecond)
	for range 4 {
		p.Go(func() { time.Sleep(10 * time.Millisecond) })
	}
	p.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(p.slots) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still alive long after their linger", len(p.slots))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
