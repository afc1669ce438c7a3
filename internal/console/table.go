package console

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/batonhq/baton/internal/control"
)

// Table writes st as of now: a header line for baton itself, then one row
// per worker (slot, pid, gen, state, uptime, restarts, cpu, mem, status).
// A worker's cpu is its share of one CPU since prev (an earlier status of
// the same baton, for --watch), or over its whole life when prev is nil
// or does not have it.
func Table(w io.Writer, st *control.Status, prev *control.Status, now time.Time) error {
	var head []string
	head = append(head, fmt.Sprintf("baton pid %d", st.PID))
	if st.Version != "" {
		head = append(head, "version "+st.Version)
	}
	if st.Unit != "" {
		head = append(head, "unit "+st.Unit)
	}
	if st.Config != "" {
		head = append(head, "config "+st.Config)
	}
	phase := st.Phase
	if st.StopIn > 0 {
		phase = fmt.Sprintf("stopping in %.1fs: %s (stop.delay)", st.StopIn, st.Phase)
	}
	head = append(head, "up "+duration(now.Sub(st.Started)), phase)
	if st.Generation > 0 {
		head = append(head, fmt.Sprintf("generation %d", st.Generation))
	}
	if st.TargetWorkers != st.ConfigWorkers {
		head = append(head, fmt.Sprintf("scaled to %d, config %d", st.TargetWorkers, st.ConfigWorkers))
	}
	for _, l := range st.Listeners {
		head = append(head, l.Name+"="+l.Address)
	}
	if st.Balance != "" && st.BalanceAuto != "" {
		head = append(head, "balance "+st.Balance+" (auto)")
	} else if st.Balance != "" {
		head = append(head, "balance "+st.Balance)
	}
	b := st.Budget
	budget := fmt.Sprintf("restarts %d/%d in %s", b.Used, b.Limit, duration(time.Duration(b.WindowSeconds*float64(time.Second))))
	if b.Spent {
		budget += " (gave up)"
	}
	head = append(head, budget)
	if r := st.LastReload; r != nil {
		ago := duration(now.Sub(r.At)) + " ago"
		if r.OK {
			head = append(head, "last reload ok "+ago)
		} else {
			head = append(head, "last reload failed "+ago+": "+r.Error)
		}
	}
	if _, err := fmt.Fprintln(w, Printable(strings.Join(head, " · "))); err != nil {
		return err
	}
	var rows bytes.Buffer
	tw := tabwriter.NewWriter(&rows, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "slot\tpid\tgen\tstate\tuptime\t↺\tcpu\tmem\tstatus")
	for _, wk := range st.Workers {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", wk.Slot, wk.PID, wk.Generation, Printable(wk.State),
			duration(now.Sub(wk.Started)), wk.Restarts, cpu(wk, prev, now), mem(wk.RSSBytes), oneLine(wk.Status))
	}
	if len(st.Workers) == 0 {
		fmt.Fprintln(tw, "-\t-\t-\t-\t-\t-\t-\t-\tno worker")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(rows.String(), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// cpu is wk's share of one CPU since prev's sample of it, else since it
// started.
func cpu(wk control.StatusWorker, prev *control.Status, now time.Time) string {
	secs, over := wk.CPUSeconds, now.Sub(wk.Started)
	if prev != nil {
		for _, p := range prev.Workers {
			if p.PID == wk.PID && p.Started.Equal(wk.Started) {
				secs -= p.CPUSeconds
				over = now.Sub(prev.At)
			}
		}
	}
	if over <= 0 {
		return "0%"
	}
	return fmt.Sprintf("%.0f%%", 100*secs/over.Seconds())
}

// mem is a byte count as pm2 shows it.
func mem(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n < 1<<20:
		return fmt.Sprintf("%.1fkb", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1fmb", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1fgb", float64(n)/(1<<30))
}

// duration is d as pm2 shows uptimes: 12s, 5m, 3h, 2D.
func duration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dD", int(d.Hours()/24))
}

// oneLine keeps a worker's STATUS= text from breaking the table: white
// space controls become spaces, the rest is Printable, and a text longer
// than 60 characters is cut, never inside an escape.
func oneLine(s string) string {
	s = spaces.Replace(s)
	if p := Printable(s); utf8.RuneCountInString(p) <= 60 {
		return p
	}
	var b strings.Builder
	n := 0
	for p := range pieces(s) {
		if n += utf8.RuneCountInString(p); n > 57 {
			break
		}
		b.WriteString(p)
	}
	return b.String() + "..."
}

var spaces = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ", "\v", " ", "\f", " ")
