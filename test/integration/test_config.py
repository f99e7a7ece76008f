"""mailctl config [-n], config check, a bad main.cf refused by start with
FILE:LINE: PARAM: reason, unknown-parameter warnings, BREAKWATER_CONFIG."""

import json
import os
import re
import socket

import pytest

from conftest import BW_SRC


def _declared_params():
    names = []
    with open(os.path.join(BW_SRC, "lib", "params.def")) as f:
        for line in f:
            m = re.match(r"PARAM\(\s*\w+\s*,\s*(\w+)\s*,", line)
            if m:
                names.append(m.group(1))
    assert len(names) > 20, "could not read lib/params.def"
    return names


def _parse_config_output(text):
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+) =(?: (.*))?", line)
        assert m, "config output line is not 'name = value': %r" % line
        assert m.group(1) not in out, "parameter listed twice: %s" % m.group(1)
        out[m.group(1)] = (m.group(2) or "").strip()
    return out


def _refused(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


def test_config_lists_every_parameter(bw_factory):
    bw = bw_factory({"message_size_limit": "10485760", "smtpd_recipient_limit": "77"}, start=False)
    r = bw.mailctl("config")
    assert r.returncode == 0, r
    cfg = _parse_config_output(r.stdout)
    missing = [n for n in _declared_params() if n not in cfg]
    assert not missing, "mailctl config does not list %r" % missing
    assert cfg["message_size_limit"] == "10485760"
    assert cfg["smtpd_recipient_limit"] == "77"
    assert cfg["queue_directory"] == bw.queue_dir
    assert cfg["myhostname"] == "mx.test.example"
    # defaults of the contract
    assert cfg["smtpd_command_length_limit"] == "2048"
    assert cfg["smtpd_hard_error_limit"] == "20"
    assert cfg["mail_owner"] == "breakwater"
    assert cfg["smtpd_max_connections"] == "30000"


def test_config_n_lists_only_changed(bw_factory):
    bw = bw_factory({"smtpd_recipient_limit": "77"}, start=False)
    r = bw.mailctl("config", "-n")
    assert r.returncode == 0, r
    cfg = _parse_config_output(r.stdout)
    assert set(cfg) == set(bw.params), "config -n lists %r, main.cf sets %r" % (sorted(cfg), sorted(bw.params))
    assert cfg["smtpd_recipient_limit"] == "77"
    assert cfg["smtpd_listen"] == bw.params["smtpd_listen"]


def test_breakwater_config_env(bw_factory):
    bw = bw_factory({"smtpd_recipient_limit": "78"}, start=False)
    r = bw.mailctl("config", "-n", config_env=True)
    assert r.returncode == 0, r
    assert _parse_config_output(r.stdout).get("smtpd_recipient_limit") == "78"

    r = bw.mailctl("start", config_env=True)
    assert r.returncode == 0, r
    bw.started = True
    rj = bw.mailctl("status", "--json", config_env=True)
    assert rj.returncode == 0, rj
    assert json.loads(rj.stdout)["running"] is True, rj.stdout
    st = bw.status_json()
    assert os.path.realpath(st["config_dir"]) == os.path.realpath(bw.config_dir)
    with bw.session() as c:
        assert c.cmd("QUIT").code == 221
    r = bw.mailctl("stop", config_env=True)
    assert r.returncode == 0, r
    bw.started = False


def test_config_check_ok(bw_factory):
    bw = bw_factory(start=False)
    r = bw.mailctl("config", "check")
    assert r.returncode == 0, r
    assert r.stderr == "", r.stderr


def test_unknown_parameter_is_a_warning(bw_factory):
    bw = bw_factory(start=False)
    text = open(bw.main_cf).read() + "no_such_parameter = 1\n"
    bw.write_config(text)
    line = text.count("\n")
    r = bw.mailctl("config", "check")
    assert r.returncode == 0, r
    assert "mailctl: warning: %s:%d: unknown parameter no_such_parameter" % (bw.main_cf, line) in r.stderr, r.stderr


BAD_LINES = [
    ("message_size_limit", "message_size_limit = lots"),
    ("message_size_limit", "message_size_limit = 10"),          # below the minimum 1024
    ("smtpd_processes", "smtpd_processes = 0"),
    ("smtpd_processes", "smtpd_processes = 257"),
    ("smtpd_timeout", "smtpd_timeout = 5x"),
    ("smtpd_command_length_limit", "smtpd_command_length_limit = 100"),
    ("smtpd_listen", "smtpd_listen = 127.0.0.1:notaport"),
    ("mynetworks", "mynetworks = 10.0.0.0/99"),
    ("spool_sync_method", "spool_sync_method = never"),
    ("smtpd_banner", "smtpd_banner = ${myhostname"),
]


@pytest.mark.parametrize("param,line", BAD_LINES, ids=[b[1].split("=")[0].strip() + ":" + b[1].split("=", 1)[1].strip()
                                                       for b in BAD_LINES])
def test_bad_main_cf_refused(bw_factory, param, line):
    bw = bw_factory(start=False)
    text = open(bw.main_cf).read() + "# a comment\n\n" + line + "\n"
    bw.write_config(text)
    lineno = text.count("\n")
    want = re.compile(r"mailctl: %s:%d: %s: \S.*\n" % (re.escape(bw.main_cf), lineno, param))

    r = bw.mailctl("config", "check")
    assert r.returncode == 1, r
    assert want.fullmatch(r.stderr), "config check stderr %r does not match %s" % (r.stderr, want.pattern)

    r = bw.mailctl("start")
    assert r.returncode != 0, r
    assert want.fullmatch(r.stderr), "start stderr %r does not match %s" % (r.stderr, want.pattern)
    bw.write_config(text.replace(line + "\n", ""))
    rc, st = bw.status()
    assert rc == 1 and st == {"running": False}
    assert _refused(bw.port)


def test_bad_continuation_and_garbage_line(bw_factory):
    bw = bw_factory(start=False)
    text = open(bw.main_cf).read() + "this line has no equals sign\n"
    bw.write_config(text)
    lineno = text.count("\n")
    r = bw.mailctl("config", "check")
    assert r.returncode == 1, r
    assert re.fullmatch(r"mailctl: %s:%d: \S.*\n" % (re.escape(bw.main_cf), lineno), r.stderr), r.stderr
