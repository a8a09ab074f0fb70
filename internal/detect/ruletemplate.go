package detect

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"
)

// A rule's title, description and dedupKey templates run on the agent's
// one dispatch goroutine for every match, so they may only pick and test
// values: no loops (range), no sub-templates (define, template, block),
// and no function whose output size the template chooses (printf's
// widths) or that calls out (call). What is left runs in time and memory
// bounded by the event.

// templateFuncs are the text/template built-ins a rule template may use.
var templateFuncs = map[string]bool{
	"and": true, "or": true, "not": true, "eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"len": true, "index": true, "slice": true, "print": true, "println": true, "html": true, "js": true, "urlquery": true,
}

// parseRuleTemplate parses a rule template and refuses what could make it
// run long or large.
func parseRuleTemplate(name, src string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=zero").Parse(src)
	if err != nil {
		return nil, err
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("define and block are not allowed in rule templates")
	}
	if t.Tree == nil || t.Tree.Root == nil {
		return t, nil
	}
	if err := checkTemplateNode(t.Tree.Root); err != nil {
		return nil, err
	}
	return t, nil
}

func checkTemplateNode(n parse.Node) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkTemplateNode(c); err != nil {
				return err
			}
		}
		return nil
	case *parse.TextNode, *parse.CommentNode:
		return nil
	case *parse.ActionNode:
		return checkTemplatePipe(n.Pipe)
	case *parse.IfNode:
		return checkTemplateBranch(&n.BranchNode)
	case *parse.WithNode:
		return checkTemplateBranch(&n.BranchNode)
	case *parse.RangeNode:
		return errors.New("range is not allowed in rule templates: they run on every match")
	case *parse.TemplateNode:
		return errors.New("template calls are not allowed in rule templates")
	default:
		return fmt.Errorf("%s is not allowed in rule templates", strings.TrimSpace(n.String()))
	}
}

func checkTemplateBranch(b *parse.BranchNode) error {
	if err := checkTemplatePipe(b.Pipe); err != nil {
		return err
	}
	if err := checkTemplateNode(b.List); err != nil {
		return err
	}
	return checkTemplateNode(b.ElseList)
}

func checkTemplatePipe(p *parse.PipeNode) error {
	if p == nil {
		return nil
	}
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			if err := checkTemplateArg(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkTemplateArg(n parse.Node) error {
	switch n := n.(type) {
	case *parse.IdentifierNode:
		if !templateFuncs[n.Ident] {
			return fmt.Errorf("function %q is not allowed in rule templates", n.Ident)
		}
	case *parse.PipeNode:
		return checkTemplatePipe(n)
	case *parse.ChainNode:
		return checkTemplateArg(n.Node)
	}
	return nil // fields, variables, dot and constants
}

// errRenderFull stops a template that has written all a finding keeps.
var errRenderFull = errors.New("rendered text full")

// cappedBuffer keeps the first max bytes written and then fails the
// template's next write, so no template renders more than that.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.Buffer.Write(p[:max(room, 0)])
		return 0, errRenderFull
	}
	return b.Buffer.Write(p)
}

func render(t *template.Template, data map[string]any) string {
	if t == nil {
		return ""
	}
	// Room for escapes to come; escapeControl clips to maxRendered.
	b := cappedBuffer{max: 4 * maxRendered}
	if err := t.Execute(&b, data); err != nil && !errors.Is(err, errRenderFull) {
		return ""
	}
	return escapeControl(strings.ReplaceAll(b.String(), "<no value>", ""), maxRendered)
}
