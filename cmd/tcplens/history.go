package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/record"
	"github.com/tcplens/tcplens/internal/render"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

// recordingFlags are --db, --since and --until, shared by history and
// report.
type recordingFlags struct{ db, since, until string }

func (f *recordingFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.db, "db", "", "recording file (default as for record)")
	cmd.Flags().StringVar(&f.since, "since", "", "start of the window: RFC 3339 time, or a duration ago (10m, 2h, 1d)")
	cmd.Flags().StringVar(&f.until, "until", "", "end of the window: RFC 3339 time, now, or a duration ago")
}

// open opens the recording --db names, or the default one.
func (f *recordingFlags) open(ctx context.Context) (*record.Reader, error) {
	if f.db == "" {
		f.db = defaultDB()
	}
	return record.OpenReader(ctx, f.db)
}

func (f *recordingFlags) parse(now time.Time) (record.Window, error) {
	var w record.Window
	var err error
	if f.since != "" {
		if w.Since, err = record.ParseTime(f.since, now); err != nil {
			return w, usageError(fmt.Errorf("--since: %w", err))
		}
	}
	if f.until != "" {
		if w.Until, err = record.ParseTime(f.until, now); err != nil {
			return w, usageError(fmt.Errorf("--until: %w", err))
		}
	}
	if !w.Since.IsZero() && !w.Until.IsZero() && w.Until.Before(w.Since) {
		return w, usageError(fmt.Errorf("--until %s is before --since %s", f.until, f.since))
	}
	return w, nil
}

// historyView is what history prints, and its JSON form.
type historyView struct {
	DB            string            `json:"db"`
	Meta          map[string]string `json:"meta"`
	Since         *time.Time        `json:"since,omitempty"`
	Until         *time.Time        `json:"until,omitempty"`
	Samples       int               `json:"samples"`
	BucketSeconds float64           `json:"bucket_seconds"`
	States        []stateRow        `json:"states"`
	// Ticks has every interval (or the largest totals per bucket): kernel
	// totals, destroy events and retransmitted segments, also between full
	// samples.
	Ticks             []tickRow        `json:"ticks"`
	TickBucketSeconds float64          `json:"tick_bucket_seconds"`
	Findings          []record.Finding `json:"findings"`
	Captures          []record.Capture `json:"captures"`
}

// stateRow is one sample, or the largest counts of a bucket of samples.
type stateRow struct {
	Time    time.Time           `json:"time"`
	Samples int                 `json:"samples"`
	Total   int                 `json:"total"`
	States  analyze.StateCounts `json:"states"`
}

