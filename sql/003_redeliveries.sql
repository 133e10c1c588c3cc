-- Work orders stored for a browser that is online on another node, because
-- the path to that node was broken (the proxy down, the node unreachable).
-- The node named here reads its rows and delivers what is stored for those
-- uuids to its sessions, without waiting for the browsers to reconnect.
SET NAMES utf8mb4;

CREATE TABLE IF NOT EXISTS redeliveries (
  node_ip     VARCHAR(64)  NOT NULL,
  node_port   INT UNSIGNED NOT NULL,
  uuid        VARCHAR(64)  NOT NULL,
  created_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (node_ip, node_port, uuid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO schema_migrations (version, name) VALUES (3, '003_redeliveries');
