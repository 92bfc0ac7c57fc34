package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// The network between an application and its database, for -delays: a
// TCP proxy that holds every chunk it reads, in either direction, for the
// one-way delay before writing it on, in order. It runs as a child process
// (bench -proxy TARGET -proxy-delay D), so that its CPU and allocations are
// not counted as the client's. The kernel's timer slack adds some tens of
// µs to each delay; the bare rows' p50 latency at 1 client shows the round
// trip as measured (a bare call is three).

// runProxy serves the proxy: it prints its address, then relays until
// killed.
func runProxy(target string, delay time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				return
			}
			go delayed(s, c, delay)
			delayed(c, s, delay)
		}()
	}
}

// delayed copies src to dst, writing each chunk delay after it was read.
func delayed(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 4096)
	go func() {
		defer dst.Close()
		for c := range q {
			sleepUntil(c.due)
			if _, err := dst.Write(c.b); err != nil {
				for range q {
				}
				return
			}
		}
	}()
	for {
		b := make([]byte, 32<<10)
		n, err := src.Read(b)
		if n > 0 {
			q <- chunk{b[:n], time.Now().Add(delay)}
		}
		if err != nil {
			close(q)
			return
		}
	}
}

// sleepUntil sleeps in the kernel: the Go runtime's own timers wake an
// idle process no sooner than a millisecond later (its network poller
// waits in whole milliseconds), which would turn 0.25 ms into more than 1.
func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		ts := syscall.NsecToTimespec(int64(d))
		_ = syscall.Nanosleep(&ts, nil)
	}
}

// proxies are the running proxy processes at netDelay, by target.
var proxies struct {
	sync.Mutex
	delay time.Duration
	addr  map[string]string
	procs []*exec.Cmd
}

// setDelay makes every new database connection go through a proxy of
// one-way delay d (none for 0), ending the proxies of the former delay.
func setDelay(d time.Duration) {
	proxies.Lock()
	defer proxies.Unlock()
	for _, p := range proxies.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	proxies.procs, proxies.addr, proxies.delay = nil, map[string]string{}, d
}

// proxied is the address to dial for target at the current delay.
func proxied(target string) (string, error) {
	proxies.Lock()
	defer proxies.Unlock()
	if proxies.delay == 0 {
		return target, nil
	}
	if a, ok := proxies.addr[target]; ok {
		return a, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(self, "-proxy", target, "-proxy-delay", proxies.delay.String())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return "", fmt.Errorf("proxy for %s: %w", target, err)
	}
	a := line[:len(line)-1]
	proxies.addr[target], proxies.procs = a, append(proxies.procs, cmd)
	return a, nil
}
