package store

import (
	"database/sql/driver"
	"encoding/json"
	"strings"
	"sync"

	"modernc.org/sqlite"
)

var sqliteFuncsOnce sync.Once

// registerSQLiteFuncs gives SQLite the criteria semantics as an SQL
// function, so list queries evaluate exactly what Criterion.Match evaluates:
//
//	mamori_crit(doc, field, op, valueJSON)  one criterion (positive form) on a finding document
func registerSQLiteFuncs() {
	sqliteFuncsOnce.Do(func() {
		sqlite.MustRegisterDeterministicScalarFunction("mamori_crit", 4,
			func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
				doc, ok := textOf(args[0])
				field, ok2 := args[1].(string)
				op, ok3 := args[2].(string)
				vj, ok4 := args[3].(string)
				if !ok || !ok2 || !ok3 || !ok4 {
					return int64(0), nil
				}
				var m map[string]any
				if err := json.NewDecoder(strings.NewReader(doc)).Decode(&m); err != nil {
					return int64(0), nil
				}
				var v any
				if err := json.Unmarshal([]byte(vj), &v); err != nil {
					return int64(0), nil
				}
				c := Criterion{Field: field, Op: Op(op), Value: v}
				return boolInt(c.Match(m)), nil
			})
	})
}

func textOf(v driver.Value) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case []byte:
		return string(t), true
	}
	return "", false
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
