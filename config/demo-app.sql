-- The app token of the docker-compose demo (never load this in production).
INSERT IGNORE INTO apps (chat_token, name, enabled) VALUES ('demo-app-token', 'demo', 1);
