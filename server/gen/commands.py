#!/usr/bin/env python3
"""Generates server/src/cmd/meta.rs: the metadata half of segkv's command table (arity, flags,
key positions, ACL categories, tips, key specs, docs), read from a real redis-server 7 so that
COMMAND INFO / COMMAND DOCS answer byte-for-byte as Redis does.

usage: redis-server --port 7777 --save '' --daemonize yes; python3 server/gen/commands.py 7777
       cargo fmt -p segkv-server   # the checked-in file is rustfmt-formatted
"""
import socket, sys

# Commands segkv implements. "parent": [subcommands]; [] means no subcommands.
COMMANDS = {
    # strings
    "get": [], "set": [], "setnx": [], "setex": [], "psetex": [], "getset": [], "getdel": [],
    "getex": [], "mget": [], "mset": [], "msetnx": [], "append": [], "strlen": [], "getrange": [],
    "substr": [], "setrange": [], "incr": [], "decr": [], "incrby": [], "decrby": [],
    "incrbyfloat": [],
    # keyspace
    "del": [], "unlink": [], "exists": [], "type": [], "rename": [], "renamenx": [], "copy": [],
    "move": [], "keys": [], "scan": [], "randomkey": [], "dbsize": [], "flushdb": [],
    "flushall": [], "swapdb": [], "touch": [],
    "object": ["encoding", "freq", "idletime", "refcount", "help"],
    # expire
    "expire": [], "pexpire": [], "expireat": [], "pexpireat": [], "ttl": [], "pttl": [],
    "expiretime": [], "pexpiretime": [], "persist": [],
    # connection
    "ping": [], "echo": [], "quit": [], "select": [], "hello": [], "reset": [],
    "client": ["id", "setname", "getname", "list", "info", "kill", "pause", "unpause",
               "no-evict", "reply", "help"],
    # server
    "command": ["count", "info", "docs", "list", "getkeys", "help"],
    "info": [], "config": ["get", "set", "resetstat", "rewrite", "help"], "time": [],
    "lastsave": [], "save": [], "bgsave": [], "shutdown": [], "function": ["flush"],
    "debug": [],
    # replication
    "replicaof": [], "slaveof": [], "role": [], "wait": [], "psync": [], "sync": [],
    "replconf": [],
}


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.read()

    def line(self):
        return self.f.readline()[:-2].decode()

    def read(self):
        t = self.f.read(1)
        ln = self.line()
        if t == b"+":
            return ("status", ln)
        if t == b"-":
            raise RuntimeError(ln)
        if t == b":":
            return ("int", int(ln))
        if t == b"$":
            n = int(ln)
            d = self.f.read(n + 2)[:-2].decode()
            return ("bulk", d)
        if t == b"_":
            return ("null", None)
        if t in (b"*", b"~"):
            return ("arr" if t == b"*" else "set", [self.read() for _ in range(int(ln))])
        if t == b"%":
            items = []
            for _ in range(int(ln)):
                items.append(self.read())
                items.append(self.read())
            return ("map", items)
        raise RuntimeError("unexpected %r" % t)


def rs_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def emit(v):
    t, x = v
    if t == "status":
        return "M::Status(%s)" % rs_str(x)
    if t == "bulk":
        return "M::Str(%s)" % rs_str(x)
    if t == "int":
        return "M::Int(%d)" % x
    if t == "null":
        return "M::Null"
    kind = {"arr": "Arr", "set": "Set", "map": "Map"}[t]
    return "M::%s(&[%s])" % (kind, ", ".join(emit(i) for i in x))


def filter_doc_subcommands(doc, keep):
    t, items = doc
    out = []
    for i in range(0, len(items), 2):
        k, v = items[i], items[i + 1]
        if k[1] == "subcommands":
            sub = v[1]
            kept = []
            for j in range(0, len(sub), 2):
                if sub[j][1].split("|", 1)[1] in keep:
                    kept += [sub[j], sub[j + 1]]
            v = ("map", kept)
        out += [k, v]
    return ("map", out)


def meta(c, info, doc, keep, indent):
    _, f = info
    name, arity, flags, first, last, step, acl, tips, specs, subs = [x for x in f]
    sub_meta = []
    for s in subs[1]:
        sname = s[1][0][1]
        if sname.split("|", 1)[1] in keep:
            sub_meta.append(meta(c, s, None, [], indent + 8))
    pad = " " * indent
    return (
        "Meta {\n"
        f"{pad}    name: {rs_str(name[1])},\n"
        f"{pad}    arity: {arity[1]},\n"
        f"{pad}    flags: &[{', '.join(rs_str(x[1]) for x in flags[1])}],\n"
        f"{pad}    first_key: {first[1]},\n"
        f"{pad}    last_key: {last[1]},\n"
        f"{pad}    step: {step[1]},\n"
        f"{pad}    acl: &[{', '.join(rs_str(x[1]) for x in acl[1])}],\n"
        f"{pad}    tips: {emit(tips)},\n"
        f"{pad}    key_specs: {emit(specs)},\n"
        f"{pad}    docs: {emit(doc) if doc else 'M::Null'},\n"
        f"{pad}    subcommands: &[{(', ').join(sub_meta)}],\n"
        f"{pad}}}"
    )


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7777
    c = Conn(port)
    c.call("HELLO", "3")
    version = dict(zip(*[iter(x[1] for x in c.call("HELLO", "3")[1])] * 2))["version"]
    out = [
        "// @generated by server/gen/commands.py from redis-server %s. Do not edit by hand:" % version,
        "// change the list in the script and run it again.",
        "use super::meta_types::{M, Meta};",
        "",
        "pub static META: &[Meta] = &[",
    ]
    for name, keep in COMMANDS.items():
        info = c.call("COMMAND", "INFO", name)[1][0]
        docs = c.call("COMMAND", "DOCS", name)[1]
        doc = filter_doc_subcommands(docs[1], keep)
        # Docs of subcommands sit inside the parent's docs; copy them onto each subcommand too.
        out.append("    " + meta(c, info, doc, keep, 4) + ",")
    out.append("];")
    out.append("")
    out.append("/// `<COMMAND> HELP` texts, verbatim.")
    out.append("pub static HELP: &[(&str, &[&str])] = &[")
    for name in ["object", "client", "config", "command"]:
        lines = c.call(name.upper(), "HELP")[1]
        out.append("    (%s, &[%s])," % (rs_str(name), ", ".join(rs_str(l[1]) for l in lines)))
    out.append("];")
    open("server/src/cmd/meta.rs", "w").write("\n".join(out) + "\n")


main()