func newHistoryCmd(g *globals) *cobra.Command {
	var (
		win     recordingFlags
		capture int64
		rows    int
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Read a recording back: states over time, the findings timeline and the captured snapshots",
		Example: `  tcplens history --since 10m
  tcplens history --db /tmp/demo.db --since 2026-11-22T03:00:00Z --until 2026-11-22T03:05:00Z --json
  tcplens history --db /tmp/demo.db --capture 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := win.parse(time.Now())
			if err != nil {
				return err
			}
			if rows < 1 {
				return usageError(fmt.Errorf("--rows %d: must be at least 1", rows))
			}
			ctx := cmd.Context()
			rd, err := win.open(ctx)
			if err != nil {
				return err
			}
			defer rd.Close()
			out := cmd.OutOrStdout()
			if cmd.Flags().Changed("capture") {
				d, err := rd.Capture(ctx, capture)
				if err != nil {
					return err
				}
				if g.json {
					return render.JSON(out, d)
				}
				return writeCapture(out, d)
			}
			v := historyView{DB: win.db}
			if !w.Since.IsZero() {
				v.Since = &w.Since
			}
			if !w.Until.IsZero() {
				v.Until = &w.Until
			}
			if v.Meta, err = rd.Meta(ctx); err != nil {
				return err
			}
			samples, err := rd.Samples(ctx, w)
			if err != nil {
				return err
			}
			v.Samples = len(samples)
			var bucket time.Duration
			v.States, bucket = bucketStates(samples, rows)
			v.BucketSeconds = bucket.Seconds()
			ticks, err := rd.Ticks(ctx, w)
			if err != nil {
				return err
			}
			var tickBucket time.Duration
			v.Ticks, tickBucket = bucketTicks(ticks, rows)
			v.TickBucketSeconds = tickBucket.Seconds()
			if v.Findings, err = rd.Findings(ctx, w); err != nil {
				return err
			}
			if v.Captures, err = rd.Captures(ctx, w); err != nil {
				return err
			}
			if v.States == nil {
				v.States = []stateRow{}
			}
			if v.Findings == nil {
				v.Findings = []record.Finding{}
			}
			if v.Ticks == nil {
				v.Ticks = []tickRow{}
			}
			if v.Captures == nil {
				v.Captures = []record.Capture{}
			}
			if g.json {
				return render.JSON(out, v)
			}
			return writeHistory(out, &v, bucket, tickBucket)
		},
	}
	win.add(cmd)
	cmd.Flags().Int64Var(&capture, "capture", 0, "show one capture's snapshots in full")
	cmd.Flags().IntVar(&rows, "rows", 60, "at most this many rows of states: longer windows show the largest count per time bucket")
	return cmd
}

// niceBuckets are the bucket widths history aggregates to.
var niceBuckets = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// bucketStates returns one row per sample when they fit in rows, else the
// largest count of each state per bucket (a spike stays visible).
func bucketStates(samples []record.Sample, rows int) ([]stateRow, time.Duration) {
	if len(samples) <= rows {
		out := make([]stateRow, 0, len(samples))
		for _, s := range samples {
			out = append(out, stateRow{Time: s.Time, Samples: 1, Total: s.Total, States: s.States})
		}
		return out, 0
	}
	bucket := bucketWidth(samples[len(samples)-1].Time.Sub(samples[0].Time), rows)
	var out []stateRow
	for _, s := range samples {
		t := s.Time.Truncate(bucket)
		if len(out) == 0 || !out[len(out)-1].Time.Equal(t) {
			out = append(out, stateRow{Time: t})
		}
		r := &out[len(out)-1]
		r.Samples++
		r.Total = max(r.Total, s.Total)
		for st, n := range s.States {
			r.States[st] = max(r.States[st], n)
		}
	}
	return out, bucket
}

// bucketWidth is the narrowest nice bucket that shows span in fewer than
// rows rows.
func bucketWidth(span time.Duration, rows int) time.Duration {
	for _, b := range niceBuckets {
		if span/b < time.Duration(rows) {
			return b
		}
	}
	return niceBuckets[len(niceBuckets)-1]
}

// tickRow is one tick, or a bucket of ticks: the largest totals, and the
// sums of destroy events and retransmitted segments.
type tickRow struct {
	Time          time.Time `json:"time"`
	Ticks         int       `json:"ticks"`
	FullSamples   int       `json:"full_samples"`
	TimeWait      int       `json:"time_wait"`
	InUse         int       `json:"in_use"`
	CurrEstab     int       `json:"curr_estab"`
	Orphan        int       `json:"orphan"`
	Closed        *int64    `json:"closed,omitempty"`
	ClosedDropped int64     `json:"closed_dropped,omitempty"` // Closed is a lower bound when > 0
	RetransSegs   int64     `json:"retrans_segs"`
}

// bucketTicks returns one row per tick when they fit in rows, else one per
// bucket.
func bucketTicks(ticks []record.Tick, rows int) ([]tickRow, time.Duration) {
	var bucket time.Duration
	if len(ticks) > rows {
		bucket = bucketWidth(ticks[len(ticks)-1].Time.Sub(ticks[0].Time), rows)
	}
	var out []tickRow
	for _, tk := range ticks {
		t := tk.Time
		if bucket > 0 {
			t = t.Truncate(bucket)
		}
		if bucket == 0 || len(out) == 0 || !out[len(out)-1].Time.Equal(t) {
			out = append(out, tickRow{Time: t})
		}
		r := &out[len(out)-1]
		r.Ticks++
		if tk.SampleID > 0 {
			r.FullSamples++
		}
		r.TimeWait = max(r.TimeWait, tk.TimeWait)
		r.InUse = max(r.InUse, tk.InUse)
		r.CurrEstab = max(r.CurrEstab, tk.CurrEstab)
		r.Orphan = max(r.Orphan, tk.Orphan)
		if tk.Closed != nil {
			if r.Closed == nil {
				r.Closed = new(int64)
			}
			*r.Closed += *tk.Closed
		}
		r.ClosedDropped += tk.ClosedDropped
		r.RetransSegs += tk.Counters["Tcp.RetransSegs"]
	}
	return out, bucket
}

// clock formats times compactly in the local zone.
func clock(t time.Time) string { return t.Local().Format("15:04:05.000") }

func writeHistory(w io.Writer, v *historyView, bucket, tickBucket time.Duration) error {
	where := "this host's network namespace"
	if ns := v.Meta["netns"]; ns != "" {
		where = "network namespace " + ns
	}
	fmt.Fprintf(w, "tcplens history: %s, %s", v.DB, where)
	if iv := v.Meta["interval"]; iv != "" {
		fmt.Fprintf(w, ", every %s", iv)
	}
	fmt.Fprintln(w)
	if v.Samples == 0 {
		fmt.Fprintln(w, "no samples in this window")
	} else {
		first, last := v.States[0].Time, v.States[len(v.States)-1].Time
		fmt.Fprintf(w, "%d samples, %s .. %s (%s)\n", v.Samples, first.Local().Format("2006-01-02 15:04:05.000"), clock(last), first.Local().Format("MST"))
	}

	if len(v.States) > 0 {
		fmt.Fprintln(w)
		if bucket > 0 {
			fmt.Fprintf(w, "STATES (largest count per %s)\n", render.Duration(bucket))
		} else {
			fmt.Fprintln(w, "STATES")
		}
		// Only the states that occur in the window get a column.
		var cols []sockdiag.State
		for _, st := range sockdiag.AllStates() {
			for _, r := range v.States {
				if r.States[st] > 0 {
					cols = append(cols, st)
					break
				}
			}
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		hdr := []string{"TIME", "TOTAL"}
		for _, st := range cols {
			hdr = append(hdr, st.String())
		}
		fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
		for _, r := range v.States {
			row := []string{clock(r.Time), strconv.Itoa(r.Total)}
			for _, st := range cols {
				row = append(row, strconv.Itoa(r.States[st]))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	// Ticks add something only when full samples were spaced out.
	if full := countFull(v.Ticks); len(v.Ticks) > 0 && full < sumTicks(v.Ticks) {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "EVERY INTERVAL (kernel totals; full samples were spaced out to stay in the CPU budget: %d of %d intervals)\n", full, sumTicks(v.Ticks))
		if tickBucket > 0 {
			fmt.Fprintf(w, "largest totals and summed events per %s\n", render.Duration(tickBucket))
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "TIME\tTIME_WAIT\tIN_USE\tESTAB+CLOSE_WAIT\tORPHANS\tCLOSED\tRETRANS_SEGS\tFULL\t")
		for _, r := range v.Ticks {
			closed := "-"
			if r.Closed != nil {
				closed = strconv.FormatInt(*r.Closed, 10)
				if r.ClosedDropped > 0 { // a lower bound: say so
					closed = fmt.Sprintf(">=%d (%d lost)", *r.Closed, r.ClosedDropped)
				}
			}
			full := ""
			if r.FullSamples > 0 {
				full = strconv.Itoa(r.FullSamples)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t\n", clock(r.Time), r.TimeWait, r.InUse, r.CurrEstab, r.Orphan, closed, r.RetransSegs, full)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	if len(v.Findings) == 0 {
		fmt.Fprintln(w, "FINDINGS: none")
	} else {
		fmt.Fprintln(w, "FINDINGS")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FROM\tTO\tSAMPLES\tSEVERITY\tID\tTITLE")
		for _, f := range v.Findings {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", clock(f.First), clock(f.Last), f.Samples, strings.ToUpper(f.Severity.String()), f.Rule, f.Title)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	if len(v.Captures) == 0 {
		fmt.Fprintln(w, "CAPTURES: none")
		return nil
	}
	fmt.Fprintln(w, "CAPTURES (show one with --capture ID)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTRIGGER\tFROM\tTO\tSNAPSHOTS\tREASONS")
	for _, c := range v.Captures {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", c.ID, clock(c.Time), clock(c.First), clock(c.Last), c.Snapshots, reasons(c.Reasons, c.SuppressedBefore))
	}
	return tw.Flush()
}

func countFull(rows []tickRow) (n int) {
	for _, r := range rows {
		n += r.FullSamples
	}
	return n
}

func sumTicks(rows []tickRow) (n int) {
	for _, r := range rows {
		n += r.Ticks
	}
	return n
}

func reasons(rs []record.Reason, suppressed int) string {
	parts := make([]string, 0, len(rs)+1)
	for _, r := range rs {
		parts = append(parts, r.String())
	}
	if suppressed > 0 {
		parts = append(parts, fmt.Sprintf("(%d earlier triggers over the rate limit)", suppressed))
	}
	return strings.Join(parts, "; ")
}

func writeCapture(w io.Writer, d *record.CaptureDetail) error {
	fmt.Fprintf(w, "capture %d: triggered %s, %d snapshots %s .. %s\n", d.ID, d.Time.Local().Format("2006-01-02 15:04:05.000 MST"), len(d.Snaps), clock(d.First), clock(d.Last))
	for _, r := range d.Reasons {
		fmt.Fprintf(w, "  %s  %s\n", clock(r.Time), r)
	}
	for _, s := range d.Snaps {
		fmt.Fprintf(w, "\n== %s %s: %d sockets (%s)\n", clock(s.Time), s.Role, s.Total, render.States(s.States))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STATE\tLOCAL\tREMOTE\tRECV-Q\tSEND-Q\tTIMER\tRTT\tRETRANS\tPROCESS")
		for _, sk := range s.Sockets {
			timer := ""
			if sk.Timer != "" {
				timer = sk.Timer + " " + render.Duration(time.Duration(sk.TimerMs)*time.Millisecond)
			}
			rtt := ""
			if sk.RTTus > 0 {
				rtt = render.Duration(time.Duration(sk.RTTus) * time.Microsecond)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", sk.State, sk.Local, sk.Remote, sk.RecvQ, sk.SendQ, timer, rtt, sk.TotalRetrans, sk.Process)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if s.Omitted > 0 {
			fmt.Fprintf(w, "(%d more sockets not kept: --capture-max-sockets)\n", s.Omitted)
		}
		if len(s.TimeWait) > 0 {
			fmt.Fprintln(w, "TIME_WAIT")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SIDE\tLOCAL\tREMOTE\tCOUNT\tYOUNGEST LEFT")
			for _, g := range s.TimeWait {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", g.Side, g.Local, g.Remote, g.Count, render.Duration(time.Duration(g.MaxRemainingMs)*time.Millisecond))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}
