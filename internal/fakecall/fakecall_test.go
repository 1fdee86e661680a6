package fakecall

import (
	"errors"
	"maps"
	"testing"
)

func newTest() *Recorder[string] {
	return New[string]("test.Fake", []string{"List"}, []string{"Add", "Del"})
}

func TestCounts(t *testing.T) {
	r := newTest()
	for _, m := range []string{"List", "List", "Add", "Del", "Add"} {
		if err := r.Begin(m, "k"); err != nil {
			t.Fatalf("Begin(%s) = %v", m, err)
		}
	}
	r.CountAsRead() // the second Add only looked
	want := map[string]int{"List": 2, "Add": 2, "Del": 1}
	got := r.Calls()
	if !maps.Equal(got, want) {
		t.Errorf("Calls = %v, want %v", got, want)
	}
	if r.Reads() != 3 || r.Writes() != 2 {
		t.Errorf("Reads, Writes = %d, %d; want 3, 2", r.Reads(), r.Writes())
	}
	got["List"] = 99
	if r.Calls()["List"] != 2 {
		t.Error("Calls returned the recorder's own map")
	}
	r.Reset()
	if len(r.Calls()) != 0 || r.Reads() != 0 || r.Writes() != 0 {
		t.Errorf("after Reset: %v, %d reads, %d writes", r.Calls(), r.Reads(), r.Writes())
	}
}

func TestFailOn(t *testing.T) {
	boom, bang := errors.New("boom"), errors.New("bang")
	tests := []struct {
		name   string
		setup  func(r *Recorder[string])
		method string
		keys   []string
		want   error
	}{
		{name: "nothing injected", setup: func(*Recorder[string]) {}, method: "Add", keys: []string{"a"}},
		{
			name:   "exact key",
			setup:  func(r *Recorder[string]) { r.FailOn("Add", "a", boom) },
			method: "Add", keys: []string{"a"}, want: boom,
		},
		{
			name:   "other key",
			setup:  func(r *Recorder[string]) { r.FailOn("Add", "a", boom) },
			method: "Add", keys: []string{"b"},
		},
		{
			name:   "other method",
			setup:  func(r *Recorder[string]) { r.FailOn("Add", "", boom) },
			method: "Del", keys: []string{"a"},
		},
		{
			name:   "zero key is any key",
			setup:  func(r *Recorder[string]) { r.FailOn("Add", "", boom) },
			method: "Add", keys: []string{"a"}, want: boom,
		},
		{
			name:   "call without a key",
			setup:  func(r *Recorder[string]) { r.FailOn("List", "", boom) },
			method: "List", want: boom,
		},
		{
			name:   "call without a key ignores keyed failures",
			setup:  func(r *Recorder[string]) { r.FailOn("List", "a", boom) },
			method: "List",
		},
		{
			name: "first matching key wins over the zero key",
			setup: func(r *Recorder[string]) {
				r.FailOn("Add", "", bang)
				r.FailOn("Add", "b", boom)
			},
			method: "Add", keys: []string{"a", "b"}, want: boom,
		},
		{
			name: "nil removes",
			setup: func(r *Recorder[string]) {
				r.FailOn("Add", "a", boom)
				r.FailOn("Add", "a", nil)
			},
			method: "Add", keys: []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTest()
			tc.setup(r)
			if err := r.Begin(tc.method, tc.keys...); err != tc.want {
				t.Errorf("Begin = %v, want %v", err, tc.want)
			}
			if r.Calls()[tc.method] != 1 {
				t.Errorf("call not counted: %v", r.Calls())
			}
		})
	}
}

func TestFailuresSurviveReset(t *testing.T) {
	r := newTest()
	boom := errors.New("boom")
	r.FailOn("Del", "", boom)
	r.Reset()
	if err := r.Begin("Del"); err != boom {
		t.Errorf("after Reset: Begin = %v, want boom", err)
	}
}

func TestUnknownMethodPanics(t *testing.T) {
	for name, call := range map[string]func(r *Recorder[string]){
		"FailOn": func(r *Recorder[string]) { r.FailOn("Lsit", "", errors.New("x")) },
		"Begin":  func(r *Recorder[string]) { _ = r.Begin("Lsit") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s with a misspelt method did not panic", name)
				}
			}()
			call(newTest())
		})
	}
}
