package lang

import (
	"fmt"
	"strings"
)

// Env is what this server knows that a rule may refer to: its site and
// region (nsd --site, --region), the values of cf.colo.name and
// cf.colo.region.
type Env struct {
	Site, Region string
}

// Fold rewrites an expression for one server: conditions on
// cf.colo.name and cf.colo.region become true or false (compared without
// regard to case), and ip.geoip.country, which Cloudflare defines as
// matching either address, becomes ip.src.country or ip.dst.country (so
// != is "neither"). A site condition on a server without --site (or
// region without --region) is an error at its position.
func Fold(e Expr, env Env) (Expr, error) {
	var err error
	out := MapAtoms(e, func(e Expr) Expr {
		switch x := e.(type) {
		case *Cmp:
			return foldAtom(x, x.Field, []Value{x.Val}, x.Op == OpNe, env, &err)
		case *In:
			if x.List == "" {
				return foldAtom(x, x.Field, x.Set, false, env, &err)
			}
		}
		return e
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func foldAtom(e Expr, f *Field, vals []Value, ne bool, env Env, errp *error) Expr {
	switch f.Name {
	case "cf.colo.name", "cf.colo.region":
		have, flag := env.Site, "--site"
		if f.Name == "cf.colo.region" {
			have, flag = env.Region, "--region"
		}
		if have == "" {
			if *errp == nil {
				*errp = &Error{Pos: e.Pos(), Msg: fmt.Sprintf("%s: this server has no %s (nsd %s)", f.Name, strings.TrimPrefix(flag, "--"), flag)}
			}
			return e
		}
		match := false
		for _, v := range vals {
			if strings.EqualFold(v.Str, have) {
				match = true
			}
		}
		return &Const{Val: match != ne, P: e.Pos()}
	case "ip.geoip.country":
		either := func(name string) Expr {
			g := Fields[name]
			if c, ok := e.(*Cmp); ok {
				eq := *c
				eq.Field, eq.Op = g, OpEq
				return &eq
			}
			in := *e.(*In)
			in.Field = g
			return &in
		}
		var out Expr = &Or{L: either("ip.src.country"), R: either("ip.dst.country"), P: e.Pos()}
		if ne {
			out = &Not{X: out, P: e.Pos()}
		}
		return out
	}
	return e
}
