package detect

import (
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// Every exec is matched against all command patterns, and almost none
// matches: running 18 regular expressions per exec was a tenth of the
// agent's CPU in an exec storm. Each pattern therefore carries needles —
// literal strings of which any match must contain at least one, derived
// from the expression itself — and runs only on lines holding one.

// needlesOf returns strings one of which every match of re contains, or
// nil when no such set is found (the pattern then always runs).
func needlesOf(re string) []string {
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return nil
	}
	return needles(parsed.Simplify())
}

func needles(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil
		}
		return []string{string(re.Rune)}
	case syntax.OpCapture, syntax.OpPlus:
		return needles(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return needles(re.Sub[0])
		}
	case syntax.OpCharClass:
		// A small class of single characters: each one is a needle.
		var out []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if len(out) == 4 || r >= utf8.RuneSelf {
					return nil
				}
				out = append(out, string(r))
			}
		}
		return out
	case syntax.OpAlternate:
		var out []string
		for _, s := range re.Sub {
			n := needles(s)
			if n == nil {
				return nil
			}
			out = append(out, n...)
		}
		return out
	case syntax.OpConcat:
		// Runs of adjacent literals make one longer needle; of the parts,
		// the set whose shortest needle is longest filters best.
		var best []string
		var run strings.Builder
		consider := func(n []string) {
			if n != nil && (best == nil || shortest(n) > shortest(best)) {
				best = n
			}
		}
		for _, s := range re.Sub {
			if s.Op == syntax.OpLiteral && s.Flags&syntax.FoldCase == 0 {
				run.WriteString(string(s.Rune))
				continue
			}
			if run.Len() > 0 {
				consider([]string{run.String()})
				run.Reset()
			}
			consider(needles(s))
		}
		if run.Len() > 0 {
			consider([]string{run.String()})
		}
		return best
	}
	return nil
}

func shortest(ss []string) int {
	m := len(ss[0])
	for _, s := range ss[1:] {
		m = min(m, len(s))
	}
	return m
}

// mayMatch reports whether line holds one of the needles (always, without
// needles).
func mayMatch(line string, needles []string) bool {
	if needles == nil {
		return true
	}
	for _, n := range needles {
		if strings.Contains(line, n) {
			return true
		}
	}
	return false
}
