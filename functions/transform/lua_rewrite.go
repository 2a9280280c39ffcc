package transform

import (
	"slices"
	"strconv"

	"github.com/yuin/gopher-lua/ast"
)

// gopher-lua has no allocation hook, and three virtual-machine instructions
// can allocate without bound in one step: OP_CONCAT (`s = s .. s` doubles a
// string per instruction), OP_SETTABLE with an integer key far past the end of
// a table's array part (`t[60000000] = 1` appends sixty million nils), and
// OP_SETLIST with a value list of any length (`{...}` copies it). The
// rewrite below replaces those three forms, before compilation, with calls of
// Go helpers that charge the allocation to the script's budget first:
//
//	a .. b .. c      ->  concat(a, b, c)
//	t[k] = v         ->  setindex(t, k, v)      (k not a string constant)
//	{[k] = v}        ->  {[checkkey(k)] = v}
//	{x, f()}         ->  {x, charge(f())}       (also {x, ...})
//
// The helpers reach the script as locals of its main chunk whose names
// contain a space, so no script can name, shadow or reassign them; the
// globals they are copied from are cleared once the top level has run. Reads
// (`t[k]`) and assignments with a constant string key (`t.name = v`) stay
// plain instructions: they never grow an array part.
const (
	hiddenConcat   = "signalbox concat"
	hiddenSetIndex = "signalbox setindex"
	hiddenCheckKey = "signalbox checkkey"
	hiddenCharge   = "signalbox charge"
)

// hiddenNames lists the helpers in the order the prologue binds them.
var hiddenNames = []string{hiddenConcat, hiddenSetIndex, hiddenCheckKey, hiddenCharge}

// rewriteChunk rewrites chunk in place and returns it behind a prologue that
// copies the helpers from globals of the same names into locals.
func rewriteChunk(chunk []ast.Stmt) []ast.Stmt {
	rewriteStmts(chunk)

	globals := make([]ast.Expr, len(hiddenNames))
	for i, name := range hiddenNames {
		globals[i] = &ast.IdentExpr{Value: name}
	}
	bind := &ast.LocalAssignStmt{Names: hiddenNames, Exprs: globals}
	return append([]ast.Stmt{bind}, chunk...)
}

func rewriteStmts(ss []ast.Stmt) {
	for i, s := range ss {
		ss[i] = rewriteStmt(s)
	}
}

func rewriteStmt(s ast.Stmt) ast.Stmt {
	switch s := s.(type) {
	case *ast.AssignStmt:
		return rewriteAssign(s)
	case *ast.LocalAssignStmt:
		rewriteExprs(s.Exprs)
	case *ast.FuncCallStmt:
		s.Expr = rewriteExpr(s.Expr)
	case *ast.DoBlockStmt:
		rewriteStmts(s.Stmts)
	case *ast.WhileStmt:
		s.Condition = rewriteExpr(s.Condition)
		rewriteStmts(s.Stmts)
	case *ast.RepeatStmt:
		s.Condition = rewriteExpr(s.Condition)
		rewriteStmts(s.Stmts)
	case *ast.IfStmt:
		s.Condition = rewriteExpr(s.Condition)
		rewriteStmts(s.Then)
		rewriteStmts(s.Else)
	case *ast.NumberForStmt:
		s.Init = rewriteExpr(s.Init)
		s.Limit = rewriteExpr(s.Limit)
		if s.Step != nil {
			s.Step = rewriteExpr(s.Step)
		}
		rewriteStmts(s.Stmts)
	case *ast.GenericForStmt:
		rewriteExprs(s.Exprs)
		rewriteStmts(s.Stmts)
	case *ast.FuncDefStmt:
		// The name is a chain of identifiers (a.b.c or a.b:c): constant
		// string keys, nothing to rewrite.
		rewriteStmts(s.Func.Stmts)
	case *ast.ReturnStmt:
		rewriteExprs(s.Exprs)
	}
	return s
}

// needsSetIndex reports whether assigning to target may grow an array part.
func needsSetIndex(target ast.Expr) bool {
	ag, ok := target.(*ast.AttrGetExpr)
	if !ok {
		return false
	}
	_, constString := ag.Key.(*ast.StringExpr)
	return !constString
}

// rewriteAssign rewrites the expressions of s and, when a target is an index
// that may grow an array part, the assignment itself. A multiple assignment
// keeps Lua's order: every target's table and key and every value are
// evaluated first, then the assignments happen.
func rewriteAssign(s *ast.AssignStmt) ast.Stmt {
	for _, target := range s.Lhs {
		if ag, ok := target.(*ast.AttrGetExpr); ok {
			ag.Object = rewriteExpr(ag.Object)
			ag.Key = rewriteExpr(ag.Key)
		}
	}
	rewriteExprs(s.Rhs)

	if !slices.ContainsFunc(s.Lhs, needsSetIndex) {
		return s
	}
	if len(s.Lhs) == 1 && len(s.Rhs) == 1 {
		ag := s.Lhs[0].(*ast.AttrGetExpr)
		return callStmt(s, hiddenSetIndex, single(ag.Object), single(ag.Key), single(s.Rhs[0]))
	}

	// do
	//   local o1, k1, ... = t1, key1, ...    -- index targets only
	//   local v1, v2, ... = <rhs>
	//   setindex(o1, k1, v1); x = v2; ...
	// end
	// The temporaries' names contain spaces, like the helpers'.
	var tmpNames []string
	var tmpExprs []ast.Expr
	valueNames := make([]string, len(s.Lhs))
	for i := range s.Lhs {
		valueNames[i] = "signalbox value " + strconv.Itoa(i)
	}
	var assigns []ast.Stmt
	for i, target := range s.Lhs {
		value := ident(s, valueNames[i])
		if !needsSetIndex(target) {
			a := &ast.AssignStmt{Lhs: []ast.Expr{target}, Rhs: []ast.Expr{value}}
			copyLines(a, s)
			assigns = append(assigns, a)
			continue
		}
		ag := target.(*ast.AttrGetExpr)
		obj, key := "signalbox table "+strconv.Itoa(i), "signalbox key "+strconv.Itoa(i)
		tmpNames = append(tmpNames, obj, key)
		tmpExprs = append(tmpExprs, single(ag.Object), single(ag.Key))
		assigns = append(assigns, callStmt(s, hiddenSetIndex, ident(s, obj), ident(s, key), value))
	}
	body := []ast.Stmt{localStmt(s, tmpNames, tmpExprs), localStmt(s, valueNames, s.Rhs)}
	body = append(body, assigns...)
	do := &ast.DoBlockStmt{Stmts: body}
	copyLines(do, s)
	return do
}

