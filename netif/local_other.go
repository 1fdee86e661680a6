//go:build !linux

package netif

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// errNoNetlink is what LocalAddrs and WatchAddrs return off Linux.
var errNoNetlink = fmt.Errorf("reading local addresses needs Linux: %w", errors.ErrUnsupported)

// LocalAddrs fails off Linux.
func LocalAddrs(ipv6 bool, exceptLink string) ([]netip.Addr, error) { return nil, errNoNetlink }

// WatchAddrs fails off Linux.
func WatchAddrs(ctx context.Context, exceptLink string, changed func()) error { return errNoNetlink }
