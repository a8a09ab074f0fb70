// Package transport carries agent messages (findings, heartbeats, events) to
// the mamori server over NATS JetStream, and gives each agent an identity
// that can speak only for its own node.
//
// # Shape
//
//	agent: Publisher ──TLS, user JWT──▶ NATS JetStream stream MAMORI ──▶ Consumer (N server replicas)
//	          │ spool on disk while the server is away, replayed later
//	          └─ Enroll (join token + nkey public key) ──HTTP──▶ Enroller (server)
//
// `mamori run` embeds the NATS server (StartEmbedded). At scale the agents
// and N stateless `mamori server` replicas share an external NATS cluster:
// the replicas pull from one durable consumer, so each message is handled
// by exactly one replica.
//
// # Subjects and envelope
//
// Node <id> publishes on mamori.agent.<id>.findings, .heartbeat and .events
// (SubjectFor). Node ids are 1-64 of [A-Za-z0-9_-] (ValidNodeID; NodeIDFor maps
// host names). Every message is an Envelope, versioned JSON:
//
//	{"v":1,"kind":"finding","nodeId":"n1","msgId":"<32 hex>","sentAt":"<RFC 3339>","payload":{...}}
//
// at most MaxEnvelopeBytes, with a Nats-Msg-Id header "<nodeId>:<msgId>".
// DecodeEnvelope is strict (exact field names, no duplicates, no unknown
// fields, no trailing data); it is fuzzed with a committed corpus.
//
// # Identity and auth
//
// NATS runs in operator mode (Auth: operator, system account, account MAMORI
// with a signing key; LoadOrCreateAuth keeps the seeds in one 0600 file).
// An agent enrolls once: Enroll makes an nkey pair on the node and POSTs the
// public key with a join token to the Enroller (an http.Handler, mount it at
// EnrollPath). The Enroller checks the token (Tokens: random, stored as
// SHA-256 only, single- or multi-use, expiring, revocable), binds the node
// id to that key (NodeRecord; re-binding needs a token with AllowRebind)
// and returns a user JWT whose permissions are AgentPermissions: publish on
// the node's own three subjects only, subscribe to its own inbox and control
// subjects. So a stolen agent credential cannot speak for another node: the
// NATS server refuses the publish. SaveCredentials stores the result under
// the data dir with mode 0600. TLS is required on the NATS listener; the CA
// (LoadOrCreateTLS, made at first start) is handed out at enrollment and
// agents trust nothing else.
//
// Tokens and node records live in JetStream key-value buckets (KVStore), so
// all server replicas share them; MemStore serves tests.
//
// # Delivery
//
// Publisher.Publish never blocks on the network. Messages go out as async
// JetStream publishes; anything not acknowledged (disconnected, ack timeout,
// stream full) is appended to the Spool, a bounded on-disk queue that
// evicts heartbeats first, then events, findings last, and counts every
// loss. A background loop replays the spool when connected. When the
// server refuses for now (stream full, no JetStream answer, ack timeout) the
// publisher backs off: new messages go straight to the spool for a jittered
// pause that doubles per failed probe, and replay restarts with eight
// publishes in flight, doubling as acks return — so an overloaded
// server reads what it can store, not every retry of a fleet. Replays are
// de-duplicated by JetStream within its short window (Nats-Msg-Id,
// StreamOptions.Duplicates) and, beyond it, must be by the server: Consumer hands each Message with a
// DedupKey to use as the idempotency key of the store's upsert.
//
// The Consumer verifies everything before its Handler sees it: size, strict
// decoding, subject shape, envelope nodeId and kind equal to the subject's
// (the subject is what NATS permissions enforce), the Nats-Msg-Id header,
// sentAt neither stale nor in the future, and not already handled by this
// replica. Refused messages are terminated and counted by reason
// (mamori_transport_rejected_total). A Handler error naks the message with
// exponential backoff; Permanent(err) terminates it.
//
// # Wiring (for internal/server and cmd)
//
// mamori run / server:
//
//	emb, _ := transport.StartEmbedded(transport.EmbeddedConfig{DataDir: dir})   // embedded only
//	nc, _ := emb.ConnectInProcess("mamori-server")                              // or ConnectServer for external NATS
//	js, _ := jetstream.New(nc)
//	transport.EnsureStream(ctx, js, transport.StreamOptions{})
//	toks, _ := transport.NewKVStore[transport.TokenRecord](ctx, js, transport.TokenBucket, 1)
//	nodes, _ := transport.NewKVStore[transport.NodeRecord](ctx, js, transport.NodeBucket, 1)
//	tokens := transport.NewTokens(toks)
//	enr, _ := transport.NewEnroller(transport.EnrollerConfig{Auth: emb.Auth, Tokens: tokens, Nodes: nodes,
//	    NATSURLs: []string{emb.ClientURL()}, CAPEM: emb.TLS.CAPEM, Revoke: emb.RevokeUser, Metrics: m})
//	mux.Handle(transport.EnrollPath, enr)
//	cons, _ := transport.NewConsumer(ctx, js, transport.ConsumerConfig{Handler: ingest, Metrics: m})
//	go cons.Run(ctx)
//
// mamori agent:
//
//	creds, err := transport.LoadCredentials(dataDir)
//	if err != nil { creds, _ = transport.Enroll(ctx, transport.EnrollOptions{URL: u, Token: t, NodeID: id})
//	    transport.SaveCredentials(dataDir, creds) }
//	pub, _ := transport.NewPublisher(transport.PublisherConfig{Creds: creds, SpoolDir: dataDir + "/spool", Metrics: m})
//	pub.Publish(transport.KindFinding, finding)
//	defer pub.Close(ctx)
//
// One Metrics (NewMetrics(prometheus.DefaultRegisterer)) per process.
package transport
