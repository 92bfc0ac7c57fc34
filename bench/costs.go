package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Where the time of a call goes, per op, measured around every interleaved
// round of a variant (variants run one at a time, so the deltas are theirs):
//
//   - client CPU: this process's user+system time (getrusage), which on a
//     2-core machine shared with the database competes with the server;
//   - server CPU: the user+system time of the database's processes
//     (postgres backends, mariadbd), read from /proc;
//   - writes and bytes on the wire: counted by a net.Conn wrapper on every
//     connection of the path. A driver writes one message batch per round
//     trip (pgx: Bind/Execute/Sync; MySQL: one command packet), so writes
//     per op are round trips per op.
//
// SQLite has no server and no wire: only the client CPU applies.

// wire counts what the database connections of this process sent and
// received.
var wire struct {
	writes, sent, recv atomic.Int64
}

type countingConn struct{ net.Conn }

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	wire.writes.Add(1)
	wire.sent.Add(int64(n))
	return n, err
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	wire.recv.Add(int64(n))
	return n, err
}

var dialer net.Dialer

func countingDial(ctx context.Context, network, addr string) (net.Conn, error) {
	addr, err := proxied(addr)
	if err != nil {
		return nil, err
	}
	c, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return countingConn{c}, nil
}

// costs is a snapshot of the counters.
type costs struct {
	client, server     time.Duration
	writes, sent, recv int64
	allocs, bytes      uint64 // this process's heap allocations
}

func snapshot(server string) costs {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return costs{
		allocs: ms.Mallocs,
		bytes:  ms.TotalAlloc,
		client: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		server: serverCPU(server),
		writes: wire.writes.Load(),
		sent:   wire.sent.Load(),
		recv:   wire.recv.Load(),
	}
}

func (c costs) sub(d costs) costs {
	return costs{client: c.client - d.client, server: c.server - d.server,
		writes: c.writes - d.writes, sent: c.sent - d.sent, recv: c.recv - d.recv,
		allocs: c.allocs - d.allocs, bytes: c.bytes - d.bytes}
}

func (c costs) add(d costs) costs {
	return costs{client: c.client + d.client, server: c.server + d.server,
		writes: c.writes + d.writes, sent: c.sent + d.sent, recv: c.recv + d.recv,
		allocs: c.allocs + d.allocs, bytes: c.bytes + d.bytes}
}

var clockTick = 100 // USER_HZ: /proc reports CPU time in these ticks

// serverCPU sums the CPU time of every process whose command name is comm
// ("" for none). The database runs on this machine (loopback).
func serverCPU(comm string) time.Duration {
	if comm == "" {
		return 0
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open || s[open+1:close] != comm {
			continue
		}
		// Fields after the command: state is field 3; utime and stime are
		// fields 14 and 15.
		f := strings.Fields(s[close+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * time.Second / time.Duration(clockTick)
}

// serverComm is the command name of a path's database processes.
func serverComm(dialect string) string {
	switch dialect {
	case "postgres":
		return "postgres"
	case "mysql":
		if serverCPU("mariadbd") > 0 {
			return "mariadbd"
		}
		return "mysqld"
	}
	return ""
}
