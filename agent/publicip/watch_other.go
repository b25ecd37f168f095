//go:build !linux

package publicip

import "errors"

func subscribeAddrChanges() (<-chan struct{}, func(), error) {
	return nil, nil, errors.New("address notifications are implemented on Linux only")
}
