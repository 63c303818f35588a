package ws

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/phxnats/phxnats/gateway/session"
	"github.com/phxnats/phxnats/gateway/wsframe"
)

// startWriter hands a socket that has something to send to a writer.
func (c *conn) startWriter() {
	if c.raw != nil && c.srv.writers.add(c) {
		return
	}
	go c.writeLoop(nil)
}

// take swaps out what the writer is to send.
func (c *conn) take() (batch []session.Frame, pong []byte) {
	c.mu.Lock()
	batch, pong = c.queue, c.pong
	c.queue, c.spare, c.pong = c.spare, nil, nil
	c.inflight, c.queued = c.queued, 0
	c.mu.Unlock()
	return batch, pong
}

// release ends a writer's turn once everything taken is written. It
// reports whether the writer must go on (more was queued meanwhile) or
// send the close frame; after that the socket stays owned, since nothing
// follows a close.
func (c *conn) release(batch []session.Frame) (more, sendClose bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight = 0
	if len(c.queue) > 0 || c.pong != nil {
		if cap(batch) <= c.srv.cfg.SendQueueLen {
			c.spare = batch[:0] // a busy socket appends without allocating
		}
		return true, false
	}
	if c.closeDue() {
		return false, true
	}
	if cap(c.queue) == 0 && cap(batch) <= c.srv.cfg.SendQueueLen {
		// Kept for the next burst, so a busy socket that the writers
		// catch up with does not grow a new queue each time; watchIdle
		// drops it once the socket has been quiet for a while.
		c.queue = batch[:0]
	}
	c.writing = false
	return false, false
}

// trimQueue drops a large idle queue's storage, so a socket that was busy
// once costs no more than any other while it is quiet.
func (c *conn) trimQueue() {
	c.mu.Lock()
	if !c.writing && len(c.queue) == 0 && cap(c.queue) > 16 {
		c.queue = nil
	}
	c.mu.Unlock()
}

// writePool is a Server's shared write pool.
//
// A goroutine started per socket whenever its queue turns non-empty writes
// as soon as it runs, usually a single frame, and its start and exit cost
// about a tenth of the fan-out CPU. The pool instead works through the
// sockets that have frames in turn, so while it writes to some, the
// broadcasts that keep arriving pile up in the queues of the others: the
// busier the gateway, the more frames each write syscall carries. A
// socket is written without blocking; one that cannot take its whole
// batch (a client slow to read) is finished on a goroutine of its own, so
// it holds up no one.
type writePool struct {
	start  sync.Once
	mu     sync.Mutex
	cond   sync.Cond
	ready  []*conn // sockets waiting for a writer, in order from head
	head   int
	idle   int  // workers waiting on cond
	closed bool // workers exit once the list is empty
}

// writePoolTake is how many sockets a worker takes off the list at once:
// enough to make the lock cheap, few enough to share work among workers.
const writePoolTake = 32

// add lists c for a worker; false means the pool is closed, and c needs a
// writer goroutine of its own.
func (p *writePool) add(c *conn) bool {
	p.start.Do(func() {
		p.mu.Lock() // close reads cond.L under it, perhaps at the same time
		p.cond.L = &p.mu
		p.mu.Unlock()
		for range runtime.GOMAXPROCS(0) {
			go p.work()
		}
	})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.ready = append(p.ready, c)
	if p.idle > 0 {
		p.cond.Signal()
	}
	p.mu.Unlock()
	return true
}

