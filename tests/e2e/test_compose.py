"""docker-compose.yml cannot be run here (no Docker engine), so it is checked
the way a run would first fail: docker-compose validates it, every pushgate
service runs a program this build makes, every PUSHGATE_<KEY> it sets is a
setting of that program, and the database gets every schema file.
docker-compose.ha.yml (replicated stores) is checked the same way, and its
daemons find Redis through its three sentinels and MySQL on three Galera
nodes."""
import os
import re
import subprocess

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def compose(name="docker-compose.yml"):
    out = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, name),
                          "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def settings_of(bin_dir, program):
    out = subprocess.run([os.path.join(bin_dir, program), "--help"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"^  ([a-z_]+) = ", out.stdout, re.M))


def program_of(service):
    words = service.get("command") or []
    if isinstance(words, str):
        words = [words]
    text = " ".join(words)
    m = re.search(r"\b(pushgate-[a-z]+)\b", text)
    assert m, "no pushgate program in %r" % text
    return m.group(1)


def check_pushgate_services(bin_dir, services):
    """Every pushgate service runs a real program with real settings; the
    pushgate services by name."""
    ours = {name: s for name, s in services.items() if s.get("image") == "pushgate"}
    assert {"gateway1", "gateway2", "proxy", "consumer", "producer"} <= set(ours)
    for name, service in ours.items():
        program = program_of(service)
        assert os.access(os.path.join(bin_dir, program), os.X_OK), (name, program)
        known = settings_of(bin_dir, program)
        for var in service.get("environment", {}):
            assert var.startswith("PUSHGATE_"), (name, var)
            assert var[len("PUSHGATE_"):].lower() in known, (name, var, program)
    return ours


def test_compose_file_is_valid_and_names_real_programs_and_settings(bin_dir):
    check_pushgate_services(bin_dir, compose()["services"])


def test_ha_compose_file_runs_redis_with_sentinels(bin_dir):
    services = compose("docker-compose.ha.yml")["services"]
    ours = check_pushgate_services(bin_dir, services)
    sentinels = [s for s in services.values() if "--sentinel" in " ".join(s.get("command") or [])]
    assert len(sentinels) == 3
    replicas = [s for s in services.values() if "--replicaof" in (s.get("command") or [])]
    assert len(replicas) == 1
    addrs = {n["ipv4_address"] for s in sentinels for n in s["networks"].values()}
    for name in ("gateway1", "gateway2", "consumer", "producer"):
        env = ours[name]["environment"]
        listed = {a.split(":")[0] for a in env["PUSHGATE_REDIS_SENTINELS"].split(",")}
        assert listed == addrs, (name, listed, addrs)
        assert env["PUSHGATE_REDIS_MASTER_NAME"] == "pushgate", name
        assert "PUSHGATE_REDIS_HOST" not in env, name


def galera_nodes(services):
    """name -> service of the Galera nodes (wsrep on)."""
    return {n: s for n, s in services.items() if "--wsrep-on=ON" in (s.get("command") or [])}


def test_ha_compose_file_runs_mysql_on_three_galera_nodes(bin_dir):
    services = compose("docker-compose.ha.yml")["services"]
    ours = check_pushgate_services(bin_dir, services)
    nodes = galera_nodes(services)
    assert len(nodes) == 3, sorted(nodes)
    boot = [n for n, s in nodes.items() if "--wsrep-new-cluster" in s["command"]]
    assert len(boot) == 1, boot
    addrs = []
    for name, s in sorted(nodes.items()):
        (net,) = s["networks"].values()
        addrs.append(net["ipv4_address"])
        args = s["command"]
        for arg in ("--binlog-format=ROW", "--innodb-autoinc-lock-mode=2",
                    "--wsrep-provider=/usr/lib/galera/libgalera_smm.so"):
            assert arg in args, (name, arg)
        assert "--wsrep-node-address=%s" % net["ipv4_address"] in args, name
        cluster = [a for a in args if a.startswith("--wsrep-cluster-address=gcomm://")]
        assert cluster and cluster[0].split("//")[1].split(",") == addrs_of(nodes), name
    # the schema is loaded once, on the node that bootstraps
    mounted = " ".join(str(v) for v in services[boot[0]].get("volumes", []))
    for f in sorted(os.listdir(os.path.join(ROOT, "sql"))):
        if f.endswith(".sql"):
            assert f in mounted, "sql/%s is not loaded on %s" % (f, boot[0])
    # every daemon is given all three, in one order, and no single host
    for name in ("gateway1", "gateway2", "proxy", "consumer"):
        env = ours[name]["environment"]
        listed = env["PUSHGATE_MYSQL_HOSTS"].split(",")
        assert [h.split(":")[0] for h in listed] == addrs, (name, listed)
        assert "PUSHGATE_MYSQL_HOST" not in env, name


def addrs_of(nodes):
    return sorted(next(iter(s["networks"].values()))["ipv4_address"] for s in nodes.values())


def test_compose_database_gets_every_schema_file():
    db = compose()["services"]["mariadb"]
    mounted = " ".join(str(v) for v in db.get("volumes", []))
    for f in sorted(os.listdir(os.path.join(ROOT, "sql"))):
        if f.endswith(".sql"):
            assert f in mounted, "sql/%s is not loaded by docker-compose" % f


def test_dockerfile_builds_and_installs_every_program():
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    assert "make BUILD=release all" in text and "make install" in text
    for pkg in ("libevent-dev", "libwslay-dev", "libhiredis-dev", "libmariadb-dev",
                "libjansson-dev", "libjemalloc-dev", "libjwt-dev", "libinih-dev", "libhttp-parser-dev"):
        assert pkg in text, pkg
