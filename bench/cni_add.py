#!/usr/bin/env python3
"""CNI ADD (or, with CNI_COMMAND=DEL in the environment, DEL in reverse order) of a
conflist, the way libcni runs it: loopback on `lo`, then each plugin of the list with
`name`, `cniVersion` and the previous result injected. Used by bench/apply.sh so the
raw runc loop gets exactly berth's network config.

    cni_add.py CONFLIST CONTAINER_ID NETNS [skip-type...]
"""
import json
import os
import subprocess
import sys

conflist, cid, netns = sys.argv[1:4]
skip = set(sys.argv[4:])
conf = json.load(open(conflist))
env = dict(os.environ, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_PATH="/usr/lib/cni:/opt/cni/bin")


COMMAND = os.environ.get("CNI_COMMAND", "ADD")


def run(plugin, ifname, prev):
    cfg = dict(plugin, name=conf["name"], cniVersion=conf["cniVersion"])
    if prev is not None:
        cfg["prevResult"] = prev
    out = subprocess.run(["/usr/lib/cni/" + plugin["type"]], input=json.dumps(cfg).encode(),
                         env=dict(env, CNI_COMMAND=COMMAND, CNI_IFNAME=ifname), capture_output=True)
    if out.returncode != 0 and COMMAND == "ADD":
        sys.exit(f"{plugin['type']}: {out.stdout.decode()} {out.stderr.decode()}")
    return json.loads(out.stdout or b"null")


plugins = [p for p in conf["plugins"] if p["type"] not in skip]
if COMMAND == "ADD":
    run({"type": "loopback"}, "lo", None)
    prev = None
    for plugin in plugins:
        prev = run(plugin, "eth0", prev)
else:
    for plugin in reversed(plugins):
        run(plugin, "eth0", None)
    run({"type": "loopback"}, "lo", None)
