// runqburn keeps more runnable threads than CPUs so that run-queue latency
// cannot be zero: every worker is locked to its own OS thread and alternates
// a CPU burn with a short sleep (which produces a wakeup each round).
//
// It prints "ready" once all workers run, and exits 0 after -duration.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func main() {
	workers := flag.Int("workers", 2*runtime.NumCPU()+2, "busy OS threads")
	duration := flag.Duration("duration", 30*time.Second, "how long to run")
	burn := flag.Duration("burn", 2*time.Millisecond, "CPU burn per round")
	sleep := flag.Duration("sleep", 500*time.Microsecond, "sleep per round")
	flag.Parse()
	runtime.GOMAXPROCS(*workers + 1)

	deadline := time.Now().Add(*duration)
	var started, done sync.WaitGroup
	started.Add(*workers)
	done.Add(*workers)
	for i := 0; i < *workers; i++ {
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			started.Done()
			x := uint64(1)
			for time.Now().Before(deadline) {
				end := time.Now().Add(*burn)
				for time.Now().Before(end) {
					for j := 0; j < 1000; j++ {
						x = x*6364136223846793005 + 1442695040888963407
					}
				}
				time.Sleep(*sleep)
			}
			if x == 42 {
				fmt.Fprintln(os.Stderr, "impossible")
			}
		}()
	}
	started.Wait()
	fmt.Println("ready")
	done.Wait()
}
