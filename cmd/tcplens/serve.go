package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/exporter"
	"github.com/tcplens/tcplens/internal/watch"
)

// maxSeriesCap bounds --max-destinations and --max-processes: the caps
// exist to protect Prometheus, so they cannot be lifted altogether.
const maxSeriesCap = 10000

func newServeCmd(g *globals) *cobra.Command {
	var (
		listen, webConfig  string
		allowRemote, procs bool
		interval, maxAge   time.Duration
		maxDst, maxProc    int
		idle               idleFlags
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Export state counts, kernel counters, port budgets and doctor findings to Prometheus",
		Long: `serve samples the namespace every --interval in the background (a socket dump,
the kernel counters and doctor's rules, as in tcplens doctor) and serves the
latest sample on /metrics. A scrape never starts a dump and never waits for
one. A sample older than --max-age is not served: the scrape then reports
tcplens_scrape_success 0 and the sample's age, without data series.

It listens on loopback only unless --allow-remote is given. TLS and basic
authentication come from --web.config.file, in the format of Prometheus's
exporter-toolkit (the same file node_exporter reads).`,
		Example: `  tcplens serve
  tcplens serve --listen 0.0.0.0:9917 --allow-remote --web.config.file /etc/tcplens/web.yml
  tcplens serve --netns /proc/1234/ns/net --interval 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return usageError(fmt.Errorf("--interval %s: must be at least 100ms", interval))
			}
			if maxAge != 0 && maxAge < interval {
				return usageError(fmt.Errorf("--max-age %s: must be 0 (4 × --interval) or at least --interval (%s)", maxAge, interval))
			}
			for name, v := range map[string]int{"--max-destinations": maxDst, "--max-processes": maxProc} {
				if v < 1 || v > maxSeriesCap {
					return usageError(fmt.Errorf("%s %d: must be between 1 and %d", name, v, maxSeriesCap))
				}
			}
			idleTimeout, err := idle.resolve(cmd.Flags())
			if err != nil {
				return usageError(err)
			}
			remote, err := listenIsRemote(listen)
			if err != nil {
				return usageError(fmt.Errorf("--listen %q: %w", listen, err))
			}
			if remote && !allowRemote {
				return usageError(fmt.Errorf("--listen %s is reachable beyond this host: add --allow-remote (and protect it with --web.config.file)", listen))
			}
			if webConfig != "" {
				if err := web.Validate(webConfig); err != nil {
					return usageError(fmt.Errorf("--web.config.file %s: %w", webConfig, err))
				}
			}
			w, err := watch.New(watch.Options{Netns: g.netns, Interval: interval, IdleTimeout: idleTimeout, Procs: procs, Churn: true})
			if err != nil {
				return usageError(err)
			}
			defer w.Close()
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			exp, err := exporter.New(w, exporter.Options{MaxAge: maxAge, MaxDestinations: maxDst, MaxProcesses: maxProc, Logger: logger})
			if err != nil {
				return usageError(err)
			}
			return serve(cmd.Context(), exp, logger, listen, allowRemote, webConfig, g.netns, interval)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&listen, "listen", "127.0.0.1:9917", "address to serve /metrics on (host:port)")
	fl.BoolVar(&allowRemote, "allow-remote", false, "allow a --listen address reachable from other hosts")
	fl.StringVar(&webConfig, "web.config.file", "", "exporter-toolkit web configuration file for TLS and basic authentication")
	fl.DurationVar(&interval, "interval", 15*time.Second, "time between samples: one socket dump per interval, whatever the number of scrapes")
	fl.DurationVar(&maxAge, "max-age", 0, "oldest sample a scrape serves (0 = 4 × --interval)")
	fl.IntVar(&maxDst, "max-destinations", exporter.DefaultMaxDestinations, `per-destination series kept; the rest is summed as "other"`)
	fl.IntVar(&maxProc, "max-processes", exporter.DefaultMaxProcesses, `per-process CLOSE_WAIT series kept; the rest is summed as "other"`)
	fl.BoolVar(&procs, "procs", true, "find the process owning each socket through /proc (CLOSE_WAIT per process, fd limits)")
	idle.add(fl)
	return cmd
}

// serve runs the sampler and the HTTP server until ctx ends, then shuts the
// server down gracefully.
func serve(ctx context.Context, exp *exporter.Exporter, logger *slog.Logger, listen string, allowRemote bool, webConfig, ns string, interval time.Duration) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	// A name could resolve to a non-loopback address: check what was bound.
	if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !allowRemote && !ap.Addr().IsLoopback() {
		l.Close()
		return usageError(fmt.Errorf("--listen %s bound %s, which is reachable beyond this host: add --allow-remote", listen, ap))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", exp.Handler())
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "tcplens",
		Description: "TCP connection states, port budgets and doctor findings",
		Version:     versionString(),
		Links:       []web.LandingLinks{{Address: "/metrics", Text: "Metrics"}},
	})
	if err != nil {
		l.Close()
		return fmt.Errorf("landing page: %w", err)
	}
	mux.Handle("/", landing)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		exp.Run(ctx)
	}()
	served := make(chan error, 1)
	go func() {
		noSystemd := false
		served <- web.Serve(l, srv, &web.FlagConfig{
			WebListenAddresses: &[]string{listen},
			WebSystemdSocket:   &noSystemd,
			WebConfigFile:      &webConfig,
		}, logger)
	}()
	logger.Info("tcplens serve", "listen", l.Addr().String(), "netns", ns, "interval", interval, "max_age", exp.MaxAge())

	select {
	case err = <-served:
		// The server stopped by itself (a broken web config at runtime).
	case <-ctx.Done():
		shutCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(shutCtx)
		stop()
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
	}
	cancel()
	<-sampled
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("tcplens serve stopped")
	return nil
}

// listenIsRemote parses a host:port listen address and reports whether it
// may be reachable from other hosts. Only loopback IP literals and
// "localhost" count as local: an empty host means every interface, and any
// other name could resolve to anything.
func listenIsRemote(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return false, fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	switch host {
	case "":
		return true, nil
	case "localhost":
		return false, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return true, nil // a host name
	}
	return !ip.IsLoopback(), nil
}
