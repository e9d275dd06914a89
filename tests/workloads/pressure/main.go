// pressure pushes one limit on request, for the syscall-family tests.
//
// It prints "ready", waits for a line on stdin, does what -mode says, prints
// one line with what it saw, then waits for stdin to close before exiting
// (so its numbers can still be read from outside).
//
//	-mode fds       open /dev/null until EMFILE (run it under a lowered
//	                RLIMIT_NOFILE); prints "emfile after N"
//	-mode vmas      create -count distinct memory mappings (mmap, then
//	                mprotect every other page so no two neighbours merge);
//	                prints "vmas N" (lines of /proc/self/maps)
//	-mode connect   listen on 127.0.0.1 and connect to itself, keeping every
//	                connection, until connect fails with EADDRNOTAVAIL
//	                (run it in a network namespace with a narrow
//	                ip_local_port_range); prints "eaddrnotavail after N"
//	-mode sleep     time.Sleep(1ms) in a loop for -duration; prints the
//	                p99 of how late each sleep returned, as it saw it
//	-mode timerfd   arms a timerfd -count times (timerfd_settime)
//	-mode backlog   listens (on -port) with a backlog of 1, never accepts,
//	                and connects to itself -count times (the queue overflows)
//	-mode conns     listens on 127.0.0.1 and connects to itself -count
//	                times, keeping every connection (conntrack entries)
//	-mode gomaxprocs  calls runtime.GOMAXPROCS(-count), then for each
//	                further line N on stdin runtime.GOMAXPROCS(N); prints
//	                "gomaxprocs N was M numgc G" after each
//
// After -mode connect has hit EADDRNOTAVAIL it closes 10 of its
// connections, client side first, so that they sit in TIME_WAIT.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	mode := flag.String("mode", "", "fds, vmas, connect or sleep")
	count := flag.Int("count", 10000, "with -mode vmas: how many mappings; timerfd, backlog: how many calls")
	duration := flag.Duration("duration", 3*time.Second, "with -mode sleep: how long")
	port := flag.Int("port", 0, "with -mode backlog: the port to listen on (0: any)")
	flag.Parse()

	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	if !in.Scan() {
		return
	}
	switch *mode {
	case "fds":
		var files []*os.File
		for {
			f, err := os.Open("/dev/null")
			if err != nil {
				if errors.Is(err, syscall.EMFILE) {
					fmt.Printf("emfile after %d\n", len(files))
					break
				}
				fail(err)
			}
			files = append(files, f)
		}
		defer func() { _ = files }()
	case "vmas":
		page := os.Getpagesize()
		region, err := syscall.Mmap(-1, 0, 2**count*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			fail(err)
		}
		for i := 0; i < *count; i++ {
			if err := syscall.Mprotect(region[2*i*page:(2*i+1)*page], syscall.PROT_READ); err != nil {
				fail(err)
			}
		}
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			fail(err)
		}
		fmt.Printf("vmas %d\n", bytes.Count(maps, []byte("\n")))
	case "connect":
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		go func() {
			for {
				conn, err := listener.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
			}
		}()
		var conns []net.Conn
		for {
			conn, err := net.Dial("tcp", listener.Addr().String())
			if err != nil {
				if errors.Is(err, syscall.EADDRNOTAVAIL) {
					for _, conn := range conns[:10] {
						conn.Close()
					}
					fmt.Printf("eaddrnotavail after %d\n", len(conns))
					break
				}
				fail(err)
			}
			conns = append(conns, conn)
		}
		defer func() { _ = conns }()
	case "sleep":
		var late []time.Duration
		for end := time.Now().Add(*duration); time.Now().Before(end); {
			start := time.Now()
			time.Sleep(time.Millisecond)
			late = append(late, time.Since(start)-time.Millisecond)
		}
		sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
		fmt.Printf("sleeps %d p99_late_us %d\n", len(late), late[len(late)*99/100].Microseconds())
	case "timerfd":
		fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, 1 /* CLOCK_MONOTONIC */, 0, 0)
		if errno != 0 {
			fail(errno)
		}
		spec := [4]int64{0, 0, 3600, 0} // it_interval 0, it_value 1 h
		for i := 0; i < *count; i++ {
			if _, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
				fail(errno)
			}
		}
		fmt.Printf("timerfd_settime %d\n", *count)
	case "backlog":
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			fail(err)
		}
		addr := &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: *port}
		if err := syscall.Bind(fd, addr); err != nil {
			fail(err)
		}
		if err := syscall.Listen(fd, 1); err != nil {
			fail(err)
		}
		bound, _ := syscall.Getsockname(fd)
		target := fmt.Sprintf("127.0.0.1:%d", bound.(*syscall.SockaddrInet4).Port)
		var conns []net.Conn
		for i := 0; i < *count; i++ {
			// Connections beyond the queue are dropped (the client retries): give up quickly.
			if conn, err := net.DialTimeout("tcp", target, 50*time.Millisecond); err == nil {
				conns = append(conns, conn)
			}
		}
		fmt.Printf("backlog connected %d of %d\n", len(conns), *count)
		defer func() { _ = conns }()
	case "conns":
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		var accepted []net.Conn
		go func() {
			for {
				conn, err := listener.Accept()
				if err != nil {
					return
				}
				accepted = append(accepted, conn)
			}
		}()
		var conns []net.Conn
		for i := 0; i < *count; i++ {
			conn, err := net.Dial("tcp", listener.Addr().String())
			if err != nil {
				fail(err)
			}
			conns = append(conns, conn)
		}
		fmt.Printf("connected %d\n", len(conns))
		defer func() { _ = conns }()
	case "gomaxprocs":
		setGomaxprocs(*count)
		for in.Scan() {
			n, err := strconv.Atoi(in.Text())
			if err != nil {
				fail(err)
			}
			setGomaxprocs(n)
		}
		return
	default:
		fail(fmt.Errorf("unknown -mode %q", *mode))
	}
	for in.Scan() {
	}
}

func setGomaxprocs(n int) {
	was := runtime.GOMAXPROCS(n)
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	fmt.Printf("gomaxprocs %d was %d numgc %d\n", runtime.GOMAXPROCS(0), was, stats.NumGC)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pressure:", err)
	os.Exit(1)
}
