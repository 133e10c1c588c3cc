-- What each running daemon (gateway node, proxy, consumer) reports about
-- itself: counters, recent rates, latency buckets, the health of MySQL and
-- Redis as it sees them.  Each daemon replaces its own row every few seconds
-- and deletes it at a clean stop; the cluster console (/admin/cluster of any
-- gateway) reads them all, so one page shows the whole cluster.  A row whose
-- updated_at is old belongs to a daemon that stopped or cannot reach MySQL;
-- gateways delete rows silent for a day.
SET NAMES utf8mb4;

CREATE TABLE IF NOT EXISTS daemon_status (
  daemon_id   VARCHAR(160) NOT NULL COMMENT 'role and address, e.g. consumer host:pid',
  role        ENUM('gateway','proxy','consumer') NOT NULL,
  updated_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  status      MEDIUMTEXT   NOT NULL COMMENT 'a JSON object, written by the daemon',
  PRIMARY KEY (daemon_id),
  KEY idx_daemon_status_updated (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO schema_migrations (version, name) VALUES (4, '004_daemon_status');
