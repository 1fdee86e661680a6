package iptables

import (
	"errors"
	"reflect"
	"testing"
)

func TestFakeSetsLoad(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // Dump after Load
	}{
		{
			name: "modelled sets, sorted by name and member",
			text: "create B hash:ip family inet hashsize 1024 maxelem 65536\n" +
				"add B 10.96.0.10\nadd B 10.96.0.9\n" +
				"# a comment\n\n" +
				"create A hash:ip,port family inet6 hashsize 1024 maxelem 65536\nadd A fd00::1,udp:53\n",
			want: "create A hash:ip,port family inet6 hashsize 1024 maxelem 65536\nadd A fd00::1,udp:53\n" +
				"create B hash:ip family inet hashsize 1024 maxelem 65536\nadd B 10.96.0.9\nadd B 10.96.0.10\n",
		},
		{
			name: "options kept as loaded",
			text: "create LB hash:ip,port,net family inet hashsize 64 maxelem 1000 bucketsize 12 initval 0x95f3c355\n" +
				"add LB 10.96.0.1,tcp:80,10.0.0.0/8\n",
			want: "create LB hash:ip,port,net family inet hashsize 64 maxelem 1000 bucketsize 12 initval 0x95f3c355\n" +
				"add LB 10.96.0.1,tcp:80,10.0.0.0/8\n",
		},
		{
			name: "foreign types and options kept verbatim, members in load order",
			text: "create P hash:net,port family inet hashsize 1024 maxelem 65536\nadd P 10.1.0.0/16,tcp:80\nadd P 10.0.0.0/8,tcp:80\n" +
				"create T hash:ip family inet hashsize 1024 maxelem 65536 timeout 300\nadd T 10.0.0.2 timeout 12\n" +
				"create M hash:ip family inet hashsize 1024 maxelem 65536\nadd M 10.0.0.2 nomatch\n" +
				"create C bitmap:port range 0-65535 counters\nadd C 30080 packets 0 bytes 0\n",
			want: "create C bitmap:port range 0-65535 counters\nadd C 30080 packets 0 bytes 0\n" +
				"create M hash:ip family inet hashsize 1024 maxelem 65536\nadd M 10.0.0.2 nomatch\n" +
				"create P hash:net,port family inet hashsize 1024 maxelem 65536\nadd P 10.1.0.0/16,tcp:80\nadd P 10.0.0.0/8,tcp:80\n" +
				"create T hash:ip family inet hashsize 1024 maxelem 65536 timeout 300\nadd T 10.0.0.2 timeout 12\n",
		},
		{
			name: "bitmap:port modelled, members sorted numerically",
			text: "create P bitmap:port range 0-65535\nadd P 30080\nadd P 8193\nadd P 30001\n" +
				"create OWNED bitmap:port range 8192-16383\n",
			want: "create OWNED bitmap:port range 8192-16383\n" +
				"create P bitmap:port range 0-65535\nadd P 8193\nadd P 30001\nadd P 30080\n",
		},
		{
			name: "skbinfo modelled as ipset save prints it, a full mask dropped",
			text: "create SC hash:ip,port family inet hashsize 1024 maxelem 65536 skbinfo bucketsize 12 initval 0x2b29a6d5\n" +
				"add SC 10.96.0.2,udp:53 skbmark 0x2002/0xffffffff\nadd SC 10.96.0.1,tcp:80 skbmark 0x2001\n",
			want: "create SC hash:ip,port family inet hashsize 1024 maxelem 65536 skbinfo bucketsize 12 initval 0x2b29a6d5\n" +
				"add SC 10.96.0.1,tcp:80 skbmark 0x2001\nadd SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "skbinfo sets the fake cannot hold are foreign",
			text: "create MASK hash:ip,port family inet skbinfo\nadd MASK 10.96.0.1,tcp:80 skbmark 0x2001/0xffff\n" +
				"create NOMARK hash:ip family inet skbinfo\nadd NOMARK 10.96.0.1\n" +
				"create PRIO hash:ip family inet skbinfo\nadd PRIO 10.96.0.1 skbprio 1:1\n" +
				"create NET hash:net family inet skbinfo\nadd NET 10.0.0.0/8 skbmark 0x1\n" +
				"create NOSKB hash:ip family inet\nadd NOSKB 10.96.0.1 skbmark 0x1\n",
			want: "create MASK hash:ip,port family inet skbinfo\nadd MASK 10.96.0.1,tcp:80 skbmark 0x2001/0xffff\n" +
				"create NET hash:net family inet skbinfo\nadd NET 10.0.0.0/8 skbmark 0x1\n" +
				"create NOMARK hash:ip family inet skbinfo\nadd NOMARK 10.96.0.1\n" +
				"create NOSKB hash:ip family inet\nadd NOSKB 10.96.0.1 skbmark 0x1\n" +
				"create PRIO hash:ip family inet skbinfo\nadd PRIO 10.96.0.1 skbprio 1:1\n",
		},
		{
			name: "host nets without a length",
			text: "create N hash:net family inet hashsize 1024 maxelem 65536\nadd N 10.1.2.3\nadd N 10.0.0.0/8\n",
			want: "create N hash:net family inet hashsize 1024 maxelem 65536\nadd N 10.0.0.0/8\nadd N 10.1.2.3/32\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewFakeSets()
			if err := s.Load(tt.text); err != nil {
				t.Fatal(err)
			}
			if got := s.Dump(); got != tt.want {
				t.Errorf("Dump:\n%s\nwant:\n%s", got, tt.want)
			}
			if calls := s.Calls(); len(calls) != 0 {
				t.Errorf("Load counted calls: %v", calls)
			}
		})
	}
}

