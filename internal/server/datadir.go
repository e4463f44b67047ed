package server

import (
	"fmt"
	"os"
	"path/filepath"
)

// DataMarker is the file InitDataDir writes into the data folder.
const DataMarker = "agentry-server.marker"

// InitDataDir creates the server's data folder (mode 0700) and marks it as
// agentry-server's. State is in memory for now; the durable store that comes
// next keeps its database here.
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
	const text = "This folder belongs to agentry-server. State is kept in memory for now;\n" +
		"the durable store will keep its database here.\n"
	if err := os.WriteFile(marker, []byte(text), 0o600); err != nil {
		return fmt.Errorf("writing data folder marker: %w", err)
	}
	return nil
}
