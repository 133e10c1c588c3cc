"""pushgate-ctl dead list / dead replay end to end (ASan + UBSan build), with
the real consumer making the dead letters and delivering what is replayed,
against fake gateways (static `gateways` setting) or a real gateway with
real browsers:

- list shows each dead letter's id, time, original id, reason and message,
  filters by gateway error code or text, prints JSON lines;
- replay (--id, --all) puts entries back with a field msg_id holding the
  original entry id: the consumer sends that as the request's msg_id, the
  browser's WorksheetMsg carries it, the entry is XACKed, and a replayed
  entry that dies again keeps it;
- the consumer checks a msg_id field like any input;
- malformed dead letters are reported and left alone, never replayed.

Every test uses its own streams; every wait is bounded; only processes
started here are stopped.  Helpers: test_consumer.py, test_ctl.py."""
import asyncio
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway_util import free_port  # noqa: E402
from test_consumer import (TOKEN, Browser, fakes, pending, procs, publish,  # noqa: E402,F401
                           start_consumer, start_gateway, stop_gateway, stream, uid, until,
                           wait_sync, work_order)
from test_ctl import ctl, ok, table_rows  # noqa: E402

RETRY = {"code": 10500, "msg": "MySQL failed"}
REFUSE = {"code": 10201, "msg": "chat_token is not valid"}
OK = {"code": 0, "msg": "ok", "delivered": 1, "forwarded": 0, "stored": 0}
ID_RE = re.compile(r"^\d+-\d+$")


# ---- helpers ----

def dead_of(stream):
    return stream + ":dead"


def dead(bin_dir, stack, stream, *args, env=None):
    """pushgate-ctl dead ... on this test's streams."""
    return ctl(bin_dir, stack, "dead", *args, "--set", "stream=" + stream,
               "--set", "dead_letter_stream=" + dead_of(stream), env=env)


def dead_letters(r, stream):
    return r.xrange(dead_of(stream))


def failed(p, code=1):
    assert p.returncode == code, "exit %d\nstdout: %s\nstderr: %s" % (p.returncode, p.stdout,
                                                                      p.stderr)
    return p


def replayed_lines(p):
    """{dead letter id: (new entry id, msg_id)} from replay's output."""
    found = re.findall(r"^replayed (\S+) as (\S+) \(msg_id (\S+)\)$", p.stdout, re.M)
    return {d: (new, msg_id) for d, new, msg_id in found}


def fail_until_ok(state):
    """A fake gateway refusing (10201, final) while state["mode"] says so."""
    return lambda req, n: dict(REFUSE) if state["mode"] == "refuse" else dict(OK)


# ---- list ----