func rewriteExprs(es []ast.Expr) {
	for i, e := range es {
		es[i] = rewriteExpr(e)
	}
}

func rewriteExpr(e ast.Expr) ast.Expr {
	switch e := e.(type) {
	case *ast.StringConcatOpExpr:
		// a .. b .. c parses as a .. (b .. c): flatten the right spine, as
		// the compiler does, into one call.
		var operands []ast.Expr
		var cur ast.Expr = e
		for {
			c, ok := cur.(*ast.StringConcatOpExpr)
			if !ok {
				break
			}
			operands = append(operands, single(rewriteExpr(c.Lhs)))
			cur = c.Rhs
		}
		operands = append(operands, single(rewriteExpr(cur)))
		call := callExpr(e, hiddenConcat, operands...)
		call.AdjustRet = true
		return call
	case *ast.AttrGetExpr:
		e.Object = rewriteExpr(e.Object)
		e.Key = rewriteExpr(e.Key)
	case *ast.TableExpr:
		for i, f := range e.Fields {
			if f.Key != nil {
				f.Key = rewriteExpr(f.Key)
				if _, constString := f.Key.(*ast.StringExpr); !constString {
					k := callExpr(e, hiddenCheckKey, single(f.Key))
					k.AdjustRet = true
					f.Key = k
				}
			}
			f.Value = rewriteExpr(f.Value)
			if f.Key == nil && i == len(e.Fields)-1 && multiValued(f.Value) {
				f.Value = callExpr(e, hiddenCharge, f.Value)
			}
		}
	case *ast.FuncCallExpr:
		if e.Func != nil {
			e.Func = rewriteExpr(e.Func)
		}
		if e.Receiver != nil {
			e.Receiver = rewriteExpr(e.Receiver)
		}
		rewriteExprs(e.Args)
	case *ast.LogicalOpExpr:
		e.Lhs, e.Rhs = rewriteExpr(e.Lhs), rewriteExpr(e.Rhs)
	case *ast.RelationalOpExpr:
		e.Lhs, e.Rhs = rewriteExpr(e.Lhs), rewriteExpr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		e.Lhs, e.Rhs = rewriteExpr(e.Lhs), rewriteExpr(e.Rhs)
	case *ast.UnaryMinusOpExpr:
		e.Expr = rewriteExpr(e.Expr)
	case *ast.UnaryNotOpExpr:
		e.Expr = rewriteExpr(e.Expr)
	case *ast.UnaryLenOpExpr:
		e.Expr = rewriteExpr(e.Expr)
	case *ast.FunctionExpr:
		rewriteStmts(e.Stmts)
	}
	return e
}

// multiValued reports whether e yields a list of values where a list is
// allowed: an unparenthesised call or `...`.
func multiValued(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.FuncCallExpr:
		return !e.AdjustRet
	case *ast.Comma3Expr:
		return !e.AdjustRet
	}
	return false
}

// single truncates e to one value, as parentheses do, so that moving it into
// an argument list does not spread a call's results over several arguments.
func single(e ast.Expr) ast.Expr {
	switch e := e.(type) {
	case *ast.FuncCallExpr:
		e.AdjustRet = true
	case *ast.Comma3Expr:
		e.AdjustRet = true
	}
	return e
}

func ident(at ast.PositionHolder, name string) *ast.IdentExpr {
	id := &ast.IdentExpr{Value: name}
	copyLines(id, at)
	return id
}

func callExpr(at ast.PositionHolder, fn string, args ...ast.Expr) *ast.FuncCallExpr {
	call := &ast.FuncCallExpr{Func: ident(at, fn), Args: args}
	copyLines(call, at)
	return call
}

func callStmt(at ast.PositionHolder, fn string, args ...ast.Expr) *ast.FuncCallStmt {
	s := &ast.FuncCallStmt{Expr: callExpr(at, fn, args...)}
	copyLines(s, at)
	return s
}

func localStmt(at ast.PositionHolder, names []string, exprs []ast.Expr) *ast.LocalAssignStmt {
	s := &ast.LocalAssignStmt{Names: names, Exprs: exprs}
	copyLines(s, at)
	return s
}

// copyLines gives a synthesised node the lines of the node it replaces, so
// that error messages keep pointing at the script's own lines.
func copyLines(dst, src ast.PositionHolder) {
	dst.SetLine(src.Line())
	dst.SetLastLine(src.LastLine())
}
