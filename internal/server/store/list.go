package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// colKind is how a column-backed field compares.
type colKind int

const (
	colText colKind = iota
	colNum
	colBool
	colTime
)

type column struct {
	name string
	kind colKind
}

// columns back the fields that lists filter and sort on most, so those
// criteria use indexes; other fields are evaluated on the document.
var columns = map[string]column{
	"id":                     {"id", colText},
	"type":                   {"type", colText},
	"severity":               {"severity", colNum},
	"createdAt":              {"created_at", colTime},
	"updatedAt":              {"updated_at", colTime},
	"resource.resourceType":  {"resource_type", colText},
	"service.count":          {"occurrences", colNum},
	"service.eventFirstSeen": {"first_seen", colTime},
	"service.eventLastSeen":  {"last_seen", colTime},
	"service.archived":       {"archived", colBool},
	"cluster":                {"cluster", colText},
	"suppressedBy":           {"suppressed_by", colText},
	"revision":               {"revision", colNum},

	"service.additionalInfo.sample":                                  {"sample", colBool},
	"resource.instanceDetails.nodeId":                                {"node_id", colText},
	"resource.containerDetails.id":                                   {"container_id", colText},
	"resource.containerDetails.image":                                {"image", colText},
	"resource.kubernetesDetails.kubernetesWorkloadDetails.namespace": {"namespace", colText},
}

// sortColumns maps SortFields to columns.
var sortColumns = map[string]column{
	"updatedAt": columns["updatedAt"], "createdAt": columns["createdAt"], "severity": columns["severity"],
	"count": columns["service.count"], "eventFirstSeen": columns["service.eventFirstSeen"],
	"eventLastSeen": columns["service.eventLastSeen"], "type": columns["type"],
}

// where translates normalized criteria into an SQL condition, appending
// its arguments to args. It mirrors Criterion.Match exactly.
func (s *sqlStore) where(cs []Criterion, args *[]any) (string, error) {
	if len(cs) == 0 {
		return "TRUE", nil
	}
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	var parts []string
	for _, c := range cs {
		pos := c
		if c.Op == OpNeq {
			pos.Op = OpEq
		}
		expr, err := s.positive(pos, arg)
		if err != nil {
			return "", err
		}
		if c.Op == OpNeq {
			expr = "NOT COALESCE((" + expr + "), FALSE)"
		}
		parts = append(parts, "("+expr+")")
	}
	return strings.Join(parts, " AND "), nil
}

// positive builds the condition for eq, gt, lt or matches.
func (s *sqlStore) positive(c Criterion, arg func(any) string) (string, error) {
	col, ok := columns[c.Field]
	if ok && !(col.kind == colTime && c.Op == OpMatches) {
		return s.columnExpr(col, c, arg), nil
	}
	vj, err := json.Marshal(c.Value)
	if err != nil {
		return "", fmt.Errorf("%w: criterion value: %v", ErrInvalid, err)
	}
	if s.engine == EngineSQLite {
		expr := "mamori_crit(doc, " + arg(c.Field) + ", " + arg(string(c.Op)) + ", " + arg(string(vj)) + ")"
		// Decoding every document is slow; a string the criterion needs
		// must appear in the document's text (written by encoding/json),
		// which instr checks at C speed first.
		if frag := literalFragment(c); frag != "" {
			expr = "instr(doc, " + arg(frag) + ") > 0 AND " + expr
		}
		return expr, nil
	}
	path := "$"
	for _, seg := range strings.Split(c.Field, ".") {
		path += `."` + seg + `"`
	}
	switch c.Op {
	case OpEq:
		path += " ? (@ == $v)"
	case OpGt:
		path += " ? (@ > $v)"
	case OpLt:
		path += " ? (@ < $v)"
	case OpMatches:
		lit, _ := json.Marshal(globRegex(c.Value.(string)))
		path += " ? (@ like_regex " + string(lit) + ` flag "s")`
	}
	vars, _ := json.Marshal(map[string]any{"v": c.Value})
	return "jsonb_path_exists(doc, CAST(" + arg(path) + " AS jsonpath), CAST(" + arg(string(vars)) + " AS jsonb))", nil
}