def test_list_shows_reasons_and_filters_by_code(bin_dir, stack, tmp_path, procs, stream, fakes):
    def rule(req, n):
        infos = req["data"][0]["data"]["infos"]
        return dict(RETRY) if infos == "retry" else dict(REFUSE)

    x = fakes(rule)
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr,
                       max_deliveries=2)
    r = stack.redis()
    users = [uid("agent"), uid("agent")]
    sources = publish(r, stream, [work_order(users[0], "retry"), work_order(users[1], "refuse"),
                                  "not json", {"body": "no msg here"}])
    wait_sync(lambda: len(dead_letters(r, stream)) == 4, 30, "four dead letters")
    wait_sync(lambda: pending(r, stream) == 0, 10, "the XACKs")
    c.stop()
    letters = dead_letters(r, stream)
    by_source = {f["source_id"]: (i, f) for i, f in letters}

    rows = table_rows(ok(dead(bin_dir, stack, stream, "list")).stdout)
    assert [row[0] for row in rows] == [i for i, _ in letters]
    for row in rows:
        dead_id, when, original, reason = row[:4]
        assert ID_RE.match(original) and by_source[original][0] == dead_id
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when), when
        full = by_source[original][1]["reason"]
        assert reason == full or (reason.endswith("...") and full.startswith(reason[:-4]))
    retry_row = next(row for row in rows if row[2] == sources[0])
    assert "gave up after 2 deliveries" in retry_row[3] and "10500" in retry_row[3]
    # the message column shows the work order's data, not its chat_token
    assert retry_row[4].startswith('[{"uuid":"%s"' % users[0]) and TOKEN not in retry_row[4]
    nomsg_row = next(row for row in rows if row[2] == sources[3])
    assert nomsg_row[4] == '(no msg) {"body":"no msg here"}'

    def listed(*args):
        p = ok(dead(bin_dir, stack, stream, "list", *args))
        if p.stdout.startswith("no dead letters"):
            return []
        return [row[2] for row in table_rows(p.stdout)]

    assert listed("--reason", "10500") == [sources[0]]
    assert listed("--reason", "10201") == [sources[1]]
    assert sorted(listed("--reason", "malformed")) == sorted(sources[2:])
    assert listed("--reason", "not JSON") == [sources[2]]
    assert listed("--reason", "1050") == []           # a code matches whole, not a prefix
    p = ok(dead(bin_dir, stack, stream, "list", "--reason", "1050"))
    assert p.stdout == "no dead letters in %s match --reason 1050\n" % dead_of(stream)

    p = ok(dead(bin_dir, stack, stream, "list", "--count", "2"))
    assert [row[2] for row in table_rows(p.stdout)] == [f["source_id"] for _, f in letters[:2]]
    assert "more dead letters follow (--count)" in p.stderr

    p = ok(dead(bin_dir, stack, stream, "list", "--json"))
    objs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [o["id"] for o in objs] == [i for i, _ in letters]
    for o, (_, f) in zip(objs, letters):
        assert o["reason"] == f["reason"] and o["msg"] == f["msg"]
        assert o["source_id"] == o["original_id"] == f["source_id"]
        assert o["source_stream"] == stream and o["deliveries"] == int(f["deliveries"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"]), o["time"]
    nomsg = next(o for o in objs if o["source_id"] == sources[3])
    assert nomsg["fields"] == {"body": "no msg here"} and nomsg["msg"] == ""
    p = ok(dead(bin_dir, stack, stream, "list", "--json", "--reason", "10201"))
    assert [json.loads(line)["source_id"] for line in p.stdout.splitlines()] == [sources[1]]


def test_list_settings_default_and_config_file(bin_dir, stack, stream, tmp_path):
    """The default is the consumer's default; the consumer's own INI file
    (same key names) points ctl at its streams."""
    p = ok(ctl(bin_dir, stack, "--help"))
    assert re.search(r"^  dead_letter_stream = pushgate:worksheets:dead\b", p.stdout, re.M)
    assert re.search(r"^  dead +list or replay the consumer's dead letters", p.stdout, re.M)
    p = ok(ctl(bin_dir, stack, "dead", "--help"))
    for word in ("dead list", "dead replay", "--reason", "--all", "--id", "--json", "msg_id"):
        assert word in p.stdout, word
    r = stack.redis()
    r.xadd(dead_of(stream), {"msg": "{}", "reason": "from the file", "source_id": "1-1",
                             "source_stream": stream, "deliveries": "1"})
    ini = tmp_path / "consumer.ini"
    ini.write_text("[consumer]\nstream = %s\ndead_letter_stream = %s\ngroup = g\n"
                   "max_deliveries = 3\n" % (stream, dead_of(stream)))
    p = ok(ctl(bin_dir, stack, "dead", "list", "-c", ini))
    (row,) = table_rows(p.stdout)
    assert row[2:4] == ["1-1", "from the file"]


# ---- replay ----

def test_replay_by_id_and_all_reach_the_browser_with_the_original_id(bin_dir, stack, tmp_path,
                                                                     procs, stream, fakes):
    # a gateway that refused everything: three work orders dead-lettered
    x = fakes(lambda req, n: dict(REFUSE))
    c1 = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr)
    r = stack.redis()
    user = uid("agent")
    infos = ["one", "two", "three"]
    originals = publish(r, stream, [work_order(user, i) for i in infos])
    wait_sync(lambda: len(dead_letters(r, stream)) == 3, 20, "three dead letters")
    wait_sync(lambda: pending(r, stream) == 0, 10, "the XACKs")
    c1.stop()
    letters = dead_letters(r, stream)
    assert [f["source_id"] for _, f in letters] == originals
    assert all("code 10201" in f["reason"] for _, f in letters)

    # fixed: a real gateway, found in MySQL, and the agent's browser
    g = start_gateway(bin_dir, stack, tmp_path, procs)
    c2 = start_consumer(bin_dir, stack, tmp_path, procs, stream)

    async def run():
        b = await Browser(user).open(g.port)
        p = ok(dead(bin_dir, stack, stream, "replay", "--id", letters[0][0]))
        assert p.stdout.endswith("replayed 1 dead letter from %s to %s\n" % (dead_of(stream),
                                                                               stream))
        (new_id, msg_id), = replayed_lines(p).values()
        assert msg_id == originals[0] and new_id != originals[0]
        await until(lambda: b.events, 20, "the replayed work order at the browser")
        assert b.events[0] == {"event": "WorksheetMsg",
                               "response": {"type": "new_worksheet_to_deal", "infos": "one"},
                               "id": originals[0]}
        assert [i for i, _ in dead_letters(r, stream)] == [i for i, _ in letters[1:]]

        p = ok(dead(bin_dir, stack, stream, "replay", "--all"))
        assert "replayed 2 dead letters" in p.stdout
        assert set(replayed_lines(p)) == {i for i, _ in letters[1:]}
        await until(lambda: len(b.events) >= 3, 20, "the other two at the browser")
        assert sorted(b.ids) == sorted(originals)
        got = {e["id"]: e["response"]["infos"] for e in b.events}
        assert got == dict(zip(originals, infos))
        # handed off and XACKed with the original id in the gateway's reply:
        # nothing retried, nothing dead again
        await until(lambda: pending(r, stream) == 0, 15, "the replayed entries to be XACKed")
        await b.close()

    asyncio.run(run())
    assert dead_letters(r, stream) == []
    replays = [f for _, f in r.xrange(stream)][3:]
    assert [f["msg_id"] for f in replays] == originals
    assert [f["msg"] for f in replays] == [f["msg"] for _, f in letters]
    log = c2.stop()
    assert "goes to the dead-letter stream" not in log
    assert "answered code" not in log and "no reply" not in log
    stop_gateway(g)


def test_replayed_entry_keeps_its_original_id_when_it_dies_again(bin_dir, stack, tmp_path, procs,
                                                                 stream, fakes):
    state = {"mode": "refuse"}
    x = fakes(fail_until_ok(state))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr)
    r = stack.redis()
    (original,) = publish(r, stream, [work_order(uid(), "twice dead")])
    wait_sync(lambda: dead_letters(r, stream), 20, "the dead letter")
    ((first, _),) = dead_letters(r, stream)

    p = ok(dead(bin_dir, stack, stream, "replay", "--id", first, "--reason", "10201"))
    ((new_id, msg_id),) = replayed_lines(p).values()
    assert msg_id == original
    # the gateway got the original id, refused again: a second dead letter
    wait_sync(lambda: x.seen(original) == 2, 20, "the replayed request")
    wait_sync(lambda: len(dead_letters(r, stream)) == 1 and
              dead_letters(r, stream)[0][0] != first, 20, "the second dead letter")
    ((second, fields),) = dead_letters(r, stream)
    assert fields["source_id"] == new_id and json.loads(fields["fields"]) == {"msg_id": original}
    assert "code 10201" in fields["reason"]
    (o,) = [json.loads(line) for line in
            ok(dead(bin_dir, stack, stream, "list", "--json")).stdout.splitlines()]
    assert o["original_id"] == original and o["source_id"] == new_id

    # the gateway is fixed: the second replay carries the first id again
    state["mode"] = "ok"
    p = ok(dead(bin_dir, stack, stream, "replay", "--all"))
    assert replayed_lines(p)[second][1] == original
    wait_sync(lambda: x.seen(original) == 3, 20, "the second replayed request")
    wait_sync(lambda: pending(r, stream) == 0, 15, "the XACK")
    assert dead_letters(r, stream) == []
    # never a new id (compared as a set: a dead letter's id, in another
    # stream, may equal the original's when both came in one millisecond)
    with x.lock:
        assert set(x.msg_ids) == {original}, x.msg_ids
    c.stop()


