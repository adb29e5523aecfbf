#!/usr/bin/env python3
"""Plays the kubelet for drrun's test cluster (scripts/test-cluster).

No container can run on the machines drrun is tested on, so nothing would ever start the
pods that the real kube-apiserver and kube-controller-manager create. This loop does what a
kubelet and a scheduler would, through the same API a real kubelet uses:

* registers one Ready Node whose kubelet endpoint is this process's HTTPS log server;
* binds every pending pod to that node (the `binding` subresource);
* marks pods Running and Ready (the `status` subresource), except pods whose image comes
  from `registry.invalid`, which get ImagePullBackOff plus a Warning event, as a real node
  would report for an image that cannot be pulled;
* runs the pods of Jobs (restartPolicy Never/OnFailure) by interpreting a tiny subset of
  `sh -c` (echo, sleep, exit, true, false) so Jobs succeed, fail and log for real;
* serves `/containerLogs/...` so `kubectl logs` (and drrun) read those logs;
* force-deletes terminating pods, as the kubelet does once containers have stopped.

The images the tests use are real ones (pause, busybox), so the same tests also pass on a
real cluster (DRRUN_TEST_KUBECONFIG).
"""

import argparse
import datetime
import http.client
import http.server
import json
import shlex
import ssl
import sys
import threading
import time
import urllib.parse

LOGS = {}  # (namespace, pod, container) -> text
LOGS_LOCK = threading.Lock()


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    def __init__(self, server, ca, token):
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname, url.port or 443
        self.ctx = ssl.create_default_context(cafile=ca)
        self.token = token
        self.conn = None

    def request(self, method, path, body=None, content_type="application/json"):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.ctx, timeout=10
                )
            headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
                continue
            try:
                return resp.status, json.loads(raw or b"{}")
            except ValueError:
                return resp.status, {"raw": raw.decode(errors="replace")}
        raise RuntimeError("unreachable")

    def patch_status(self, kind_path, status):
        return self.request(
            "PATCH", kind_path + "/status", {"status": status}, "application/merge-patch+json"
        )


def simulate(argv):
    """Returns (log text, exit code, seconds) for a Job container's command."""
    if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and argv[1] == "-c":
        out, code, secs = [], 0, 0.0
        for piece in argv[2].replace("&&", ";").replace("\n", ";").split(";"):
            words = shlex.split(piece)
            if not words:
                continue
            cmd, rest = words[0], words[1:]
            if cmd == "echo":
                out.append(" ".join(rest))
            elif cmd == "sleep":
                secs += float(rest[0]) if rest else 0
            elif cmd == "exit":
                code = int(rest[0]) if rest else 0
                break
            elif cmd == "false":
                code = 1
                break
            elif cmd == "true":
                pass
            else:
                out.append("sim: ran " + " ".join(words))
        return "".join(line + "\n" for line in out), code, secs
    return "sim: ran " + " ".join(argv) + "\n", 0, 0.0


