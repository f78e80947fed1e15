package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/nsd/source"
)

func TestCasEdit(t *testing.T) {
	conflicts := func(n int) (func() (int, uint64, error), func(int, uint64) error, *int, *int) {
		reads, writes := 0, 0
		read := func() (int, uint64, error) { reads++; return reads, uint64(reads), nil }
		write := func(v int, idx uint64) error {
			writes++
			if writes <= n {
				return fmt.Errorf("write: %w", source.ErrConflict)
			}
			return nil
		}
		return read, write, &reads, &writes
	}
	inc := func(v *int) error { *v *= 10; return nil }

	// Lost races are retried with a fresh read.
	read, write, reads, writes := conflicts(2)
	if err := casEdit(read, write, inc); err != nil || *reads != 3 || *writes != 3 {
		t.Errorf("two conflicts: err %v after %d reads, %d writes", err, *reads, *writes)
	}
	// ... but not forever: the conflict is the command's error (exit 4).
	read, write, reads, writes = conflicts(1000)
	err := casEdit(read, write, inc)
	if !errors.Is(err, source.ErrConflict) || cliutil.ExitCode(err) != ExitConflict || *writes != casRetries+1 {
		t.Errorf("endless conflicts: err %v after %d writes", err, *writes)
	}
	// An edit that fails writes nothing.
	read, write, _, writes = conflicts(0)
	boom := errors.New("boom")
	if err := casEdit(read, write, func(*int) error { return boom }); err != boom || *writes != 0 {
		t.Errorf("failing edit: err %v, %d writes", err, *writes)
	}
}