def test_replay_all_takes_what_was_there_when_it_started(bin_dir, stack, tmp_path, procs, stream,
                                                         fakes):
    """Entries that die again while --all runs are not replayed again by
    the same run (which would never end)."""
    x = fakes(lambda req, n: dict(REFUSE))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr)
    r = stack.redis()
    originals = publish(r, stream, [work_order(uid(), "loop %d" % i) for i in range(150)])
    wait_sync(lambda: len(dead_letters(r, stream)) == 150, 30, "150 dead letters")
    before = {i for i, _ in dead_letters(r, stream)}
    p = ok(dead(bin_dir, stack, stream, "replay", "--all"))
    assert "replayed 150 dead letters" in p.stdout
    assert set(replayed_lines(p)) == before
    wait_sync(lambda: len(dead_letters(r, stream)) == 150 and
              not before & {i for i, _ in dead_letters(r, stream)}, 30, "150 new dead letters")
    again = [json.loads(f["fields"])["msg_id"] for _, f in dead_letters(r, stream)]
    assert sorted(again) == sorted(originals)
    c.stop()


# ---- the consumer and the msg_id field ----

def test_consumer_checks_the_msg_id_field(bin_dir, stack, tmp_path, procs, stream, fakes):
    requests = []
    x = fakes(lambda req, n: requests.append(req) or dict(OK))
    c = start_consumer(bin_dir, stack, tmp_path, procs, stream, gateways=x.addr)
    r = stack.redis()
    order = json.loads(work_order("someone", "replayed"))
    good = "1700000000000-42"
    # a msg_id inside msg is the producer's and overridden; the field is not
    (entry,) = publish(r, stream, [{"msg": json.dumps(dict(order, msg_id="inside")),
                                    "msg_id": good}])
    wait_sync(lambda: pending(r, stream) == 0, 20, "the XACK")
    (req,) = requests
    assert req["msg_id"] == good and {k: req[k] for k in order} == order
    assert x.seen(entry) == 0

    bad = ["abc", "", "1-2:0", "1700000000000", "-1", "1-2-3", " 1-2", "18446744073709551616-0",
           "1" * 60 + "-0", "\u00e9-1"]
    ids = publish(r, stream, [{"msg": work_order("someone", "bad id"), "msg_id": b}
                              for b in bad])
    wait_sync(lambda: len(dead_letters(r, stream)) == len(bad), 20, "the dead letters")
    wait_sync(lambda: pending(r, stream) == 0, 10, "the XACKs")
    letters = {f["source_id"]: f for _, f in dead_letters(r, stream)}
    for entry_id, b in zip(ids, bad):
        f = letters[entry_id]
        assert f["reason"] == "malformed: msg_id is not a stream entry id", f
        assert json.loads(f["fields"]) == {"msg_id": b}      # kept, to be seen
        assert f["msg"] == work_order("someone", "bad id")
    assert len(requests) == 1, "an entry with a bad msg_id reached a gateway"
    # such a dead letter is reported as malformed, not replayed with some id
    p = failed(dead(bin_dir, stack, stream, "replay", "--all"))
    assert "replayed 0 dead letters" in p.stdout and "%d failed" % len(bad) in p.stdout
    assert p.stderr.count("fields.msg_id is not a stream entry id") == len(bad)
    assert len(dead_letters(r, stream)) == len(bad)
    c.stop()