func (s *sqlStore) columnExpr(col column, c Criterion, arg func(any) string) string {
	const never = "FALSE"
	op := map[Op]string{OpEq: "=", OpGt: ">", OpLt: "<"}[c.Op]
	switch col.kind {
	case colText:
		v, ok := c.Value.(string)
		if !ok {
			return never
		}
		if c.Op == OpMatches {
			if s.engine == EngineSQLite {
				// GLOB has the same '*' and '?' and is case-sensitive; only
				// '[' opens a class, so it is spelled as a class of itself.
				return col.name + " GLOB " + arg(strings.ReplaceAll(v, "[", "[[]"))
			}
			return col.name + " LIKE " + arg(globLike(v))
		}
		if s.engine == EnginePostgres && c.Op != OpEq {
			// Bytewise order, as Go compares strings.
			return col.name + ` COLLATE "C" ` + op + " " + arg(v)
		}
		return col.name + " " + op + " " + arg(v)
	case colNum:
		v, ok := c.Value.(float64)
		if !ok || c.Op == OpMatches {
			return never
		}
		return col.name + " " + op + " " + arg(v)
	case colBool:
		v, ok := c.Value.(bool)
		if !ok || c.Op != OpEq {
			return never
		}
		return col.name + " = " + arg(v)
	case colTime:
		t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(c.Value))
		if err != nil {
			return never
		}
		return col.name + " " + op + " " + arg(t.UnixMicro())
	}
	return never
}

