package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/client-go/rest"

	"github.com/kube-ipvs/kube-ipvs/kubeapi"
)

// An apiserver that does not answer at start-up is one error line naming
// it, however long it stays away; once it answers, the agent goes on.
func TestWaitForAPIServerSaysOnceWhatIsWrong(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	client, err := kubeapi.New(&rest.Config{Host: "http://" + addr, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	a := &agent{log: zap.New(core)}
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	a.waitForAPIServer(ctx, client) // two attempts, 5 s apart, then ctx ends
	errs := logs.FilterMessage("cannot reach the apiserver; waiting for it, the kernel is left as it is").All()
	if len(errs) != 1 {
		t.Fatalf("%d error lines for an apiserver that stays away, want 1: %v", len(errs), logs.All())
	}
	if s := errs[0].ContextMap()["server"]; s != "http://"+addr {
		t.Errorf("the error names server %v, want http://%s", s, addr)
	}
	if e, _ := errs[0].ContextMap()["error"].(string); !strings.Contains(e, "connection refused") {
		t.Errorf("the error says %q, want the cause (connection refused)", e)
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.2"}`))
	}))
	defer up.Close()
	client, err = kubeapi.New(&rest.Config{Host: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.waitForAPIServer(context.Background(), client); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waitForAPIServer did not return once the apiserver answered")
	}
}