func TestFakeSetsLoadAddsToExisting(t *testing.T) {
	s := NewFakeSets()
	if err := s.CreateSet(Set{Name: "A", Type: HashIP}); err != nil {
		t.Fatal(err)
	}
	if err := s.Load("create P bitmap:port range 0-65535\n"); err != nil {
		t.Fatal(err)
	}
	if err := s.Load("add A 10.0.0.1\nadd P 30080\n"); err != nil {
		t.Fatal(err)
	}
	want := "create A hash:ip family inet hashsize 1024 maxelem 65536\nadd A 10.0.0.1\n" +
		"create P bitmap:port range 0-65535\nadd P 30080\n"
	if got := s.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, want)
	}
}

func TestFakeSetsLoadErrors(t *testing.T) {
	const seed = "create A hash:ip family inet hashsize 1024 maxelem 65536\nadd A 10.0.0.1\n"
	tests := []struct {
		name string
		text string
		want error // a typed error, or nil for any
	}{
		{name: "set created twice", text: "create B hash:ip\ncreate B hash:net\n", want: ErrExists},
		{name: "existing set created", text: "create A hash:ip family inet\n", want: ErrExists},
		{name: "member of an unknown set", text: "add C 10.0.0.1\n", want: ErrNotFound},
		{name: "member twice", text: "create B hash:ip\nadd B 10.0.0.1\nadd B 10.0.0.1\n", want: ErrExists},
		{name: "member already there", text: "add A 10.0.0.1\n", want: ErrExists},
		{name: "member of the other family", text: "create B hash:ip family inet\nadd B fd00::1\n"},
		{name: "member not fitting the type", text: "create B hash:ip,port family inet\nadd B 10.0.0.1\n"},
		{name: "bad port", text: "create B hash:ip,port family inet\nadd B 10.0.0.1,tcp:http\n"},
		{name: "unmasked net", text: "create B hash:net family inet\nadd B 10.0.0.1/8\n"},
		{name: "unknown line", text: "flush A\n"},
		{name: "short line", text: "create B\n"},
		{name: "member options in a modelled set", text: "add A 10.0.0.2 timeout 5\n"},
		{name: "mark in a set without skbinfo", text: "add A 10.0.0.2 skbmark 0x1\n"},
		{name: "skbinfo member twice, other mark", text: "create S hash:ip skbinfo\nadd S 10.0.0.1 skbmark 0x1\nadd S 10.0.0.1 skbmark 0x2\n", want: ErrExists},
		{name: "skbinfo member with mark 0", text: "create S hash:ip skbinfo\nadd S 10.0.0.1 skbmark 0x0\n"},
		{name: "port outside the range", text: "create P bitmap:port range 8192-16383\nadd P 100\n"},
		{name: "bitmap member with a protocol", text: "create P bitmap:port range 0-65535\nadd P tcp:80\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewFakeSets()
			if err := s.Load(seed); err != nil {
				t.Fatal(err)
			}
			err := s.Load("create OK hash:ip\n" + tt.text)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Load = %v, want an error (%v)", err, tt.want)
			}
			if got := s.Dump(); got != seed {
				t.Errorf("failed Load changed the state:\n%s", got)
			}
		})
	}
}

