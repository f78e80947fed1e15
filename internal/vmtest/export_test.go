package vmtest

// ParseForTest parses go test -v output as RunIn does.
func ParseForTest(out string) Result {
	r := Result{Output: out}
	r.parse()
	return r
}
