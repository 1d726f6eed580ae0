package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
)

func main() {
	health := flag.Bool("health", false, "check the server and exit")
	flag.Parse()
	port := os.Getenv("PORT")
	if *health {
		if _, err := http.Get("http://127.0.0.1:" + port + "/"); err != nil {
			os.Exit(1)
		}
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	_ = http.ListenAndServe(":"+port, nil)
}
