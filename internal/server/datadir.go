package server

import (
	"fmt"
	"os"
	"path/filepath"
)

// DataMarker is the file InitDataDir writes into the data folder.
const DataMarker = "agentry-server.marker"

// DatabaseFile is the SQLite database in the data folder (with its -wal
// and -shm companions while the server runs).
const DatabaseFile = "agentry.db"

// InitDataDir creates the server's data folder (mode 0700) and marks it as
// agentry-server's.
func InitDataDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("data folder: no path given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating data folder: %w", err)
	}
	marker := filepath.Join(dir, DataMarker)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	const text = "This folder belongs to agentry-server. " + DatabaseFile + " (with its -wal and -shm files)\n" +
		"holds all of its state, logs included. Back it up with the server stopped, or online with\n" +
		"sqlite3 " + DatabaseFile + " \".backup copy.db\".\n"
	if err := os.WriteFile(marker, []byte(text), 0o600); err != nil {
		return fmt.Errorf("writing data folder marker: %w", err)
	}
	return nil
}
