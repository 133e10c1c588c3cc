"""docker-compose.yml cannot be run here (no Docker engine), so it is checked
the way a run would first fail: docker-compose validates it, every pushgate
service runs a program this build makes, every PUSHGATE_<KEY> it sets is a
setting of that program, and the database gets every schema file."""
import os
import re
import subprocess

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def compose():
    out = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, "docker-compose.yml"),
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


def test_compose_file_is_valid_and_names_real_programs_and_settings(bin_dir):
    services = compose()["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "pushgate"}
    assert {"gateway1", "gateway2", "proxy", "consumer", "producer"} <= set(ours)
    for name, service in ours.items():
        program = program_of(service)
        assert os.access(os.path.join(bin_dir, program), os.X_OK), (name, program)
        known = settings_of(bin_dir, program)
        for var in service.get("environment", {}):
            assert var.startswith("PUSHGATE_"), (name, var)
            assert var[len("PUSHGATE_"):].lower() in known, (name, var, program)


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
