package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcplens/tcplens/internal/doctor"
)

// Idle timeouts of common load balancers and NAT (DESIGN.md section 5).
var lbIdleTimeouts = map[string]time.Duration{
	"aws-nlb": doctor.DefaultIdleTimeout,
	"aws-alb": 60 * time.Second,
	"azure":   4 * time.Minute,
	"gcp":     10 * time.Minute,
}

// idleFlags are --idle-timeout and --lb, for every command that runs the
// idle-no-keepalive rule (doctor, top, record, serve).
type idleFlags struct {
	timeout time.Duration
	lb      string
}

func (f *idleFlags) add(fl *pflag.FlagSet) {
	fl.DurationVar(&f.timeout, "idle-timeout", doctor.DefaultIdleTimeout, "strictest load balancer or NAT idle timeout on the path (idle-no-keepalive rule)")
	fl.StringVar(&f.lb, "lb", "", "set --idle-timeout from a load balancer: aws-nlb (350s), aws-alb (60s), azure (4m), gcp (10m)")
}

// resolve returns the idle timeout the flags ask for.
func (f *idleFlags) resolve(fl *pflag.FlagSet) (time.Duration, error) {
	if f.timeout <= 0 {
		return 0, fmt.Errorf("--idle-timeout %s: must be positive", f.timeout)
	}
	if f.lb == "" {
		return f.timeout, nil
	}
	d, ok := lbIdleTimeouts[f.lb]
	if !ok {
		return 0, fmt.Errorf("--lb %q: want one of %s", f.lb, strings.Join(slices.Sorted(maps.Keys(lbIdleTimeouts)), ", "))
	}
	if fl.Changed("idle-timeout") {
		return 0, errors.New("--lb and --idle-timeout both set the idle timeout: use one")
	}
	return d, nil
}
