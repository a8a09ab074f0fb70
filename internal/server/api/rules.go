package api

import (
	"net/http"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// RuleRequest is the body of a rule create or replace: the rule's own
// fields (id and times are the server's).
type RuleRequest struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Action      store.Action      `json:"action"`
	Rank        int               `json:"rank"`
	Criteria    []store.Criterion `json:"criteria"`
}

// RuleResponse is a rule, plus how many existing findings it archived when
// asked to apply to them.
type RuleResponse struct {
	store.Rule
	Archived int `json:"archived,omitempty"`
}

func (req RuleRequest) rule() store.Rule {
	return store.Rule{Name: req.Name, Description: req.Description, Action: req.Action, Rank: req.Rank, Criteria: req.Criteria}
}

func (a *API) listRules(w http.ResponseWriter, r *http.Request) error {
	rules, err := a.opt.Store.ListRules(r.Context())
	if err != nil {
		return err
	}
	if rules == nil {
		rules = []store.Rule{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"rules": rules})
}

func (a *API) getRule(w http.ResponseWriter, r *http.Request) error {
	rule, err := a.opt.Store.GetRule(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rule)
}

// applyExisting reads ?applyExisting=true: an ARCHIVE rule then also
// archives the stored findings it matches, not only future ones.
func applyExisting(r *http.Request) (bool, error) {
	switch r.URL.Query().Get("applyExisting") {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, errorf(http.StatusBadRequest, "applyExisting must be true or false")
}

func (a *API) createRule(w http.ResponseWriter, r *http.Request) error {
	apply, err := applyExisting(r)
	if err != nil {
		return err
	}
	var req RuleRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	rule, err := a.opt.Store.CreateRule(r.Context(), req.rule())
	if err != nil {
		return err
	}
	a.rulesChanged()
	return a.ruleResponse(w, r, http.StatusCreated, rule, apply)
}

func (a *API) updateRule(w http.ResponseWriter, r *http.Request) error {
	apply, err := applyExisting(r)
	if err != nil {
		return err
	}
	var req RuleRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	rule := req.rule()
	rule.ID = r.PathValue("id")
	updated, err := a.opt.Store.UpdateRule(r.Context(), rule)
	if err != nil {
		return err
	}
	a.rulesChanged()
	return a.ruleResponse(w, r, http.StatusOK, updated, apply)
}

func (a *API) ruleResponse(w http.ResponseWriter, r *http.Request, status int, rule *store.Rule, apply bool) error {
	resp := RuleResponse{Rule: *rule}
	if apply && rule.Action == store.ActionArchive {
		n, err := a.opt.Store.ArchiveMatching(r.Context(), rule.Criteria, rule.ID)
		if err != nil {
			return err
		}
		resp.Archived = n
	}
	return writeJSON(w, status, resp)
}

func (a *API) deleteRule(w http.ResponseWriter, r *http.Request) error {
	if err := a.opt.Store.DeleteRule(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	a.rulesChanged()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) rulesChanged() {
	if a.opt.RulesChanged != nil {
		a.opt.RulesChanged()
	}
}
