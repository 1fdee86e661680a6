// Package contract holds the checks the adapters' contract suites
// (ipvs/ipvstest, iptables/iptablestest, netif/netiftest) share.
package contract

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// WantErr fails unless err wraps target, and checks its message with
// WantPlainMessage.
func WantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
	WantPlainMessage(t, what, err)
}

// WantPlainMessage fails if err's message says one thing twice in a row
// ("listing X: listing X: …"): an adapter wraps its errors once.
func WantPlainMessage(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	parts := strings.Split(err.Error(), ": ")
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] {
			t.Errorf("%s: error %q says %q twice", what, err, parts[i])
		}
	}
}

// WantEqual fails unless got and want are deeply equal.
func WantEqual[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}
