# Pieces of bench/run.sh: the busybox image and the web-server spec tree. Source it from the
# repository root once `$work` names the benchmark's scratch directory.

# bench_image: a loopback docker-registry on a free port (sets `port` and `reg_pid`,
# for the caller's cleanup to kill) holding a busybox image (sh, httpd, sleep, true;
# user app 10001, /srv/index.html) built with umoci in `$work/oci:bb` (its unpacked
# bundle stays in `$work/bundle`), pushed as bench/bb:v1; sets `image`, pinned by digest.
bench_image() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\nlog:\n  level: error\n' "$work/registry" "$port" > "$work/registry.yml"
  docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
  reg_pid=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  umoci init --layout "$work/oci" && umoci new --image "$work/oci:bb"
  umoci unpack --image "$work/oci:bb" "$work/bundle" >/dev/null
  mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc" "$work/bundle/rootfs/srv"
  cp /bin/busybox "$work/bundle/rootfs/bin/"
  for a in sh httpd sleep true; do ln -s busybox "$work/bundle/rootfs/bin/$a"; done
  printf 'root:x:0:0::/root:/bin/sh\napp:x:10001:10001::/srv:/bin/sh\n' > "$work/bundle/rootfs/etc/passwd"
  printf 'root:x:0:\napp:x:10001:\n' > "$work/bundle/rootfs/etc/group"
  echo ok > "$work/bundle/rootfs/srv/index.html"
  umoci repack --image "$work/oci:bb" "$work/bundle" >/dev/null
  skopeo copy -q --dest-tls-verify=false "oci:$work/oci:bb" "docker://127.0.0.1:$port/bench/bb:v1"
  digest=$(skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/bench/bb:v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')
  image="127.0.0.1:$port/bench/bb@$digest"
}

# bench_spec DIR COUNT: a spec tree of COUNT busybox web servers (app1…) on the network
# `bench` (10.252.0.0/22), in DIR.
bench_spec() {
  mkdir -p "$1"
  printf '[network.bench]\nsubnet = "10.252.0.0/22"\n' > "$1/net.toml"
  for i in $(seq "$2"); do
    cat >> "$1/apps.toml" <<TOML
[container.app$i]
image = "$image"
user = "10001:10001"
command = ["/bin/httpd", "-f", "-p", "8080", "-h", "/srv"]
networks = ["bench"]
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
# busybox httpd as PID 1 ignores SIGTERM: stop it without the 10 s wait.
stop_signal = "SIGKILL"
TOML
  done
}
