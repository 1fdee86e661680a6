package measure

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIncomplete(t *testing.T) {
	tab, err := ParseIPVS([]byte(procIPVS))
	if err != nil {
		t.Fatal(err)
	}
	if got := (Layout{Services: 2, Endpoints: 2}).Incomplete(tab); len(got) != 0 {
		t.Errorf("the expected table: %v incomplete", got)
	}
	// Service 1 loses a real server, Service 2 has none, Service 3 is
	// there with another scheduler.
	partial := strings.Replace(procIPVS, "  -> 0AF40103:1F90      Masq    1      0          0\n", "", 1) +
		"TCP  0A601003:0050 wrr\n  -> 0AF40106:1F90      Masq    1      0          0\n  -> 0AF40107:1F90      Masq    1      0          0\n"
	tab, _ = ParseIPVS([]byte(partial))
	if got := (Layout{Services: 4, Endpoints: 2}).Incomplete(tab); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("Incomplete = %v, want [1 2 3]", got)
	}
	l := Layout{Services: 2, Endpoints: 2}
	if l.Complete(0, tab[VSKey{Proto: "TCP", Addr: VS(0)}].Real[:1]) {
		t.Error("one of two real servers is complete")
	}
	extra := append(slices.Clone(tab[VSKey{Proto: "TCP", Addr: VS(0)}].Real), RealServer{Addr: VS(9), Forward: "Masq", Weight: 1})
	if l.Complete(0, extra) {
		t.Error("a real server too many is complete")
	}
}

func TestConvergence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	c := NewConvergence(t0, 1)
	if !c.WantWhole() {
		t.Fatal("the first read is not whole")
	}
	all := make([]int, 1000)
	for i := range all {
		all[i] = i
	}
	c.Whole(at(1), slices.Clone(all))
	if c.WantWhole() || c.Pending() != 1000 || c.Since() != at(1) {
		t.Fatalf("after a whole read with 1000 incomplete: whole %v, pending %d, since %v", c.WantWhole(), c.Pending(), c.Since())
	}
	// Services 0-899 are done: a sample of 32 with one of 900-999 in it
	// keeps the wait going and drops the done ones it saw.
	done := func(i int) bool { return i < 900 }
	var sample []int
	for s := 2; ; s++ {
		sample = c.Sample()
		if len(sample) != SampleSize || len(slices.Compact(slices.Sorted(slices.Values(sample)))) != SampleSize {
			t.Fatalf("sample %v: want %d distinct Services", sample, SampleSize)
		}
		before := c.Pending()
		c.Sampled(at(s), sample, done)
		seen := 0
		for _, i := range sample {
			if done(i) {
				seen++
			}
		}
		if c.Pending() != before-seen {
			t.Fatalf("pending %d after a sample with %d done, from %d", c.Pending(), seen, before)
		}
		if seen < len(sample) {
			if c.WantWhole() || c.Since() != at(s) {
				t.Fatalf("a sample with an incomplete Service: whole %v, since %v", c.WantWhole(), c.Since())
			}
			break
		}
	}
	// Now everything is done: the first sample all complete asks for a
	// whole read, and Since stays at the last incomplete read.
	since := c.Since()
	sample = c.Sample()
	c.Sampled(at(100), sample, func(int) bool { return true })
	if !c.WantWhole() || c.Since() != since {
		t.Fatalf("a sample all complete: whole %v, since %v (want %v)", c.WantWhole(), c.Since(), since)
	}
	// A whole read that still finds a few: they are all checked each time.
	c.Whole(at(101), []int{7, 3, 5})
	sample = c.Sample()
	if !slices.Equal(slices.Sorted(slices.Values(sample)), []int{3, 5, 7}) {
		t.Fatalf("a pending set of 3 sampled as %v", sample)
	}
	c.Sampled(at(102), sample, func(i int) bool { return i != 5 })
	if c.WantWhole() || c.Pending() != 1 || c.Since() != at(102) {
		t.Fatalf("5 still incomplete: whole %v, pending %d, since %v", c.WantWhole(), c.Pending(), c.Since())
	}
	c.Sampled(at(103), c.Sample(), func(int) bool { return true })
	if !c.WantWhole() || c.Pending() != 0 || c.Since() != at(102) {
		t.Fatalf("all done: whole %v, pending %d, since %v", c.WantWhole(), c.Pending(), c.Since())
	}
}
