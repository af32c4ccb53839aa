-- Schema 2 of the PostgreSQL store: replicas follow each other's writes
-- (src/store/postgres/follow.rs). Every host and baseline row carries the id of the
-- transaction that last wrote it: a replica asks for the rows written by transactions
-- at or after the oldest one still running when it last asked (pg_snapshot_xmin), so
-- nothing committed out of order is missed. Host rows also name the replica that
-- wrote them: a replica's own writes are already in its memory.
ALTER TABLE hosts
    ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN replica text NOT NULL DEFAULT '';
CREATE INDEX hosts_xid ON hosts (xid);

ALTER TABLE baselines ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX baselines_xid ON baselines (xid);

-- A removed accept leaves no row to carry its transaction: every change to accepts
-- also writes this one row.
CREATE TABLE accepts_changed (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    xid xid8 NOT NULL
);
INSERT INTO accepts_changed (xid) VALUES (pg_current_xact_id());

-- The pages' login sessions, shared by the replicas (a browser behind a load balancer
-- reaches any of them): by the SHA-256 of the session id, never the id itself.
CREATE TABLE sessions (
    digest text COLLATE "C" PRIMARY KEY,
    caller text NOT NULL,
    scope text NOT NULL,
    csrf text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX sessions_caller ON sessions (caller, created);
CREATE INDEX sessions_expires ON sessions (expires);

-- The audit records of every replica, for GET /audit on any of them. Each replica's
-- tamper-evident chain (MACs, checkpoints) stays in its own DATA/audit, checked there;
-- this is the merged listing, newest first by `id`.
CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    replica text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    record json NOT NULL,
    UNIQUE (replica, seq)
);
