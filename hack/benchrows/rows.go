// Package benchrows is the machine-readable form of a benchmark program's
// results: one tab-separated line per figure (component, metric, measured,
// target, verdict) under a header line. Each benchmark program writes it
// with -rows FILE; hack/benchall reads it back to print one table.
package benchrows

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Verdict says whether a figure met its target; None when it has none.
type Verdict string

// The verdicts a row may carry.
const (
	None   Verdict = ""
	OK     Verdict = "ok"
	Missed Verdict = "missed"
)

// Judge is OK when met, else Missed.
func Judge(met bool) Verdict {
	if met {
		return OK
	}
	return Missed
}

// Row is one measured figure. Measured and Target carry their units
// ("12 ms", "< 30 MiB"); Target is empty when the figure has none.
type Row struct {
	Component string
	Metric    string
	Measured  string
	Target    string
	Verdict   Verdict
}

// Header is the first line of a rows file.
const Header = "component\tmetric\tmeasured\ttarget\tverdict"

// WriteFile writes rows to path; an empty path writes nothing.
func WriteFile(path string, rows []Row) error {
	if path == "" {
		return nil
	}
	var b strings.Builder
	b.WriteString(Header + "\n")
	for _, r := range rows {
		fields := []string{r.Component, r.Metric, r.Measured, r.Target, string(r.Verdict)}
		for _, f := range fields {
			// A tab or line break would shift every later column.
			if strings.ContainsAny(f, "\t\r\n") {
				return fmt.Errorf("row %q: a field holds a tab or line break", r.Metric)
			}
		}
		b.WriteString(strings.Join(fields, "\t") + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// Read parses what WriteFile wrote.
func Read(r io.Reader) ([]Row, error) {
	sc := bufio.NewScanner(r)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("no header line")
	}
	if sc.Text() != Header {
		return nil, fmt.Errorf("header is %q, want %q", sc.Text(), Header)
	}
	var rows []Row
	for n := 2; sc.Scan(); n++ {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("line %d: %d fields, want 5", n, len(f))
		}
		v := Verdict(f[4])
		if v != None && v != OK && v != Missed {
			return nil, fmt.Errorf("line %d: verdict %q is not ok, missed or empty", n, f[4])
		}
		rows = append(rows, Row{Component: f[0], Metric: f[1], Measured: f[2], Target: f[3], Verdict: v})
	}
	return rows, sc.Err()
}
