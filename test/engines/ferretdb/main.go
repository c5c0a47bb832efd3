// Command ferretdb-runner embeds FerretDB v1 with its SQLite backend for the
// MedBlock engine tests (see docs/engines.md).
//
// It wraps the embeddable github.com/FerretDB/FerretDB/ferretdb package because
// `go install github.com/FerretDB/FerretDB/cmd/ferretdb` panics at startup: the
// module zip lacks build/version/version.txt, which is only required when the
// main module is FerretDB itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	addr := flag.String("listen-addr", "127.0.0.1:0", "TCP address to listen on (port 0 picks a free port)")
	dir := flag.String("sqlite-dir", "ferretdb-data", "directory for the SQLite databases")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		log.Fatal(err)
	}

	abs, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err != nil {
		log.Fatal(err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/", // must be an existing directory ending with "/"
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// New() has already bound the socket, so clients may connect from now on.
	fmt.Printf("FerretDB ready %s\n", f.MongoDBURI())

	if err = f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
