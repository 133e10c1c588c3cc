-- Boot generations outlive a node's gateway_nodes row (deleted at a clean
-- stop or swept), so a node that comes back at the same address always takes
-- a new generation and its session ids never repeat.
SET NAMES utf8mb4;

CREATE TABLE IF NOT EXISTS node_generations (
  node_id          VARCHAR(128)    NOT NULL,
  boot_generation  BIGINT UNSIGNED NOT NULL,
  updated_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (node_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO schema_migrations (version, name) VALUES (2, '002_node_generations');