# ---- malformed dead letters and usage ----

def test_malformed_dead_letters_are_reported_and_never_replayed(bin_dir, stack, stream):
    r = stack.redis()
    d = dead_of(stream)
    msg = work_order("someone", "hand made")

    def letter(**over):
        f = {"msg": msg, "reason": "refused by gateway x: code 10201: bad", "source_id": "5-1",
             "source_stream": stream, "deliveries": "1"}
        f.update(over)
        return r.xadd(d, {k: v for k, v in f.items() if v is not None})

    good = letter()
    malformed = {
        letter(source_id=None): "no source_id field",
        letter(reason=None): "no reason field",
        letter(source_id="abc"): "source_id is not a stream entry id",
        letter(deliveries="many"): "deliveries is not a number",
        letter(fields='{"msg_id":"x"}'): "fields.msg_id is not a stream entry id",
        letter(fields="not json"): "field fields is not a JSON object",
    }
    refused = {
        letter(msg="", fields='{"body":"x"}'): "no msg field: there is nothing to replay",
        letter(msg="[1, 2]"): "msg is not a JSON object",
        letter(source_stream="elsewhere"): "came from stream 'elsewhere'",
    }
    work_before = r.xlen(stream)

    for dead_id, why in list(malformed.items()) + list(refused.items()):
        p = failed(dead(bin_dir, stack, stream, "replay", "--id", dead_id))
        assert why in p.stderr and dead_id in p.stderr, (why, p.stderr)
        assert p.stdout == "replayed 0 dead letters from %s to %s; 1 failed\n" % (d, stream)
    assert r.xlen(stream) == work_before and r.xlen(d) == 1 + len(malformed) + len(refused)

    # list shows the well-formed ones and reports the others
    p = ok(dead(bin_dir, stack, stream, "list"))
    shown = [row[0] for row in table_rows(p.stdout)]
    assert shown == [good] + list(refused)
    for dead_id, why in malformed.items():
        assert "dead letter %s is malformed (%s): skipped" % (dead_id, why) in p.stderr
    assert "%d malformed dead letters skipped" % len(malformed) in p.stderr
    # --reason leaves out what it does not select, malformed or not
    p = ok(dead(bin_dir, stack, stream, "list", "--reason", "10201"))
    assert [row[0] for row in table_rows(p.stdout)] == [good] + list(refused)
    assert "no source_id field" in p.stderr and "no reason field" not in p.stderr
    p = ok(dead(bin_dir, stack, stream, "list", "--reason", "nothing like it"))
    assert p.stdout.startswith("no dead letters") and p.stderr == ""

    # --all replays the good one only, reports every other, and fails
    p = failed(dead(bin_dir, stack, stream, "replay", "--all"))
    assert list(replayed_lines(p)) == [good]
    assert "replayed 1 dead letter from" in p.stdout
    assert "; %d failed" % (len(malformed) + len(refused)) in p.stdout
    ((_, fields),) = r.xrange(stream)[work_before:]
    assert fields == {"msg": msg, "msg_id": "5-1"}
    assert good not in {i for i, _ in r.xrange(d)} and r.xlen(d) == len(malformed) + len(refused)

    # an id that is not there, a key that is not a stream, no Redis
    p = failed(dead(bin_dir, stack, stream, "replay", "--id", "1-1"))
    assert "no dead letter 1-1 in %s" % d in p.stderr
    r.set(d + ":string", "x")
    p = failed(ctl(bin_dir, stack, "dead", "list", "--set", "dead_letter_stream=%s:string" % d))
    assert "WRONGTYPE" in p.stderr
    p = failed(dead(bin_dir, stack, stream, "list", "--set", "redis_port=%d" % free_port()))
    assert "redis 127.0.0.1:" in p.stderr


