// demo is a small Go HTTP service for `cargo xtask demo` and `cargo xtask bench`.
//
//	GET /work      builds and encodes a JSON document (allocations, so GC runs)
//	GET /health    returns "ok"
//	GET /debug/gc  returns the number of GC cycles completed so far, as text
//
// With -selfload it also drives itself with a few concurrent clients, so the
// demo shows numbers without an external load generator. With -live-heap-mib N
// it keeps N MiB of data reachable for its whole life, as a real service keeps
// caches and sessions: with the default GOGC a cycle then starts only after
// about N MiB more have been allocated, i.e. a few cycles per second under the
// bench's load instead of hundreds. It prints "listening on ADDR" once it
// accepts connections (after the live heap is built).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime/metrics"
	"strconv"
	"time"
)

type item struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
}

func work(w http.ResponseWriter, r *http.Request) {
	n := 200
	if v, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && v > 0 && v <= 10000 {
		n = v
	}
	items := make([]item, n)
	for i := range items {
		items[i] = item{
			ID:    i,
			Name:  "item-" + strconv.Itoa(i),
			Tags:  []string{"a", "b", strconv.Itoa(i % 7)},
			Attrs: map[string]string{"k": strconv.Itoa(i)},
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(items)
}

// liveHeap keeps the -live-heap-mib data reachable until the process exits.
var liveHeap [][]byte

// liveHeapChunk is the size of each piece of the live heap: large enough that
// the pieces cost the GC little bookkeeping, small enough to be ordinary
// (not a single huge object).
const liveHeapChunk = 64 << 10

// buildLiveHeap allocates mib MiB in liveHeapChunk pieces and writes to every
// page, so the memory is resident and counted, not just reserved.
func buildLiveHeap(mib int) {
	chunks := mib * (1 << 20) / liveHeapChunk
	liveHeap = make([][]byte, chunks)
	for i := range liveHeap {
		chunk := make([]byte, liveHeapChunk)
		for j := 0; j < len(chunk); j += 4096 {
			chunk[j] = byte(i + j)
		}
		liveHeap[i] = chunk
	}
}

// gcCycles answers the number of completed GC cycles. It reads runtime/metrics,
// which, unlike runtime.ReadMemStats, does not stop the world: the bench reads it
// around each round and must not add a pause of its own.
func gcCycles(w http.ResponseWriter, r *http.Request) {
	sample := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		http.Error(w, "runtime/metrics has no /gc/cycles/total:gc-cycles", http.StatusInternalServerError)
		return
	}
	_, _ = fmt.Fprintf(w, "%d\n", sample[0].Value.Uint64())
}

func selfLoad(addr string, clients int) {
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < clients; i++ {
		go func() {
			for {
				resp, err := client.Get("http://" + addr + "/work")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8089", "address to serve on")
	load := flag.Int("selfload", 0, "concurrent self-load clients (0: none)")
	liveHeapMiB := flag.Int("live-heap-mib", 0, "MiB of data kept reachable for the process's life (0: none)")
	flag.Parse()

	if *liveHeapMiB < 0 {
		log.Fatalf("-live-heap-mib must be 0 or more, not %d", *liveHeapMiB)
	}
	if *liveHeapMiB > 0 {
		buildLiveHeap(*liveHeapMiB)
	}
	http.HandleFunc("/work", work)
	http.HandleFunc("/debug/gc", gcCycles)
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	if *load > 0 {
		selfLoad(ln.Addr().String(), *load)
	}
	log.Fatal(http.Serve(ln, nil))
}
