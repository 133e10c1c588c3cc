"""The test fixture itself: MariaDB with the schema, Redis, and a clean stop."""

import os
import time

from fixture import Stack, _alive

TABLES = {"gateway_nodes", "online_clients", "offline_messages", "apps",
          "schema_migrations"}


def test_mysql_schema_loaded(stack):
    conn = stack.mysql()
    try:
        with conn.cursor() as c:
            c.execute("SELECT TABLE_NAME, ENGINE, TABLE_COLLATION "
                      "FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s",
                      (stack.mysql_db,))
            rows = {r[0]: (r[1], r[2]) for r in c.fetchall()}
            assert TABLES <= set(rows), rows
            for name in TABLES:
                engine, collation = rows[name]
                assert engine == "InnoDB", (name, engine)
                assert collation.startswith("utf8mb4"), (name, collation)

            c.execute("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
                      "WHERE SCHEMA_NAME=%s", (stack.mysql_db,))
            assert c.fetchone()[0] == "utf8mb4"

            c.execute("SELECT version FROM schema_migrations")
            assert (1,) in c.fetchall()

            # The pushgate user can write, and 4-byte UTF-8 survives.
            stack.add_app("tok-fixture", "fixture app")
            c.execute("INSERT INTO offline_messages (uuid, msg_id, payload) "
                      "VALUES (%s, %s, %s)",
                      ("u-1", "1-0", '{"infos":"你有一条新工单待处理 \U0001F600"}'))
            c.execute("SELECT payload FROM offline_messages WHERE uuid=%s", ("u-1",))
            assert "\U0001F600" in c.fetchone()[0]
            c.execute("SELECT enabled FROM apps WHERE chat_token=%s", ("tok-fixture",))
            assert c.fetchone()[0] == 1
            c.execute("DELETE FROM offline_messages WHERE uuid=%s", ("u-1",))
            c.execute("DELETE FROM apps WHERE chat_token=%s", ("tok-fixture",))
    finally:
        conn.close()


def test_env_points_at_stack(stack):
    env = stack.env()
    assert env["PUSHGATE_MYSQL_HOST"] == "127.0.0.1"
    assert env["PUSHGATE_MYSQL_PORT"] == str(stack.mysql_port)
    assert env["PUSHGATE_MYSQL_USER"] == "pushgate"
    assert env["PUSHGATE_MYSQL_PASSWORD"] == "pushgate"
    assert env["PUSHGATE_MYSQL_DATABASE"] == "pushgate"
    assert env["PUSHGATE_REDIS_HOST"] == "127.0.0.1"
    assert env["PUSHGATE_REDIS_PORT"] == str(stack.redis_port)


def test_redis_ping_and_xadd(stack):
    r = stack.redis()
    assert r.ping() is True
    entry = r.xadd("pushgate:test-fixture", {"msg": '{"url":"/worksheet/send-message"}'})
    assert r.xlen("pushgate:test-fixture") == 1
    (eid, fields), = r.xrange("pushgate:test-fixture")
    assert eid == entry and fields["msg"].startswith("{")
    r.delete("pushgate:test-fixture")


def test_stop_leaves_nothing(tmp_path):
    s = Stack()
    s.start()
    pids = [(s.mysql_pid, s._mysql_start), (s.redis_pid, s._redis_start)]
    assert all(_alive(p, t) for p, t in pids)
    d = s.dir
    assert os.path.isdir(d)
    s.stop()
    assert not any(_alive(p, t) for p, t in pids)
    assert not os.path.exists(d)

    # Same in a folder that already existed: the folder stays, our files go.
    with Stack(dir=str(tmp_path)) as s2:
        assert os.path.exists(os.path.join(str(tmp_path), "stack.json"))
        pids = [(s2.mysql_pid, s2._mysql_start), (s2.redis_pid, s2._redis_start)]
    deadline = time.monotonic() + 5
    while any(_alive(p, t) for p, t in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p, t) for p, t in pids)
    assert os.path.isdir(str(tmp_path))
    assert os.listdir(str(tmp_path)) == []