@pytest.mark.parametrize("args,message", [
    (["replay"], "give --id ID (repeatable) or --all"),
    (["replay", "--id", "1-1", "--all"], "give --id ID (repeatable) or --all"),
    (["replay", "--id", "1-1:0"], "is not a stream entry id"),
    (["replay", "--all", "--json"], "--json is for dead list"),
    (["replay", "--all", "--count", "3"], "--count is for dead list"),
    (["list", "--id", "1-1"], "--id is for dead replay"),
    (["list", "--all"], "--all is for dead replay"),
    (["list", "--count", "0"], "--count"),
    (["list", "--reason", ""], "--reason must not be empty"),
    (["frob"], "unknown subcommand 'frob'"),
    ([], "missing argument"),
    (["list", "extra"], "unexpected argument 'extra'"),
])
def test_usage_errors(bin_dir, stack, stream, args, message):
    p = failed(dead(bin_dir, stack, stream, *args), code=2)
    assert message in p.stderr and p.stdout == "", p.stderr


def test_replay_refuses_the_same_stream_for_both(bin_dir, stack):
    p = failed(ctl(bin_dir, stack, "dead", "replay", "--all", "--set", "stream=s",
                   "--set", "dead_letter_stream=s"), code=2)
    assert "the same stream" in p.stderr
