-- pushgate schema, version 1.
--
-- Idempotent: safe to load again on a database that already has it.
-- Identifiers (client ids, uuids, message ids, app tokens) compare byte for byte
-- (utf8mb4_bin): client ids are base64 and app tokens are secrets, so case matters.
-- Times are DATETIME(3) in the server's time zone (milliseconds).

SET NAMES utf8mb4;

CREATE TABLE IF NOT EXISTS schema_migrations (
  version     INT UNSIGNED NOT NULL,
  name        VARCHAR(128) NOT NULL,
  applied_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per running gateway. A node inserts (or replaces) its row at start,
-- updates heartbeat_at periodically, sets state='draining' on SIGTERM and
-- deletes the row when it stops. Rows whose heartbeat_at is too old are swept
-- together with their online_clients rows (matched on ip + internal_port).
CREATE TABLE IF NOT EXISTS gateway_nodes (
  node_id          VARCHAR(128)    NOT NULL,
  ip               VARCHAR(64)     NOT NULL COMMENT 'advertised address',
  ws_port          INT UNSIGNED    NOT NULL COMMENT 'WebSocket/HTTP port for browsers',
  internal_port    INT UNSIGNED    NOT NULL COMMENT 'internal TCP port for consumer and proxy',
  boot_generation  BIGINT UNSIGNED NOT NULL COMMENT 'changes at every start of the node',
  started_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  heartbeat_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  state            ENUM('up','draining') NOT NULL DEFAULT 'up',
  PRIMARY KEY (node_id),
  KEY idx_gateway_nodes_addr (ip, internal_port),
  KEY idx_gateway_nodes_heartbeat (heartbeat_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per registered WebSocket connection in the cluster. Inserted at
-- registration, deleted at close. node_ip/node_port name the gateway's
-- internal port (where the proxy delivers); session_id is the node's 64-bit
-- never-repeating session id (boot generation + counter).
CREATE TABLE IF NOT EXISTS online_clients (
  client_id     VARCHAR(128)    NOT NULL,
  uuid          VARCHAR(64)     NOT NULL,
  node_ip       VARCHAR(64)     NOT NULL,
  node_port     INT UNSIGNED    NOT NULL COMMENT 'internal port of the node',
  session_id    BIGINT UNSIGNED NOT NULL,
  app           VARCHAR(64)     NOT NULL DEFAULT '',
  role          VARCHAR(32)     NOT NULL DEFAULT '',
  connected_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (client_id),
  KEY idx_online_clients_uuid (uuid),
  KEY idx_online_clients_node (node_ip, node_port)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Messages for agents who were offline (or did not ack in time). Delivered
-- oldest first (by id) at the next connect; msg_id is unique per uuid so a
-- redelivered work order is stored once.
CREATE TABLE IF NOT EXISTS offline_messages (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uuid          VARCHAR(64)     NOT NULL,
  msg_id        VARCHAR(64)     NOT NULL,
  payload       MEDIUMTEXT      NOT NULL COMMENT 'JSON event for the browser',
  created_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  delivered_at  DATETIME(3)     NULL DEFAULT NULL,
  acked_at      DATETIME(3)     NULL DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_offline_messages_uuid_msg (uuid, msg_id),
  KEY idx_offline_messages_uuid_id (uuid, id),
  CONSTRAINT chk_offline_messages_payload CHECK (JSON_VALID(payload))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Applications allowed to push: every internal request carries a chat_token
-- that must name an enabled row here.
CREATE TABLE IF NOT EXISTS apps (
  chat_token  VARCHAR(128) NOT NULL,
  name        VARCHAR(128) COLLATE utf8mb4_unicode_ci NOT NULL,
  enabled     TINYINT(1)   NOT NULL DEFAULT 1,
  created_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (chat_token)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO schema_migrations (version, name) VALUES (1, '001_schema');
