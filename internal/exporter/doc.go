// Package exporter serves watch samples as Prometheus metrics, following
// node_exporter's conventions: base units in names, _total on counters,
// one scrape-health gauge.
//
// A background loop (Exporter.Run) takes a sample every interval through a
// watch.Watcher. A scrape only reads the latest sample: it never starts a
// dump and never waits for one, so a host with a million sockets costs one
// dump per interval whatever the number of scrapers. A sample older than
// MaxAge is not served as if it were current: the scrape reports
// tcplens_scrape_success 0 and the sample's age, and no data series.
//
// Every labelled series family is bounded: states and counters are fixed
// lists, per-destination and per-process series keep the top N and sum
// the rest into an "other" series, and findings are bounded by the rule
// ids. So Prometheus cardinality does not depend on what the host does.
package exporter
