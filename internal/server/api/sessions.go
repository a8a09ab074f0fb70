package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// DefaultSessionTTL is how long a console session lasts at most.
const DefaultSessionTTL = 12 * time.Hour

// Console sessions are short-lived API tokens minted at login, so the
// browser never holds the token a person logged in with: logging out
// revokes the session's token on the server (a copied cookie stops working
// at once), a session expires on its own, and revoking the token it was
// opened with ends it too. They are ordinary tokens otherwise (same scope
// as their parent, listed with their parent's id), so every replica checks
// them as it checks any token.

// openSession mints a session token for the caller's token.
func (a *API) openSession(w http.ResponseWriter, r *http.Request) error {
	parent, ok := caller(r)
	if !ok {
		return errors.New("open session: no caller")
	}
	if parent.Parent != "" {
		// A session extending itself would never expire.
		return errorf(http.StatusForbidden, "a session token cannot open another session")
	}
	now := time.Now()
	ttl := a.opt.SessionTTL
	if !parent.ExpiresAt.IsZero() {
		ttl = min(ttl, parent.ExpiresAt.Sub(now).Truncate(time.Second))
	}
	if ttl < time.Second {
		return errorf(http.StatusForbidden, "token %q expires in less than a second", parent.Name)
	}
	a.tidySessions(now, parent.ID)
	tok, rec, err := a.opt.Tokens.Create(NewToken{
		Name: "console session of " + parent.Name, Scope: parent.Scope, TTL: ttl, Parent: parent.ID})
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	// The parent may have been revoked between the check and the mint: its
	// cascade would have missed this session.
	if _, err := a.opt.Tokens.Get(parent.ID); err != nil {
		_ = a.opt.Tokens.Revoke(rec.ID)
		if errors.Is(err, errNotFound) {
			return errorf(http.StatusUnauthorized, "token %q was revoked", parent.Name)
		}
		return fmt.Errorf("open session: check token %s: %w", parent.ID, err)
	}
	a.opt.Logger.Info("console session opened", "token", parent.ID, "name", parent.Name, "session", rec.ID, "expires", rec.ExpiresAt)
	rec.SecretHash = ""
	return writeJSON(w, http.StatusCreated, TokenResponse{Value: tok, Token: rec})
}

// closeSession revokes the session token the request bears.
func (a *API) closeSession(w http.ResponseWriter, r *http.Request) error {
	tok, ok := caller(r)
	if !ok {
		return errors.New("close session: no caller")
	}
	if tok.Parent == "" {
		return errorf(http.StatusBadRequest, "token %q is not a session token; revoke it with DELETE /api/v1/tokens/%s", tok.Name, tok.ID)
	}
	if err := a.opt.Tokens.Revoke(tok.ID); err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	a.opt.Logger.Info("console session closed", "session", tok.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeWithSessions revokes a token and every session opened with it —
// also when the token itself is already gone (a revocation whose cascade
// failed half-way is finished by repeating it).
func (a *API) revokeWithSessions(id string) error {
	gone := a.opt.Tokens.Revoke(id)
	if gone != nil && !errors.Is(gone, errNotFound) {
		return gone
	}
	toks, err := a.opt.Tokens.List()
	if err != nil {
		return fmt.Errorf("revoke the sessions of %s: %w", id, err)
	}
	ended := 0
	for _, t := range toks {
		if t.Parent == id {
			if err := a.opt.Tokens.Revoke(t.ID); err != nil && !errors.Is(err, errNotFound) {
				return fmt.Errorf("revoke session %s of %s: %w", t.ID, id, err)
			}
			ended++
		}
	}
	if gone != nil && ended == 0 {
		return gone
	}
	return nil
}

// maxSessionsPerToken bounds the live sessions of one token: a leaked read
// token looping on POST /sessions must not grow the token store without
// end. Past it, the oldest end.
const maxSessionsPerToken = 20

// tidySessions forgets sessions that expired (nobody logged out of them)
// or whose parent is gone, and the oldest of parent's past the bound so
// one more fits; best effort.
func (a *API) tidySessions(now time.Time, parent string) {
	toks, err := a.opt.Tokens.List()
	if err != nil {
		a.opt.Logger.Warn("tidy console sessions", "err", err)
		return
	}
	ids := make(map[string]bool, len(toks))
	for _, t := range toks {
		ids[t.ID] = true
	}
	var mine []Token // oldest first, as List sorts
	for _, t := range toks {
		if t.Parent == "" {
			continue
		}
		expired := !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
		if !expired && ids[t.Parent] {
			if t.Parent == parent {
				mine = append(mine, t)
			}
			continue
		}
		if err := a.opt.Tokens.Revoke(t.ID); err != nil && !errors.Is(err, errNotFound) {
			a.opt.Logger.Warn("forget console session", "session", t.ID, "err", err)
		}
	}
	for _, t := range mine[:max(0, len(mine)-(maxSessionsPerToken-1))] {
		if err := a.opt.Tokens.Revoke(t.ID); err != nil && !errors.Is(err, errNotFound) {
			a.opt.Logger.Warn("end the oldest console session", "session", t.ID, "err", err)
		}
	}
}

// refuseSession stops a console session from making credentials: a token
// or join token minted through a session would outlive its logout and its
// parent's revocation, turning a stolen cookie into lasting access.
func refuseSession(r *http.Request, what string) error {
	if tok, ok := caller(r); ok && tok.Parent != "" {
		return errorf(http.StatusForbidden, "a console session cannot create %s: use an API token (the session would end, the %s would not)", what, what)
	}
	return nil
}
