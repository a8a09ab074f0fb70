package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RevocationBucket is the JetStream key-value bucket where server replicas
// sharing an external cluster keep revoked agent keys: the auth file each
// replica mounts is a copy, so the shared truth must live in the cluster.
const RevocationBucket = "mamori_revocations"

// ClusterRevoker revokes agent keys on an external NATS cluster: it records
// the key in RevocationBucket, merges every replica's revocations into the
// account JWT, and pushes that JWT to the cluster's full account resolver,
// which closes the agent's connections on every NATS server at once.
type ClusterRevoker struct {
	auth *Auth
	kv   jetstream.KeyValue
	sys  *nats.Conn
	log  *slog.Logger
}

// NewClusterRevoker opens the revocation bucket through js, and takes sys, a
// connection as a system-account user (ConnectServer with System set), for
// pushing account JWTs. It merges and pushes what the bucket already holds,
// so a replica that restarts with an old auth file cannot un-revoke a key.
func NewClusterRevoker(ctx context.Context, js jetstream.JetStream, replicas int, auth *Auth, sys *nats.Conn, log *slog.Logger) (*ClusterRevoker, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: RevocationBucket, History: 1,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", RevocationBucket, err)
	}
	if log == nil {
		log = slog.Default()
	}
	r := &ClusterRevoker{auth: auth, kv: kv, sys: sys, log: log}
	if err := r.sync(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Revoke voids every credential issued so far to the agent key userPub on
// every NATS server of the cluster.
func (r *ClusterRevoker) Revoke(userPub string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.auth.Revoke(userPub); err != nil {
		return err
	}
	at := r.auth.Revocations()[userPub]
	if _, err := r.kv.Put(ctx, userPub, []byte(strconv.FormatInt(at, 10))); err != nil {
		return fmt.Errorf("revoke: record in %s: %w", RevocationBucket, err)
	}
	return r.sync(ctx)
}

// Run re-merges and re-pushes every interval until ctx ends, so a NATS
// server that was down during a revocation (and restarted with an older
// account JWT) learns it within one interval, as do replicas' auth files.
func (r *ClusterRevoker) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := r.sync(sctx); err != nil && ctx.Err() == nil {
			r.log.Warn("revocations: periodic push failed", "err", err)
		}
		cancel()
	}
}

// sync merges the bucket's revocations (other replicas') into the account
// JWT and pushes it. Pushing unchanged claims is harmless, so it always
// pushes: the cluster may have been set up from an older config.
func (r *ClusterRevoker) sync(ctx context.Context) error {
	shared := map[string]int64{}
	keys, err := r.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("revocations: list: %w", err)
	}
	for k := range keys.Keys() {
		e, err := r.kv.Get(ctx, k)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return fmt.Errorf("revocations: get %s: %w", k, err)
		}
		at, err := strconv.ParseInt(string(e.Value()), 10, 64)
		if err != nil {
			r.log.Warn("revocations: ignoring malformed entry", "key", k)
			continue
		}
		shared[k] = at
	}
	if _, err := r.auth.MergeRevocations(shared); err != nil {
		return err
	}
	return PushAccountJWT(ctx, r.sys, r.auth)
}

// PushAccountJWT sends the account's current JWT to the account resolver of
// the cluster sys (a system-account connection) is attached to; a full
// resolver stores it and passes it to the other servers.
func PushAccountJWT(ctx context.Context, sys *nats.Conn, auth *Auth) error {
	subj := fmt.Sprintf("$SYS.REQ.ACCOUNT.%s.CLAIMS.UPDATE", auth.AccountPublicKey())
	msg, err := sys.RequestWithContext(ctx, subj, []byte(auth.AccountJWT()))
	if err != nil {
		return fmt.Errorf("push account jwt: %w (does the NATS config use mamori's generated resolver block?)", err)
	}
	var reply struct {
		Data *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"data"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return fmt.Errorf("push account jwt: unreadable reply %q", truncate(msg.Data, 200))
	}
	if reply.Error != nil {
		return fmt.Errorf("push account jwt: resolver refused it: %s (%d)", reply.Error.Description, reply.Error.Code)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
