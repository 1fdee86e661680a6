package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kube-ipvs/kube-ipvs/inspect"
)

// The subcommands that ask the running agent (see debugserver.go):
//
//	kube-ipvs show [-o table|json] [--debug-socket PATH]
//	kube-ipvs explain [-o table|json] [--from ADDR] [--debug-socket PATH] ADDR:PORT[/PROTO]

// inspectUsage is the usage of show and explain.
const inspectUsage = `usage:
  kube-ipvs show [-o table|json] [--debug-socket PATH]
      every virtual server kube-ipvs made on this node: its Service, port and kind,
      and each real server with its pod, node, conditions, weight and counters
  kube-ipvs explain [-o table|json] [--from ADDR] [--debug-socket PATH] ADDR:PORT[/PROTO]
      what happens on this node to a new connection to ADDR:PORT (protocol tcp unless
      /udp or /sctp): which virtual server, Service and endpoints, masquerade or not and
      by which rule, or why nothing serves it; from outside, a pod and the node, or
      from the source --from
`

// runInspect runs show (args are its flags) or explain and returns the
// exit code: 0, 1 when the agent could not answer, 2 for bad usage.
func runInspect(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kube-ipvs "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, inspectUsage) }
	output := fs.String("o", "table", "output format: table or json")
	socket := fs.String("debug-socket", DefaultDebugSocket, "the unix socket the agent serves show and explain on")
	from := fs.String("from", "", "explain: trace from this source address only")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the agent")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return 2
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "kube-ipvs %s: -o %q: want table or json\n", cmd, *output)
		return 2
	}
	q := url.Values{}
	switch {
	case cmd == "show" && len(pos) == 0:
	case cmd == "explain" && len(pos) == 1:
		if _, _, err := inspect.ParseTarget(pos[0]); err != nil {
			fmt.Fprintf(stderr, "kube-ipvs explain: %v\n", err)
			return 2
		}
		q.Set("target", pos[0])
		if *from != "" {
			q.Set("from", *from)
		}
	default:
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := askAgent(ctx, *socket, cmd, q, *output, stdout); err != nil {
		fmt.Fprintf(stderr, "kube-ipvs %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, which it returns.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// askAgent gets /v1/CMD from the agent on socket and writes it in output's
// format: the agent's JSON as it is, or the table.
func askAgent(ctx context.Context, socket, cmd string, q url.Values, output string, w io.Writer) error {
	path := "/v1/" + cmd
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	body, err := getDebug(ctx, socket, path)
	if err != nil {
		return err
	}
	if output == "json" {
		var b bytes.Buffer
		if err := json.Indent(&b, body, "", "  "); err != nil {
			return fmt.Errorf("reading the agent's answer: %w", err)
		}
		_, err = b.WriteTo(w)
		return err
	}
	switch cmd {
	case "show":
		var s inspect.Show
		if err := json.Unmarshal(body, &s); err != nil {
			return fmt.Errorf("reading the agent's answer: %w", err)
		}
		return inspect.WriteShow(w, s)
	default:
		var e inspect.Explanation
		if err := json.Unmarshal(body, &e); err != nil {
			return fmt.Errorf("reading the agent's answer: %w", err)
		}
		return inspect.WriteExplanation(w, e)
	}
}

// getDebug is GET path on the agent's unix socket; the body of a 200.
func getDebug(ctx context.Context, socket, path string) ([]byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://kube-ipvs"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w on %s (is it running on this node, with this --debug-socket?): %w", errNoAgent, socket, op)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the agent's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e debugError
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("the agent answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
