package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Rule limits.
const (
	maxRuleName = 128
	maxRuleDesc = 1024
	// MaxRules bounds how many rules may exist: each is evaluated on every
	// incoming finding.
	MaxRules = 1000
)

// Normalize checks r and returns it with normalized criteria. Errors wrap
// ErrInvalid.
func (r Rule) Normalize() (Rule, error) {
	r.Name = strings.TrimSpace(r.Name)
	if r.Name == "" || len(r.Name) > maxRuleName || !utf8.ValidString(r.Name) || strings.ContainsRune(r.Name, 0) {
		return r, fmt.Errorf("%w: rule name must be 1-%d characters of valid text", ErrInvalid, maxRuleName)
	}
	if len(r.Description) > maxRuleDesc || !utf8.ValidString(r.Description) || strings.ContainsRune(r.Description, 0) {
		return r, fmt.Errorf("%w: rule description must be at most %d characters of valid text", ErrInvalid, maxRuleDesc)
	}
	if r.Action == "" {
		r.Action = ActionNoop
	}
	if r.Action != ActionNoop && r.Action != ActionArchive {
		return r, fmt.Errorf("%w: rule action %q (want NOOP or ARCHIVE)", ErrInvalid, r.Action)
	}
	if len(r.Criteria) == 0 {
		// A rule without criteria would match every finding.
		return r, fmt.Errorf("%w: a rule needs at least one criterion", ErrInvalid)
	}
	cs, err := NormalizeAll(r.Criteria)
	if err != nil {
		return r, err
	}
	r.Criteria = cs
	return r, nil
}

const ruleCols = `id, name, description, action, rank, criteria, created_at, updated_at`

func scanRule(sc scanner) (*Rule, error) {
	var (
		r        Rule
		criteria string
		ca, ua   int64
	)
	if err := sc.Scan(&r.ID, &r.Name, &r.Description, &r.Action, &r.Rank, &criteria, &ca, &ua); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(criteria), &r.Criteria); err != nil {
		return nil, fmt.Errorf("rule %s: stored criteria: %w", r.ID, err)
	}
	// Stored criteria were normalized; decoding restores float64 numbers.
	r.CreatedAt, r.UpdatedAt = fromMicros(ca), fromMicros(ua)
	return &r, nil
}

func (s *sqlStore) ListRules(ctx context.Context) (out []Rule, err error) {
	defer s.observe("rules_list", time.Now(), &err)
	rows, err := s.r.QueryContext(ctx, `SELECT `+ruleCols+` FROM rules ORDER BY rank, created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	out = []Rule{}
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		out = append(out, *r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return out, nil
}

func (s *sqlStore) GetRule(ctx context.Context, id string) (r *Rule, err error) {
	defer s.observe("rules_get", time.Now(), &err)
	r, err = scanRule(s.r.QueryRowContext(ctx, s.q(`SELECT `+ruleCols+` FROM rules WHERE id = $1`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("rule %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get rule %s: %w", id, err)
	}
	return r, nil
}

func (s *sqlStore) CreateRule(ctx context.Context, in Rule) (out *Rule, err error) {
	defer s.observe("rules_create", time.Now(), &err)
	r, err := in.Normalize()
	if err != nil {
		return nil, err
	}
	crit, err := json.Marshal(r.Criteria)
	if err != nil {
		return nil, fmt.Errorf("encode criteria: %w", err)
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	r.ID, r.CreatedAt, r.UpdatedAt = uuid.NewString(), now, now
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM rules`).Scan(&n); err != nil {
			return fmt.Errorf("count rules: %w", err)
		}
		if n >= MaxRules {
			return fmt.Errorf("%w: already %d rules, the limit", ErrInvalid, MaxRules)
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO rules (`+ruleCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`),
			r.ID, r.Name, r.Description, string(r.Action), r.Rank, string(crit), micros(now), micros(now))
		if err != nil {
			return fmt.Errorf("create rule: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *sqlStore) UpdateRule(ctx context.Context, in Rule) (out *Rule, err error) {
	defer s.observe("rules_update", time.Now(), &err)
	r, err := in.Normalize()
	if err != nil {
		return nil, err
	}
	crit, err := json.Marshal(r.Criteria)
	if err != nil {
		return nil, fmt.Errorf("encode criteria: %w", err)
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var ca int64
		err := tx.QueryRowContext(ctx, s.q(`SELECT created_at FROM rules WHERE id = $1`), r.ID).Scan(&ca)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("rule %s: %w", r.ID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("update rule: %w", err)
		}
		r.CreatedAt, r.UpdatedAt = fromMicros(ca), now
		_, err = tx.ExecContext(ctx, s.q(`UPDATE rules SET name = $2, description = $3, action = $4, rank = $5, criteria = $6,
			updated_at = $7 WHERE id = $1`), r.ID, r.Name, r.Description, string(r.Action), r.Rank, string(crit), micros(now))
		if err != nil {
			return fmt.Errorf("update rule: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *sqlStore) DeleteRule(ctx context.Context, id string) (err error) {
	defer s.observe("rules_delete", time.Now(), &err)
	return s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.q(`DELETE FROM rules WHERE id = $1`), id)
		if err != nil {
			return fmt.Errorf("delete rule: %w", err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return fmt.Errorf("rule %s: %w", id, ErrNotFound)
		}
		return nil
	})
}
