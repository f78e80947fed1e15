package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nfhost/nfhost/nsd/source"
)

// casRetries bounds read-modify-write retries of rule and signature edits.
const casRetries = 8

// casEdit applies f to the current document and writes it with
// check-and-set, re-reading on a conflict (at most casRetries times).
func casEdit[C any](read func() (C, uint64, error), write func(C, uint64) error, f func(*C) error) error {
	for i := 0; ; i++ {
		c, idx, err := read()
		if err != nil {
			return err
		}
		if err := f(&c); err != nil {
			return err
		}
		err = write(c, idx)
		if !errors.Is(err, source.ErrConflict) || i == casRetries {
			return err
		}
	}
}

// readDocFile reads a document given with -f (- is stdin).
func readDocFile(file string) ([]byte, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return b, nil
}
