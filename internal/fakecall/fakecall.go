// Package fakecall is the call recorder the kube-ipvs test fakes share
// (ipvs.Fake, iptables.Fake and FakeSets, netif.FakeAddrs and FakeSysctl).
// It counts calls by method, knows which methods only read, and injects
// failures by method and key. A method name it was not told about makes it
// panic, so a misspelt name in a test or in a fake cannot go unnoticed.
package fakecall

import (
	"fmt"
	"maps"
	"sync"
)

// Recorder counts the calls of one fake and holds its injected failures.
// K is what a failure is keyed by besides the method (a virtual server, a
// chain, an address…); the zero K stands for "any key". A Recorder is safe
// for concurrent use and takes no lock of its owner, so a fake may call it
// with or without holding its own.
type Recorder[K comparable] struct {
	owner   string          // "ipvs.Fake", for panic messages
	methods map[string]bool // method -> only reads

	mu    sync.Mutex
	calls map[string]int
	fails map[failure[K]]error
	// readOnly counts calls of write methods that turned out to only read
	// (see CountAsRead).
	readOnly int
}

type failure[K comparable] struct {
	method string
	key    K
}

// New returns a Recorder for the fake named owner whose methods are reads
// (they only look) and writes (all the others).
func New[K comparable](owner string, reads, writes []string) *Recorder[K] {
	r := &Recorder[K]{
		owner:   owner,
		methods: make(map[string]bool, len(reads)+len(writes)),
		calls:   map[string]int{},
		fails:   map[failure[K]]error{},
	}
	for _, m := range reads {
		r.methods[m] = true
	}
	for _, m := range writes {
		r.methods[m] = false
	}
	return r
}

// check panics unless method is one of the owner's.
func (r *Recorder[K]) check(what, method string) {
	if _, ok := r.methods[method]; !ok {
		panic(fmt.Sprintf("%s.%s: unknown method %q", r.owner, what, method))
	}
}

// Begin counts one call of method and returns the failure injected for it:
// the one for the first of keys that has one, else the one for the zero K.
// It returns nil when nothing is injected.
func (r *Recorder[K]) Begin(method string, keys ...K) error {
	r.check("Begin", method)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[method]++
	for _, k := range keys {
		if err, ok := r.fails[failure[K]{method, k}]; ok {
			return err
		}
	}
	var zero K
	return r.fails[failure[K]{method, zero}]
}

// CountAsRead records that a call of a write method, already counted by
// Begin, only read: the real adapter looked, found nothing to change and
// wrote nothing. It moves that call from Writes to Reads; Calls still
// counts it under its method.
func (r *Recorder[K]) CountAsRead() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readOnly++
}

// FailOn makes every later call of method with key fail with err; the zero
// K matches every key. A nil err removes the failure. It panics on a method
// the owner does not have.
func (r *Recorder[K]) FailOn(method string, key K, err error) {
	r.check("FailOn", method)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fails, failure[K]{method, key})
		return
	}
	r.fails[failure[K]{method, key}] = err
}

// Calls returns a copy of the counts by method since New or Reset, failed
// calls included; methods never called are absent.
func (r *Recorder[K]) Calls() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.calls)
}

// Reset zeroes the counts; injected failures stay.
func (r *Recorder[K]) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.calls)
	r.readOnly = 0
}

// Reads returns the number of calls of read methods, plus the write calls
// that only read (CountAsRead).
func (r *Recorder[K]) Reads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.countLocked(true) + r.readOnly
}

// Writes returns the number of calls of write methods, failed or not, less
// those that only read (CountAsRead).
func (r *Recorder[K]) Writes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.countLocked(false) - r.readOnly
}

func (r *Recorder[K]) countLocked(reads bool) int {
	n := 0
	for m, c := range r.calls {
		if r.methods[m] == reads {
			n += c
		}
	}
	return n
}