// close has the workers exit once they have written what is listed; a
// socket that has something to send after that gets a writer goroutine.
func (p *writePool) close() {
	p.mu.Lock()
	p.closed = true
	if p.cond.L != nil {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// poolWorker is one writer's state: its buffer, and the raw write
// callback made once, since a closure made per write escapes to the heap.
type poolWorker struct {
	buf     []byte
	out     []byte // what write is to send
	written int
	err     error
	write   func(fd uintptr) bool
}

func (p *writePool) work() {
	w := &poolWorker{}
	w.write = w.writeFD
	var mine []*conn
	for {
		p.mu.Lock()
		for p.head == len(p.ready) {
			if cap(p.ready) > 4096 {
				p.ready = nil // a storm is over: do not keep its list
			}
			p.ready, p.head = p.ready[:0], 0
			if p.closed {
				p.mu.Unlock()
				return
			}
			p.idle++
			p.cond.Wait()
			p.idle--
		}
		n := min(len(p.ready)-p.head, writePoolTake)
		mine = append(mine[:0], p.ready[p.head:p.head+n]...)
		clear(p.ready[p.head : p.head+n])
		p.head += n
		if p.head >= 1024 && p.head*2 >= len(p.ready) {
			// Under steady load the list never empties: move the live
			// part down rather than let append grow it without end.
			k := copy(p.ready, p.ready[p.head:])
			clear(p.ready[k:])
			p.ready, p.head = p.ready[:k], 0
		}
		p.mu.Unlock()
		for i, c := range mine {
			c.flushSafe(w)
			mine[i] = nil
		}
		if cap(w.buf) > 2*maxWrite {
			w.buf = nil
		}
	}
}

// flushSafe is flush for the pool's workers: a panic ends c, not the
// worker. No close frame can follow a frame that may be half written, so
// the connection just ends.
func (c *conn) flushSafe(w *poolWorker) {
	defer c.recoverPanic("writer", func() {
		w.buf = nil
		c.fail()
	})
	c.flush(w)
}

// flush writes what c has queued without blocking. Then c goes back to
// the end of the pool's list if more was queued meanwhile, goes idle, or,
// when the client did not take it all, continues on a goroutine of its
// own.
func (c *conn) flush(w *poolWorker) {
	batch, pong := c.take()
	buf := w.buf[:0]
	defer func() { w.buf = buf }()
	if pong != nil {
		buf = appendControl(buf, wsframe.OpPong, pong)
	}
	for i := 0; i < len(batch) || len(buf) > 0; {
		for i < len(batch) && len(buf) < maxWrite {
			buf = appendFrame(buf, batch[i])
			batch[i] = session.Frame{} // shared bytes: let them go once written
			i++
		}
		n, err := w.tryWrite(c.raw, buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline a goroutine writer of this socket left
			// (writeLoop, when its client was slow once): these writes
			// never block, so it bounds nothing here. Failing on it
			// ended healthy sockets without a close frame.
			c.writeDeadline = time.Time{}
			_ = c.ws.NetConn().SetWriteDeadline(time.Time{})
			n, err = w.tryWrite(c.raw, buf)
		}
		if err != nil {
			c.fail()
			return
		}
		if n < len(buf) {
			go c.writeLoop(&pendingWrite{bytes.Clone(buf[n:]), batch[i:]})
			return
		}
		buf = buf[:0]
	}
	switch more, closeNow := c.release(batch); {
	case more:
		if !c.srv.writers.add(c) {
			go c.writeLoop(nil)
		}
	case closeNow:
		go c.sendClose() // it may wait on the client; the pool does not
	}
}

// tryWrite writes as much of b as the socket takes now, without waiting.
func (w *poolWorker) tryWrite(raw syscall.RawConn, b []byte) (int, error) {
	w.out, w.written, w.err = b, 0, nil
	err := raw.Write(w.write)
	if err == nil {
		err = w.err
	}
	w.out = nil
	return w.written, err
}

// pendingWrite is what a client did not take at once: the rest of a
// write, and the frames of the batch not yet framed.
type pendingWrite struct {
	data   []byte
	frames []session.Frame
}

// writeLoop writes the socket from a goroutine of its own, with blocking
// writes bounded by WriteTimeout, until its queue is empty: for a client
// slow to read, and for connections that are not plain sockets.
func (c *conn) writeLoop(p *pendingWrite) {
	defer c.recoverPanic("writer", c.fail)
	if p != nil {
		if err := c.writeBatch(p.data, nil, p.frames); err != nil {
			c.countTimeout(err)
			c.fail()
			return
		}
	}
	for {
		batch, pong := c.take()
		if len(batch) > 0 || pong != nil {
			if err := c.writeBatch(nil, pong, batch); err != nil {
				c.countTimeout(err)
				c.fail()
				return
			}
		}
		more, closeNow := c.release(batch)
		if closeNow {
			c.sendClose()
		}
		if !more {
			return
		}
	}
}

// maxWrite bounds one write: a batch larger than this goes out in several
// writes, each holding whole frames.
const maxWrite = 256 << 10

// writeBatch writes head (bytes already framed), the pong and every frame
// of batch with blocking writes, as few as possible.
//
// The server never masks frames and the gateway does not negotiate
// compression, so the framing is RFC 6455's plain header, encoded here
// rather than by gorilla, which writes one frame per call. gorilla still
// writes the close frame (sendClose, onClose), but only when no batch is
// in flight.
func (c *conn) writeBatch(head, pong []byte, batch []session.Frame) error {
	conn := c.ws.NetConn()
	if err := c.refreshWriteDeadline(); err != nil {
		return err
	}
	bp := c.srv.writeBufs.Get().(*[]byte)
	buf := append((*bp)[:0], head...)
	defer func() {
		if cap(buf) <= maxWrite*2 {
			*bp = buf[:0]
			c.srv.writeBufs.Put(bp)
		}
	}()
	if pong != nil {
		buf = appendControl(buf, wsframe.OpPong, pong)
	}
	for i, f := range batch {
		buf = appendFrame(buf, f)
		batch[i] = session.Frame{} // shared bytes: let them go once written
		if len(buf) >= maxWrite {
			if _, err := conn.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if _, err := conn.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// refreshWriteDeadline moves the write deadline, which bounds the blocking
// writes. Moving it costs a timer update, so under load it is only
// refreshed once half of WriteTimeout is used up. Only the socket's writer
// calls it.
func (c *conn) refreshWriteDeadline() error {
	now := time.Now()
	if c.writeDeadline.Sub(now) >= c.srv.cfg.WriteTimeout/2 {
		return nil
	}
	c.writeDeadline = now.Add(c.srv.cfg.WriteTimeout)
	return c.ws.NetConn().SetWriteDeadline(c.writeDeadline)
}

// appendFrame appends f as one WebSocket frame.
func appendFrame(dst []byte, f session.Frame) []byte {
	op := wsframe.OpText
	if f.Binary {
		op = wsframe.OpBinary
	}
	dst = wsframe.AppendHeader(dst, op, len(f.Data))
	return append(dst, f.Data...)
}

// appendControl appends a control frame; RFC 6455 caps its payload at 125
// bytes, which gorilla enforces on the pings it reads.
func appendControl(dst []byte, op byte, payload []byte) []byte {
	dst = wsframe.AppendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// countTimeout counts a socket ended because the client read nothing for
// WriteTimeout as a slow consumer, as one whose queue overflowed is.
func (c *conn) countTimeout(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.srv.cfg.Metrics.SlowDisconnects.Inc()
	}
}
