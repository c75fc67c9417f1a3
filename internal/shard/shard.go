// Package shard splits the run IDs between several exporter instances, as
// kube-state-metrics shards objects: each instance owns the IDs whose
// stable hash falls in its shard and ignores the others, whatever the order
// or source of the IDs. The hash is Prometheus' own hashmod relabel action,
// so a Prometheus probe job can send each run's /probe to its owner.
package shard

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Assignment is this instance's shard: it owns the IDs with
// hash mod Count == Index.
type Assignment struct {
	Index, Count int
}

// New checks the flags' values; errors name the flag.
func New(index, count int) (Assignment, error) {
	if count < 1 {
		return Assignment{}, fmt.Errorf("--shard.count: must be at least 1, not %d", count)
	}
	if index < 0 || index >= count {
		return Assignment{}, fmt.Errorf("--shard.index: must be from 0 to --shard.count-1 (%d), not %d", count-1, index)
	}
	return Assignment{Index: index, Count: count}, nil
}

// IndexFromHostname takes the shard index from the host name's trailing
// ordinal, as a StatefulSet names its pods (name-3 -> 3).
func IndexFromHostname(hostname string) (int, error) {
	i := strings.LastIndexByte(hostname, '-')
	if i < 0 || i == len(hostname)-1 {
		return 0, fmt.Errorf("--shard.from-hostname: host name %q does not end in -<number>, as a StatefulSet pod's does", hostname)
	}
	n, err := strconv.Atoi(hostname[i+1:])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--shard.from-hostname: host name %q does not end in -<number>, as a StatefulSet pod's does", hostname)
	}
	return n, nil
}

// Owns reports whether this instance owns run id.
func (a Assignment) Owns(id string) bool {
	return a.Count <= 1 || Of(id, a.Count) == a.Index
}

// Of returns the shard of run id among count: Prometheus' hashmod relabel
// action (model/relabel) applied to the lower-case ID, that is the last 8
// bytes of its MD5 sum as a big-endian integer, mod count. Stable across
// processes, versions and machines, so a restart keeps the assignment, and
// the same in this exporter and in a Prometheus relabel rule.
func Of(id string, count int) int {
	sum := md5.Sum([]byte(strings.ToLower(id)))
	return int(binary.BigEndian.Uint64(sum[8:]) % uint64(count))
}

// Filter returns the IDs this instance owns, in their order.
func (a Assignment) Filter(ids []string) []string {
	if a.Count <= 1 {
		return ids
	}
	out := make([]string, 0, len(ids)/a.Count+1)
	for _, id := range ids {
		if a.Owns(id) {
			out = append(out, id)
		}
	}
	return out
}

// Register exports workflow_runs_exporter_shard{index,count} = 1, so that
// dashboards can tell the shards apart and see a missing one.
func (a Assignment) Register(reg prometheus.Registerer) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "workflow_runs_exporter_shard",
		Help:        "The shard of the run IDs this instance owns; always 1.",
		ConstLabels: prometheus.Labels{"index": strconv.Itoa(a.Index), "count": strconv.Itoa(a.Count)},
	})
	g.Set(1)
	return reg.Register(g)
}

var errNoHostname = errors.New("--shard.from-hostname: the host name is empty")

// FromFlags resolves the three --shard.* flags: from-hostname takes the
// index from hostname instead of --shard.index.
func FromFlags(index, count int, fromHostname bool, hostname string) (Assignment, error) {
	if fromHostname {
		if hostname == "" {
			return Assignment{}, errNoHostname
		}
		i, err := IndexFromHostname(hostname)
		if err != nil {
			return Assignment{}, err
		}
		if i >= count {
			return Assignment{}, fmt.Errorf("--shard.from-hostname: host name %q gives index %d, but --shard.count is %d", hostname, i, count)
		}
		index = i
	}
	return New(index, count)
}
