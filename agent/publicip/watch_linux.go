package publicip

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// subscribeAddrChanges joins the rtnetlink IPv4 and IPv6 address groups and
// sends on the returned channel for each change of a global-scope address.
// The channel is closed when reading fails. stop closes the socket and waits
// for the reader to end.
func subscribeAddrChanges() (<-chan struct{}, func(), error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Non-blocking, so reads go through the runtime poller and Close wakes them.
	f := os.NewFile(uintptr(fd), "rtnetlink")
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			switch {
			case errors.Is(err, unix.ENOBUFS):
				// The kernel dropped notifications: something changed.
				notify(ch)
				continue
			case err != nil:
				return
			}
			if addrChanged(buf[:n]) {
				notify(ch)
			}
		}
	}()
	stop := func() {
		f.Close()
		<-done
	}
	return ch, stop, nil
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// addrChanged reports whether b holds a new or deleted address of global
// scope; host and link scope changes can't change the public address.
func addrChanged(b []byte) bool {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return true // unparsable: re-checking costs little
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR && m.Header.Type != unix.RTM_DELADDR {
			continue
		}
		if len(m.Data) < unix.SizeofIfAddrmsg || m.Data[3] == unix.RT_SCOPE_UNIVERSE {
			return true
		}
	}
	return false
}