// globLike turns a wildcard pattern into a LIKE pattern (escape '\').
func globLike(p string) string {
	var b strings.Builder
	for _, r := range p {
		switch r {
		case '*':
			b.WriteByte('%')
		case '?':
			b.WriteByte('_')
		case '%', '_', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// globRegex turns a wildcard pattern into an anchored regular expression
// for SQL/JSON like_regex: ASCII punctuation is escaped, so nothing but '*'
// and '?' is special.
func globRegex(p string) string {
	var b strings.Builder
	b.WriteByte('^')
	for _, r := range p {
		switch {
		case r == '*':
			b.WriteString(".*")
		case r == '?':
			b.WriteByte('.')
		case r < 128 && !unicode.IsLetter(r) && !unicode.IsDigit(r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('$')
	return b.String()
}

// cursor is the keyset position after a page's last row.
type cursor struct {
	Sort  string `json:"s"`
	Asc   bool   `json:"a,omitempty"`
	Value any    `json:"v"`
	ID    string `json:"i"`
	Query string `json:"q"` // hash of the criteria it belongs to
}

func criteriaHash(cs []Criterion) string {
	b, _ := json.Marshal(cs)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func (s *sqlStore) ListFindings(ctx context.Context, q Query) (page *Page, err error) {
	defer s.observe("list", time.Now(), &err)
	cs, err := NormalizeAll(q.Criteria)
	if err != nil {
		return nil, err
	}
	if q.Sort == "" {
		q.Sort = "updatedAt"
	}
	sc, ok := sortColumns[q.Sort]
	if !ok {
		return nil, fmt.Errorf("%w: cannot sort by %q (one of %v)", ErrInvalid, q.Sort, SortFields)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	if q.Offset < 0 {
		return nil, fmt.Errorf("%w: negative offset", ErrInvalid)
	}
	var args []any
	where, err := s.where(cs, &args)
	if err != nil {
		return nil, err
	}
	page = &Page{Total: -1, Findings: []*Record{}}
	if !q.NoTotal {
		if err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM findings WHERE `+where), args...).Scan(&page.Total); err != nil {
			return nil, fmt.Errorf("count findings: %w", err)
		}
	}
	hash := criteriaHash(cs)
	dir, cmpOp := "DESC", "<"
	if q.Asc {
		dir, cmpOp = "ASC", ">"
	}
	// The inner query sorts and pages narrow rows (id and sort key) through
	// the indexes; only the page's documents are read, whatever the plan.
	keyCol := sc.name
	if sc.kind == colText && s.engine == EnginePostgres {
		keyCol += ` COLLATE "C"` // bytewise, as Go compares strings
	}
	inner := `SELECT id, ` + sc.name + ` AS sort_key FROM findings WHERE ` + where
	if q.Cursor != "" {
		cur, err := decodeCursor(q.Cursor)
		if err != nil {
			return nil, err
		}
		if cur.Sort != q.Sort || cur.Asc != q.Asc || cur.Query != hash {
			return nil, fmt.Errorf("%w: cursor belongs to another query", ErrInvalid)
		}
		v, err := cursorValue(sc, cur.Value)
		if err != nil {
			return nil, err
		}
		args = append(args, v, cur.ID)
		inner += fmt.Sprintf(" AND (%s, id) %s ($%d, $%d)", keyCol, cmpOp, len(args)-1, len(args))
		q.Offset = 0
	}
	inner += fmt.Sprintf(" ORDER BY %s %s, id %s LIMIT %d OFFSET %d", keyCol, dir, dir, limit+1, q.Offset)
	outerKey := "k.sort_key"
	if sc.kind == colText && s.engine == EnginePostgres {
		outerKey += ` COLLATE "C"`
	}
	stmt := `SELECT ` + recordColsF + `, k.sort_key FROM (` + inner +
		`) k JOIN findings f ON f.id = k.id ORDER BY ` + outerKey + ` ` + dir + `, k.id ` + dir
	rows, err := s.r.QueryContext(ctx, s.q(stmt), args...)
	if err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	defer rows.Close()
	var lastKey any
	for rows.Next() {
		var key any
		rec, err := scanRecord(plusScanner{rows, []any{&key}})
		if err != nil {
			return nil, fmt.Errorf("list findings: %w", err)
		}
		if len(page.Findings) == limit {
			c := cursor{Sort: q.Sort, Asc: q.Asc, Value: lastKey, ID: page.Findings[limit-1].ID, Query: hash}
			page.Next = encodeCursor(c)
			break
		}
		page.Findings = append(page.Findings, rec)
		lastKey = sortKey(key)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	return page, nil
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*cursor, error) {
	if len(s) > 1024 {
		return nil, fmt.Errorf("%w: cursor too long", ErrInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		return nil, fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	return &c, nil
}

// cursorValue converts a cursor's decoded JSON value to the column's type.
func cursorValue(col column, v any) (any, error) {
	switch col.kind {
	case colText:
		if s, ok := v.(string); ok {
			return s, nil
		}
	case colNum:
		if f, ok := v.(float64); ok {
			if col.name == "severity" {
				return f, nil
			}
			return int64(f), nil
		}
	case colTime:
		if f, ok := v.(float64); ok {
			return int64(f), nil
		}
	}
	return nil, fmt.Errorf("%w: malformed cursor value", ErrInvalid)
}

// sortKey normalizes a scanned sort column for the cursor (drivers hand
// back []byte, int64 or float64).
func sortKey(v any) any {
	switch t := v.(type) {
	case []byte:
		return string(t)
	}
	return v
}

// literalFragment is a piece of text that must occur, JSON-encoded, in any
// document a string criterion (eq or matches) can hold for: the value, or
// the longest run of a pattern without wildcards.
func literalFragment(c Criterion) string {
	v, ok := c.Value.(string)
	if !ok || (c.Op != OpEq && c.Op != OpMatches) || timeFields[c.Field] {
		return ""
	}
	if c.Op == OpMatches {
		best := ""
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == '*' || r == '?' }) {
			if len(part) > len(best) {
				best = part
			}
		}
		v = best
	}
	if len(v) < 3 {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b[1 : len(b)-1]) // without the quotes: a substring of the encoded value
}
