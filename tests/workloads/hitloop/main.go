// hitloop prints "ready", waits for a line on stdin, then calls main.work N
// times (N, its only argument) and prints its own CPU time per call: the
// target of agent/examples/uprobe_hit_cost, which puts a uprobe on that call
// site to measure what one hit costs.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

var sink int

//go:noinline
func work(i int) { sink += i }

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	n, err := strconv.Atoi(os.Args[len(os.Args)-1])
	if err != nil || len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: hitloop ITERATIONS")
		os.Exit(2)
	}
	fmt.Println("ready")
	bufio.NewScanner(os.Stdin).Scan()
	start := cpu()
	for i := 0; i < n; i++ {
		work(i)
	}
	fmt.Printf("%.4f us/iter\n", float64(cpu()-start)/float64(n)/1e3)
}
