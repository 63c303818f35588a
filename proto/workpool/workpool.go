// Package workpool runs short tasks on goroutines that outlive them.
//
// A request handler that decodes JSON and waits on NATS grows its stack to
// 8-16 KiB. Run on a fresh goroutine per request, that growth (copying the
// stack, twice or three times) cost a tenth of the whole system's CPU under
// load (profiles in BENCHMARKS.md). A worker here keeps its grown stack
// from one task to the next, and lingers a while after its last one, so a
// steady load starts no goroutine at all and an idle process keeps none.
package workpool

import (
	"sync"
	"time"
)

// DefaultLinger is how long an idle worker waits for another task before
// it ends, when Pool.Linger is zero.
const DefaultLinger = 10 * time.Second

// Pool runs tasks on at most Max goroutines at once. The zero Pool is not
// usable; make one with New.
type Pool struct {
	tasks  chan func() // unbuffered: a send succeeds only into an idle worker
	slots  chan struct{}
	linger time.Duration
	wg     sync.WaitGroup
}

// New returns a pool of at most workers goroutines (at least 1); an idle
// worker ends after linger (0: DefaultLinger).
func New(workers int, linger time.Duration) *Pool {
	if linger <= 0 {
		linger = DefaultLinger
	}
	return &Pool{tasks: make(chan func()), slots: make(chan struct{}, max(workers, 1)), linger: linger}
}

// Go runs task on an idle worker, or on a new one while there are fewer
// than the pool's maximum; otherwise it waits until a worker is free, so a
// full pool holds its callers back instead of growing.
func (p *Pool) Go(task func()) {
	p.wg.Add(1)
	select {
	case p.tasks <- task:
		return
	default:
	}
	select {
	case p.tasks <- task:
	case p.slots <- struct{}{}:
		go p.work(task)
	}
}

// Wait returns once every task handed to the pool so far has returned.
func (p *Pool) Wait() { p.wg.Wait() }

func (p *Pool) work(task func()) {
	defer func() { <-p.slots }()
	idle := time.NewTimer(p.linger)
	defer idle.Stop()
	for {
		p.run(task)
		// Resetting a timer per task is far cheaper than the stack
		// copies it saves.
		idle.Reset(p.linger)
		select {
		case task = <-p.tasks:
		case <-idle.C:
			return
		}
	}
}

func (p *Pool) run(task func()) {
	defer p.wg.Done()
	task()
}
