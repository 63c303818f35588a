package faults

import "syscall"

// sysProcAttr makes the kernel SIGKILL a child when this test process dies
// (a timeout panic, a kill), so no process outlives the suite.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
