package quictransport

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoSupported: Linux segments one large UDP write into packets of a given
// size (UDP_SEGMENT, since 4.18); where it fails, a connection stops asking.
const gsoSupported = true

// gsoOOB is the control message that makes one write of n*size bytes go out
// as packets of size bytes (the last may be shorter).
func gsoOOB(size int) []byte {
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	return oob
}
