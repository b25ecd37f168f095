package framework

import "syscall"

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid: true, // its own group: signals reach it and its children, nothing else
		// killed if the test process dies before its cleanup runs. Pdeathsig
		// follows the thread that started the child: callers must not end that
		// OS thread (a goroutine that locked its thread and exits does).
		Pdeathsig: syscall.SIGKILL,
	}
}
