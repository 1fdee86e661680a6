package inspect

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// WriteJSON writes v as indented JSON, the output of `-o json`.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteShow writes s as the table `kube-ipvs show` prints: laid out like
// `ipvsadm -Ln`, a line per virtual server and, under it, one per real
// server; then the foreign virtual servers.
func WriteShow(w io.Writer, s Show) error {
	state := "synced"
	if !s.Synced {
		state = "not synced yet"
	}
	if s.DryRun {
		state += ", dry-run"
	}
	if _, err := fmt.Fprintf(w, "kube-ipvs on %s (%s, %s) at %s: %d virtual servers, %d foreign\n",
		s.Node, s.Family, state, s.At.UTC().Format(time.RFC3339), len(s.VirtualServers), len(s.Foreign)); err != nil {
		return err
	}
	if s.KernelError != "" {
		fmt.Fprintf(w, "the kernel could not be read: %s\n", s.KernelError)
	}
	var g grid
	g.add(0, "Prot LocalAddress:Port", "Kind", "Service:Port", "Scheduler", "Affinity", "Policy", "")
	g.add(1, "  -> RemoteAddress:Port", "Pod", "Node", "State", "Weight", "ActiveConn", "InActConn",
		"Conns", "InPkts", "OutPkts", "InBytes", "OutBytes", "Draining")
	for _, vs := range s.VirtualServers {
		g.add(0, vsName(vs), vs.Kind, servicePort(vs), scheduler(vs), affinity(vs), vs.TrafficPolicy, vsExtra(vs))
		for _, rs := range vs.RealServers {
			g.add(1, append([]string{"  -> " + rs.Address, dash(rs.Pod), dash(rs.Node), rsState(rs),
				strconv.Itoa(rs.Weight), strconv.Itoa(rs.ActiveConns), strconv.Itoa(rs.InactiveConns)},
				append(statsCells(rs.Stats), draining(rs, s.At))...)...)
		}
	}
	if err := g.write(w); err != nil {
		return err
	}
	if len(s.Foreign) > 0 {
		fmt.Fprintf(w, "\nForeign virtual servers (not kube-ipvs'; it leaves them alone):\n")
		for _, f := range s.Foreign {
			fmt.Fprintf(w, "  %s -s %s\n", f.Key, f.Scheduler)
		}
	}
	return nil
}

// vsName is the virtual server as ipvsadm -Ln names it: "TCP  10.96.0.10:80",
// "FWM  8192".
func vsName(vs VirtualServer) string {
	if vs.Mark != 0 {
		return fmt.Sprintf("FWM  %d", vs.Mark)
	}
	return fmt.Sprintf("%-4s %s", strings.ToUpper(vs.Protocol), vs.Address)
}

func servicePort(vs VirtualServer) string {
	s := vs.Service
	if vs.Port != "" {
		s += ":" + vs.Port
	} else if vs.ServicePort != 0 {
		s += ":" + strconv.Itoa(int(vs.ServicePort))
	}
	return s
}

func scheduler(vs VirtualServer) string {
	if len(vs.Flags) > 0 {
		return vs.Scheduler + " (" + strings.Join(vs.Flags, ",") + ")"
	}
	return vs.Scheduler
}

func affinity(vs VirtualServer) string {
	if vs.SessionAffinityTimeout != 0 {
		return fmt.Sprintf("%s %ds", vs.SessionAffinity, vs.SessionAffinityTimeout)
	}
	return vs.SessionAffinity
}

// vsExtra is what else a virtual server line says: its short circuit,
// source ranges, other claimants, absence from the kernel.
func vsExtra(vs VirtualServer) string {
	var parts []string
	if vs.ShortCircuitMark != 0 {
		parts = append(parts, fmt.Sprintf("short circuit FWM %d", vs.ShortCircuitMark))
	}
	if len(vs.ShortCircuitOf) > 0 {
		parts = append(parts, "for "+strings.Join(vs.ShortCircuitOf, " "))
	}
	if len(vs.SourceRanges) > 0 {
		parts = append(parts, "sources "+strings.Join(vs.SourceRanges, ","))
	}
	if len(vs.AlsoClaimedBy) > 0 {
		parts = append(parts, "also claimed by "+strings.Join(vs.AlsoClaimedBy, ","))
	}
	if !vs.InKernel {
		parts = append(parts, "NOT IN KERNEL")
	}
	return strings.Join(parts, "; ")
}

// rsState is an endpoint's conditions in a word or two.
func rsState(rs RealServer) string {
	var s string
	switch {
	case !rs.InEndpointSlices:
		s = "gone"
	case rs.Ready:
		s = "ready"
	case rs.Serving && rs.Terminating:
		s = "serving,terminating"
	case rs.Terminating:
		s = "terminating"
	default:
		s = "not-ready"
	}
	if rs.Local {
		s += ",local"
	}
	if !rs.InKernel {
		s += ",NOT-IN-KERNEL"
	}
	return s
}

