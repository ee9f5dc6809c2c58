package engine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// opPathFuncs are the functions on an operation's path that a parameter's
// type does not give away (see opPathTypes).
var opPathFuncs = map[string]bool{"prepare": true, "NewLayeredImage": true, "Import": true, "importArchive": true, "NewImage": true}

// opPathTypes mark a function as on an operation's path when it takes (or
// is a method of) one of them.
var opPathTypes = map[string]bool{"runPlan": true, "op": true, "imageLease": true, "activeOp": true}

// TestOpPathLogsCarryOperation: every log record written on an operation's
// path carries the "operation" attribute, so `grep operation=<id>` over the
// daemon log finds everything that happened to it. It reads the package's
// source: a warning on a rare error path (an unmount that fails) is as
// hard to provoke as it is important to find.
func TestOpPathLogsCarryOperation(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || !onOpPath(fn) {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || !isLogCall(call) {
					return true
				}
				checked++
				for _, a := range call.Args {
					if lit, ok := a.(*ast.BasicLit); ok && lit.Value == `"operation"` {
						return true
					}
				}
				t.Errorf("%s: log call in %s has no \"operation\" attribute", fset.Position(call.Pos()), fn.Name.Name)
				return true
			})
		}
	}
	if checked < 5 {
		t.Fatalf("only %d log calls on operation paths found: the test no longer sees them", checked)
	}
}

func onOpPath(fn *ast.FuncDecl) bool {
	if opPathFuncs[fn.Name.Name] {
		return true
	}
	var fields []*ast.Field
	if fn.Recv != nil {
		fields = append(fields, fn.Recv.List...)
	}
	fields = append(fields, fn.Type.Params.List...)
	for _, f := range fields {
		if star, ok := f.Type.(*ast.StarExpr); ok {
			if id, ok := star.X.(*ast.Ident); ok && opPathTypes[id.Name] {
				return true
			}
		}
	}
	return false
}

// isLogCall reports whether call is X.log.Level(...) or log.Level(...) on a
// *slog.Logger named log.
func isLogCall(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	switch strings.TrimSuffix(sel.Sel.Name, "Context") {
	case "Debug", "Info", "Warn", "Error":
	default:
		return false
	}
	switch x := sel.X.(type) {
	case *ast.SelectorExpr:
		return x.Sel.Name == "log"
	case *ast.Ident:
		return x.Name == "log"
	}
	return false
}