func TestFakeSetsForeignSet(t *testing.T) {
	s := NewFakeSets()
	referenced := false
	s.Referenced = func(string) bool { return referenced }
	if err := s.Load("create P hash:net,port family inet hashsize 1024 maxelem 65536\nadd P 10.0.0.0/8,tcp:80\n"); err != nil {
		t.Fatal(err)
	}
	names, err := s.ListSets()
	if err != nil || !reflect.DeepEqual(names, []string{"P"}) {
		t.Errorf("ListSets = %q, %v", names, err)
	}
	e := Entry{Addr: addr("10.0.0.1")}
	_, err = s.ListEntries("P")
	for what, err := range map[string]error{
		"ListEntries": err, "AddEntry": s.AddEntry("P", e), "DelEntry": s.DelEntry("P", e),
	} {
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s of a foreign set: %v, want ErrUnsupported", what, err)
		}
	}
	if err := s.CreateSet(Set{Name: "P", Type: HashIP}); !errors.Is(err, ErrExists) {
		t.Errorf("CreateSet of its name: %v, want ErrExists", err)
	}
	referenced = true
	if err := s.DestroySet("P"); !errors.Is(err, ErrInUse) {
		t.Errorf("DestroySet while referenced: %v, want ErrInUse", err)
	}
	referenced = false
	if err := s.DestroySet("P"); err != nil {
		t.Errorf("DestroySet: %v", err)
	}
	if got := s.Dump(); got != "" {
		t.Errorf("Dump after DestroySet:\n%s", got)
	}
}

func TestFakeSetsFailOn(t *testing.T) {
	boom := errors.New("boom")
	s := NewFakeSets()
	if err := s.CreateSet(Set{Name: "A", Type: HashIP}); err != nil {
		t.Fatal(err)
	}
	e := Entry{Addr: addr("10.0.0.1")}
	s.FailOn(MethodAddEntry, "A", boom)
	s.FailOn(MethodListSets, "", boom)
	hooked := false
	s.Hook = func(string, ...string) error { hooked = true; return nil }
	if err := s.AddEntry("A", e); !errors.Is(err, boom) || err.Error() != "adding 10.0.0.1 to ipset A: boom" {
		t.Errorf("AddEntry = %v, want the wrapped injected error", err)
	}
	if hooked {
		t.Error("Hook called after an injected failure")
	}
	if _, err := s.ListSets(); err == nil || err.Error() != "listing ipsets: boom" {
		t.Errorf("ListSets = %v, want the wrapped injected error", err)
	}
	if err := s.CreateSet(Set{Name: "B", Type: HashIP}); err != nil {
		t.Errorf("CreateSet of another method: %v", err)
	}
	if got := s.Calls()[MethodAddEntry]; got != 1 {
		t.Errorf("failed AddEntry counted %d times, want 1", got)
	}
	s.FailOn(MethodAddEntry, "A", nil)
	if err := s.AddEntry("A", e); err != nil {
		t.Errorf("after FailOn(nil): %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("FailOn with a misspelt method did not panic")
		}
	}()
	s.FailOn("AddEntrys", "", boom)
}