func statsCells(s *Stats) []string {
	if s == nil {
		return []string{"-", "-", "-", "-", "-"}
	}
	return []string{strconv.FormatUint(s.Conns, 10), strconv.FormatUint(s.PacketsIn, 10), strconv.FormatUint(s.PacketsOut, 10),
		bytesString(s.BytesIn), bytesString(s.BytesOut)}
}

// bytesString is a byte count as ipvsadm prints it (1000-based K, M, G).
func bytesString(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return strconv.FormatUint(n, 10)
}

func draining(rs RealServer, at time.Time) string {
	if rs.DrainingSince == nil {
		return "-"
	}
	return "for " + at.Sub(*rs.DrainingSince).Round(time.Second).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteExplanation writes e as the text `kube-ipvs explain` prints: the
// virtual server, then each client's path with the rules that matched,
// the endpoints it may reach and what was assumed, then the notes.
func WriteExplanation(w io.Writer, e Explanation) error {
	fmt.Fprintf(w, "%s/%s\n", e.Address, e.Protocol)
	if vs := e.VirtualServer; vs != nil {
		fmt.Fprintf(w, "virtual server %s -s %s: %s of %s, %s; session affinity %s; traffic policy %s; %d real server(s)\n",
			vs.Key, scheduler(*vs), vs.Kind, vs.Service, kindPort(*vs), affinity(*vs), vs.TrafficPolicy, len(vs.RealServers))
		if x := vsExtra(*vs); x != "" {
			fmt.Fprintf(w, "  %s\n", x)
		}
	} else {
		fmt.Fprintf(w, "no virtual server of kube-ipvs on %s/%s\n", e.Address, e.Protocol)
	}
	for _, p := range e.Paths {
		from := "from " + fromLabel(p)
		fmt.Fprintf(w, "\n%s: %s\n  %s\n", from, strings.ToUpper(p.Verdict), p.Summary)
		writeSteps(w, p.Steps)
		if p.Choice != "" {
			fmt.Fprintf(w, "  endpoints: %s\n", p.Choice)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, ep := range p.Endpoints {
			masq := "source kept"
			if ep.Masquerade {
				masq = "masqueraded"
			}
			fmt.Fprintf(tw, "    -> %s\t%s\t%s\t%s: %s\n", ep.Address, dash(ep.Pod), dash(ep.Node), masq, ep.Why)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, a := range p.Assumptions {
			fmt.Fprintf(w, "  assuming %s (give --from ADDR to trace one source)\n", a)
		}
	}
	if len(e.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range e.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	return nil
}

// writeSteps writes each step as its rule, then what it does as a comment
// under it, like the commented `iptables-save` listing of the README:
//
//	nat KIPVS-SERVICES  -m set --match-set KIPVS-CLUSTER-IP dst,dst -j KIPVS-CLUSTER
//	                    # the destination is a ClusterIP virtual server (KIPVS-CLUSTER-IP)
func writeSteps(w io.Writer, steps []Step) {
	width := 0
	for _, s := range steps {
		width = max(width, utf8.RuneCountInString(s.Where))
	}
	pad := strings.Repeat(" ", width+2)
	for _, s := range steps {
		fmt.Fprintf(w, "    %s%s%s\n", s.Where, pad[utf8.RuneCountInString(s.Where):], s.Rule)
		if s.Does != "" {
			fmt.Fprintf(w, "    %s# %s\n", pad, s.Does)
		}
	}
}

// fromLabel names a path's client.
func fromLabel(p Path) string {
	var who string
	switch p.From {
	case FromOutside:
		who = "outside the cluster"
	case FromPod:
		who = "a pod"
	case FromNode:
		who = "this node"
	default:
		who = p.From
	}
	if p.Source != "" {
		who += " (source " + p.Source + ")"
	}
	return who
}

// grid lays out rows of two kinds as two tables interleaved: the virtual
// server lines are aligned with each other, the real server lines with
// each other, two spaces between columns; the last cell of a row is not
// padded.
type grid struct {
	rows []gridRow
}

type gridRow struct {
	kind  int
	cells []string
}

func (g *grid) add(kind int, cells ...string) { g.rows = append(g.rows, gridRow{kind, cells}) }

func (g *grid) write(w io.Writer) error {
	widths := map[int][]int{}
	for _, r := range g.rows {
		ws := widths[r.kind]
		for i, c := range r.cells[:len(r.cells)-1] {
			if i == len(ws) {
				ws = append(ws, 0)
			}
			ws[i] = max(ws[i], utf8.RuneCountInString(c))
		}
		widths[r.kind] = ws
	}
	var b strings.Builder
	for _, r := range g.rows {
		for i, c := range r.cells {
			b.WriteString(c)
			if i < len(r.cells)-1 {
				b.WriteString(strings.Repeat(" ", widths[r.kind][i]-utf8.RuneCountInString(c)+2))
			}
		}
		line := strings.TrimRight(b.String(), " ")
		b.Reset()
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return err
		}
	}
	return nil
}
