// The database schema: versioned migrations, applied in order by openStore.

/** Ordered; index + 1 is the schema version stored in PRAGMA user_version. Never edit a shipped entry. */
export const MIGRATIONS: string[] = [
  `
  CREATE TABLE reservations (
    id            INTEGER PRIMARY KEY,
    ip            TEXT NOT NULL,            -- canonical text, unique across all pools
    pool          TEXT NOT NULL,
    family        INTEGER NOT NULL,
    owner         TEXT NOT NULL,            -- ns/sts/ordinal, or containerID/ifName
    kind          TEXT NOT NULL CHECK (kind IN ('statefulset', 'attachment')),
    sticky        INTEGER NOT NULL,
    pinned        INTEGER NOT NULL DEFAULT 0,
    namespace     TEXT,
    statefulset   TEXT,
    ordinal       INTEGER,
    container_id  TEXT,                     -- NULL when detached
    ifname        TEXT,
    network       TEXT,
    pod_namespace TEXT,
    pod_name      TEXT,
    pod_uid       TEXT,
    created_at    INTEGER NOT NULL,
    attached_at   INTEGER,
    detached_at   INTEGER
  );
  CREATE UNIQUE INDEX reservations_ip ON reservations(ip);
  CREATE UNIQUE INDEX reservations_sticky_owner ON reservations(owner, pool) WHERE sticky = 1;
  CREATE UNIQUE INDEX reservations_attachment ON reservations(container_id, ifname, network, pool)
    WHERE container_id IS NOT NULL;
  CREATE INDEX reservations_sts ON reservations(namespace, statefulset, ordinal);
  CREATE INDEX reservations_network ON reservations(network, attached_at) WHERE container_id IS NOT NULL;
  CREATE INDEX reservations_pool ON reservations(pool, container_id);
  CREATE INDEX reservations_detached ON reservations(detached_at) WHERE container_id IS NULL;

  -- Released addresses wait here for the cooldown, then are reused least recently released first.
  CREATE TABLE released (
    ip          TEXT PRIMARY KEY,
    pool        TEXT NOT NULL,
    released_at INTEGER NOT NULL
  );
  CREATE INDEX released_pool_time ON released(pool, released_at);

  -- Per pool: the next never-used candidate address (decimal BigInt text; '' = walked to the end).
  CREATE TABLE pool_cursor (
    pool        TEXT PRIMARY KEY,
    next        TEXT NOT NULL,
    fingerprint TEXT NOT NULL
  );

  -- StatefulSets registered through the API (reserve/pin/register); the config may list more.
  CREATE TABLE statefulsets (
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
  );
  `,
  `
  -- StatefulSets seen through the Kubernetes API (ipamd/kube): the UID and the retention policy
  -- last seen, so that a deletion or a recreation with a new UID is recognised after a restart.
  CREATE TABLE kube_statefulsets (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    uid        TEXT NOT NULL,
    retention  TEXT NOT NULL,                -- JSON: the parsed berth.dev/ip-retention policy
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
  );
  `,
  // 3: the commit sequence (monotonic, one per group commit: orders attachments for GC whatever the
  // wall clock does, and is recorded outside the WAL to detect lost commits), the database's identity,
  // and an index that pages GET /v1/reservations in its listing order.
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL);
  INSERT INTO meta (key, value) VALUES ('commit_seq', 0), ('database_id', lower(hex(randomblob(16))));
  ALTER TABLE reservations ADD COLUMN attached_seq INTEGER;   -- commit sequence of the attach; NULL: before version 3
  CREATE INDEX reservations_listing ON reservations(pool, coalesce(namespace, ''), coalesce(statefulset, ''),
    coalesce(ordinal, -1), id);
  `,
  // 4: cluster mode (ipamd/cluster/): changes of shared state waiting for etcd, the node's buffer, small state.
  `
  CREATE TABLE cluster_outbox (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    op         TEXT NOT NULL,            -- attach | release | detach-sticky | release-sticky
    json       TEXT NOT NULL
  );
  -- Addresses etcd says this node buffers (a subset of them: written after etcd grants, removed before it takes).
  CREATE TABLE cluster_buffer (
    pool         TEXT NOT NULL,
    ip           TEXT NOT NULL,
    mod_revision INTEGER NOT NULL,
    not_before   INTEGER NOT NULL,       -- end of the cooldown of a released address (ms), 0 for a fresh one
    PRIMARY KEY (pool, ip)
  );
  CREATE TABLE cluster_state (
    key   TEXT PRIMARY KEY,              -- liveness_confirmed_at, sticky_revision
    value TEXT NOT NULL
  );
  `,
  // 5: the reservation stream (ipamd/events.ts): the recent changes, each under the sequence number
  // GET /v1/reservations?watch=true gives out; written in the commit of the change they describe.
  `
  CREATE TABLE reservation_events (
    seq   INTEGER PRIMARY KEY,           -- never reused: the newest row is never pruned
    json  TEXT NOT NULL                  -- the event as the stream sends it
  );
  `,
  // 6: cluster mode's sticky events (ipamd/cluster/sticky-events.ts): each sticky identity as this node last saw it in
  // etcd, so that a change (or a re-list) is compared with what was already emitted; cluster_state's
  // sticky_events_revision is the revision it reflects (it replaces sticky_revision, no longer read).
  `
  CREATE TABLE cluster_sticky_seen (
    name  TEXT PRIMARY KEY,              -- <pool>/<namespace>/<statefulset>/<ordinal>/<if>
    json  TEXT NOT NULL                  -- the StickyRecord with its modRevision
  );
  `,
  // 7: the next released address to reuse (least recently released, then the lowest) is one index seek: with
  // (pool, released_at) alone, SQLite sorted every address released at the same instant (a GC or a scale-down
  // releases thousands at once) on each ADD once the pool's never-used addresses ran out.
  `
  CREATE INDEX released_pool_time_ip ON released(pool, released_at, ip);
  DROP INDEX released_pool_time;
  `,
];

/** Indexes whose absence would let an address be held twice, or a member hold two: checked at every start. */
export const UNIQUE_INDEXES: Record<string, string> = {
  reservations_ip: "CREATE UNIQUE INDEX reservations_ip ON reservations(ip)",
  reservations_sticky_owner: "CREATE UNIQUE INDEX reservations_sticky_owner ON reservations(owner, pool) WHERE sticky = 1",
  reservations_attachment: `CREATE UNIQUE INDEX reservations_attachment ON reservations(container_id, ifname, network, pool)
    WHERE container_id IS NOT NULL`,
};
