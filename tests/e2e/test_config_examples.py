"""The example files in config/ name every setting the programs know, so they
cannot drift from the code, and the programs start with them."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from engine_util import free_port

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

PROGRAMS = {
    "echo_server": ("echo_server.ini", []),
    "task_server": ("task_server.ini", []),
    "pushgate-gateway": ("gateway.ini", ["--set", "jwt_secret=example-secret-0123456789",
                                         "--set", "advertised_ip=127.0.0.1"]),
    "pushgate-proxy": ("proxy.ini", []),
    "pushgate-consumer": ("consumer.ini", []),
}


def settings_from_help(bin_dir, name):
    out = subprocess.run([os.path.join(bin_dir, name), "--help"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return re.findall(r"^  ([a-z_]+) = ", out, re.M)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_example_config_lists_every_setting_and_loads(bin_dir, tmp_path, stack, name):
    ini, extra = PROGRAMS[name]
    path = os.path.join(ROOT, "config", ini)
    text = open(path).read()
    in_file = re.findall(r"^([a-z_]+) = ", text, re.M)
    known = settings_from_help(bin_dir, name)
    assert "log_level" in known
    assert sorted(in_file) == sorted(known)

    log = tmp_path / "log"
    args = [os.path.join(bin_dir, name), "-c", path, "--set", f"log_file={log}"] + extra
    port = None
    if "port" in known:
        port = free_port()
        args += ["--set", f"port={port}"]
    if name == "pushgate-gateway":
        args += ["--set", f"internal_port={free_port()}"]
    proc = subprocess.Popen(args, env=dict(os.environ, **stack.env()))
    try:
        deadline = time.time() + 15
        while True:
            assert time.time() < deadline and proc.poll() is None, "did not start"
            if port is None and log.exists() and "started" in log.read_text():
                break
            if port is not None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("name", ["pushgate-gateway", "pushgate-proxy", "pushgate-consumer",
                                  "pushgate-ctl"])
def test_readme_lists_every_setting_with_its_default(bin_dir, name):
    """The README's settings reference cannot drift from the programs."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    out = subprocess.run([os.path.join(bin_dir, name), "--help"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    rows = re.findall(r"^  ([a-z_]+) = (\S+)", out, re.M)
    assert rows
    for key, default in rows:
        assert "| `%s` | `%s` |" % (key, default) in readme, (name, key, default)
