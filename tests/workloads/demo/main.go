// demo is a small Go HTTP service for `cargo xtask demo` and `cargo xtask bench`.
//
//	GET /work   builds and encodes a JSON document (allocations, so GC runs)
//	GET /health returns "ok"
//
// With -selfload it also drives itself with a few concurrent clients, so the
// demo shows numbers without an external load generator. It prints
// "listening on ADDR" once it accepts connections.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
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
	flag.Parse()

	http.HandleFunc("/work", work)
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
