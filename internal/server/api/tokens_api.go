package api

import (
	"net/http"
	"slices"
	"time"
)

// TokenRequest creates an API token.
type TokenRequest struct {
	Name  string `json:"name"`
	Scope Scope  `json:"scope"`
	// TTL is a Go duration ("720h"); empty: the token does not expire.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse carries a new token: the only time it is shown.
type TokenResponse struct {
	Value string `json:"token"`
	Token
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	toks, err := a.opt.Tokens.List()
	if err != nil {
		return err
	}
	// A fleet's agent tokens (one per node) would bury the people's.
	switch v := r.URL.Query().Get("agents"); v {
	case "true":
	case "", "false":
		toks = slices.DeleteFunc(toks, func(t Token) bool { return isAgentToken(t) })
	default:
		return errorf(http.StatusBadRequest, "agents must be true or false, not %q", v)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tokens": toks})
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) error {
	if err := refuseSession(r, "API tokens"); err != nil {
		return err
	}
	var req TokenRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Name == "" || len(req.Name) > 100 {
		return errorf(http.StatusBadRequest, "name must be 1-100 characters")
	}
	if _, err := ParseScope(string(req.Scope)); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return errorf(http.StatusBadRequest, "ttl must be a positive duration like 720h")
		}
		ttl = d
	}
	tok, rec, err := a.opt.Tokens.Create(NewToken{Name: req.Name, Scope: req.Scope, TTL: ttl})
	if err != nil {
		return err
	}
	rec.SecretHash = ""
	return writeJSON(w, http.StatusCreated, TokenResponse{Value: tok, Token: rec})
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := a.revokeWithSessions(r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
