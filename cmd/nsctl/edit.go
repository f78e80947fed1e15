package main

import (
	"errors"

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