class Kubelet:
    def __init__(self, api, node, logs_port):
        self.api, self.node, self.logs_port = api, node, logs_port
        self.seen = {}  # pod uid -> state we last set
        self.jobs = {}  # pod uid -> (finish time, [(container, code)])
        self.next_ip = 2

    def register(self):
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}},
        }
        status, obj = self.api.request("POST", "/api/v1/nodes", body)
        if status not in (201, 409):
            raise SystemExit("kubelet: cannot register node: %s %s" % (status, obj))
        stamp = now()
        node_status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "drrun test kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs_port}},
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "nodeInfo": {
                "kubeletVersion": "v1.37.2-drrun-test",
                "kubeProxyVersion": "v1.37.2-drrun-test",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "sim://1",
                "osImage": "drrun test kubelet",
                "kernelVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        status, obj = self.api.patch_status("/api/v1/nodes/" + self.node, node_status)
        if status != 200:
            raise SystemExit("kubelet: cannot set node status: %s %s" % (status, obj))

    def pod_path(self, pod):
        m = pod["metadata"]
        return "/api/v1/namespaces/%s/pods/%s" % (m["namespace"], m["name"])

    def tick(self):
        status, pods = self.api.request("GET", "/api/v1/pods")
        if status != 200:
            return
        live = set()
        for pod in pods.get("items", []):
            uid = pod["metadata"]["uid"]
            live.add(uid)
            try:
                self.handle(pod, uid)
            except (OSError, http.client.HTTPException, KeyError, ValueError) as e:
                print("kubelet: %s: %s" % (pod["metadata"]["name"], e), file=sys.stderr)
        for uid in list(self.seen):
            if uid not in live:
                self.seen.pop(uid, None)
                self.jobs.pop(uid, None)

    def handle(self, pod, uid):
        meta, spec = pod["metadata"], pod["spec"]
        if meta.get("deletionTimestamp"):
            if spec.get("nodeName") == self.node:
                self.api.request("DELETE", self.pod_path(pod) + "?gracePeriodSeconds=0")
            return
        if not spec.get("nodeName"):
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
            }
            self.api.request("POST", self.pod_path(pod) + "/binding", binding)
            return
        if spec["nodeName"] != self.node or pod["status"].get("phase") in ("Succeeded", "Failed"):
            return
        containers = spec["containers"]
        unpullable = [c for c in containers if c["image"].startswith("registry.invalid/")]
        if unpullable:
            if self.seen.get(uid) != "pull":
                self.pull_failed(pod, unpullable)
                self.seen[uid] = "pull"
            return
        is_job = spec.get("restartPolicy") in ("Never", "OnFailure")
        if self.seen.get(uid) != "running":
            self.start(pod, uid, is_job)
            self.seen[uid] = "running"
        elif is_job and time.monotonic() >= self.jobs[uid][0]:
            self.finish(pod, uid)
            self.seen[uid] = "done"

    def ip(self):
        self.next_ip += 1
        return "10.88.%d.%d" % (self.next_ip // 250, self.next_ip % 250 + 2)

    def conditions(self, ready):
        stamp = now()
        value = "True" if ready else "False"
        return [
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
            {"type": "Ready", "status": value, "lastTransitionTime": stamp},
            {"type": "ContainersReady", "status": value, "lastTransitionTime": stamp},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
        ]

    def start(self, pod, uid, is_job):
        meta, stamp = pod["metadata"], now()
        statuses, results, longest = [], [], 0.0
        for c in pod["spec"]["containers"]:
            argv = (c.get("command") or []) + (c.get("args") or [])
            if is_job:
                text, code, secs = simulate(argv)
                results.append((c["name"], code, text))
                longest = max(longest, secs)
            else:
                text = "sim: started %s\n" % c["image"]
            with LOGS_LOCK:
                LOGS[(meta["namespace"], meta["name"], c["name"])] = "" if is_job else text
            statuses.append(
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "sim://" + c["image"],
                    "containerID": "sim://%s/%s" % (uid, c["name"]),
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": stamp}},
                }
            )
        if is_job:
            self.jobs[uid] = (time.monotonic() + longest, results)
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": self.ip(),
            "startTime": stamp,
            "conditions": self.conditions(True),
            "containerStatuses": statuses,
        }
        self.api.patch_status(self.pod_path(pod), status)

    def finish(self, pod, uid):
        meta, stamp = pod["metadata"], now()
        statuses, failed = [], False
        for name, code, text in self.jobs[uid][1]:
            with LOGS_LOCK:
                LOGS[(meta["namespace"], meta["name"], name)] = text
            failed = failed or code != 0
            statuses.append(
                {
                    "name": name,
                    "image": next(c["image"] for c in pod["spec"]["containers"] if c["name"] == name),
                    "imageID": "sim://",
                    "containerID": "sim://%s/%s" % (uid, name),
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Error" if code else "Completed",
                            "startedAt": stamp,
                            "finishedAt": stamp,
                        }
                    },
                }
            )
        status = {
            "phase": "Failed" if failed else "Succeeded",
            "conditions": self.conditions(False),
            "containerStatuses": statuses,
        }
        self.api.patch_status(self.pod_path(pod), status)

    def pull_failed(self, pod, unpullable):
        meta = pod["metadata"]
        statuses = []
        for c in pod["spec"]["containers"]:
            bad = c in unpullable
            statuses.append(
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "%s"' % c["image"],
                        }
                    }
                    if bad
                    else {"waiting": {"reason": "PodInitializing"}},
                }
            )
        status = {
            "phase": "Pending",
            "hostIP": "127.0.0.1",
            "startTime": now(),
            "conditions": self.conditions(False),
            "containerStatuses": statuses,
        }
        self.api.patch_status(self.pod_path(pod), status)
        for c in unpullable:
            stamp = now()
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": meta["name"] + ".", "namespace": meta["namespace"]},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "fieldPath": "spec.containers{%s}" % c["name"],
                },
                "reason": "Failed",
                "message": 'Failed to pull image "%s": rpc error: code = NotFound desc = '
                'failed to resolve reference "%s": not found' % (c["image"], c["image"]),
                "type": "Warning",
                "source": {"component": "kubelet", "host": self.node},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            self.api.request("POST", "/api/v1/namespaces/%s/events" % meta["namespace"], event)


class LogHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404)
            return
        with LOGS_LOCK:
            text = LOGS.get(tuple(parts[1:]))
        if text is None:
            self.send_error(404, "container not found")
            return
        query = urllib.parse.parse_qs(url.query)
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else ""
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--node", default="drrun-test-node")
    p.add_argument("--cert", required=True, help="serving cert for the log endpoint")
    p.add_argument("--key", required=True)
    a = p.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LogHandler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(a.cert, a.key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with open(a.token_file) as f:
        api = Api(a.server, a.ca, f.read().strip())
    kubelet = Kubelet(api, a.node, server.server_address[1])
    kubelet.register()
    print("kubelet: node %s ready, logs on port %d" % (a.node, kubelet.logs_port), flush=True)
    while True:
        try:
            kubelet.tick()
        except (OSError, http.client.HTTPException) as e:
            print("kubelet: %s" % e, file=sys.stderr)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
