-- Schema 1 of the PostgreSQL store (src/store/postgres/). Run once, in one
-- transaction, under the store's advisory lock; `bulletproof_schema_version` records it.
--
-- Every id column is COLLATE "C": listings come back in byte order, as from the
-- embedded store, whatever the database's locale.

-- Baselines are immutable: inserted once, never updated or deleted. The bodies are
-- stored as they are served; the compressed forms are already compressed, and the
-- identity form is served so often from the service's cache that a second
-- compression only costs CPU on a miss: STORAGE EXTERNAL keeps them out of line and
-- uncompressed (TOAST without pglz).
CREATE TABLE baselines (
    image_id text COLLATE "C" PRIMARY KEY,
    -- The BaselineMeta as JSON (sizes and digests of every stored form).
    meta jsonb NOT NULL,
    identity bytea NOT NULL,
    gzip bytea,
    zstd bytea
);
ALTER TABLE baselines
    ALTER COLUMN identity SET STORAGE EXTERNAL,
    ALTER COLUMN gzip SET STORAGE EXTERNAL,
    ALTER COLUMN zstd SET STORAGE EXTERNAL;

-- A baseline's minisign signature (put once, or replaced by an admin).
CREATE TABLE signatures (
    image_id text COLLATE "C" PRIMARY KEY REFERENCES baselines (image_id),
    signature bytea NOT NULL
);

-- The fleet (REFERENCE §7): each host's record as JSON (HostRecord).
CREATE TABLE hosts (
    host_id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

-- Signed reports, exactly as received. A host's reports are one range of the primary
-- key (paging newest first, the per-host cap); `received` is indexed for retention.
CREATE TABLE reports (
    host_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    received bigint NOT NULL CHECK (received >= 0),
    -- The .minisig text as bytes: its untrusted comment may hold any character, NUL
    -- too, which `text` refuses (one such report would fail its whole batch).
    signature bytea NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (host_id, seq)
);
CREATE INDEX reports_received ON reports (received);

-- Accepted drift (Accept as JSON). `json`, not `jsonb`: an accept holds an admin's
-- comment and a finding's values, in which jsonb refuses a \u0000 that JSON allows.
CREATE TABLE accepts (
    id text COLLATE "C" PRIMARY KEY,
    record json NOT NULL
);

-- Each image's host counts per day (days since the Unix epoch, UTC).
CREATE TABLE daily (
    image_id text COLLATE "C" NOT NULL,
    day bigint NOT NULL CHECK (day >= 0),
    hosts bigint NOT NULL,
    drifted bigint NOT NULL,
    failing bigint NOT NULL,
    stale bigint NOT NULL,
    PRIMARY KEY (image_id, day)
);
CREATE INDEX daily_day ON daily (day);
