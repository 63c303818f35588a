//go:build unix

package ws

import (
	"net"
	"syscall"
)

// rawConn returns the socket under c for the write pool's non-blocking
// writes, or nil (c is then written by a goroutine of its own).
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

func (w *poolWorker) writeFD(fd uintptr) bool {
	for w.written < len(w.out) {
		n, err := syscall.Write(int(fd), w.out[w.written:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil && err != syscall.EAGAIN {
			w.err = err
		}
		if n <= 0 || err != nil {
			break
		}
		w.written += n
	}
	return true // never wait for room here: a slow client gets its own goroutine
}
