#!/usr/bin/env bash
# The Docker image and the compose stack, built and run for real (issue 23):
#   1. a Docker engine: the one that answers, else one started here (dockerd with the vfs
#      storage driver, no bridge, no iptables, on a socket of its own) and stopped at the end;
#   2. a Debian bookworm base image made once with debootstrap (no registry is reachable)
#      and kept in that engine (llamawire-base:bookworm);
#   3. the project image (docker/Dockerfile) and the HAProxy image (docker/haproxy.Dockerfile,
#      Debian's haproxy), built with the network of the host for apt;
#   4. the image run with a model mounted, on the host's network (all traffic on 127.0.0.1):
#      /health, a completion and a binary-protocol generation against the text this build's
#      llamawire-run gives, then `docker stop` drains and the exit code is 0; size, user, no
#      compiler;
#   5. docker/compose.host.yaml with Debian's docker-compose: two replicas and the balancer,
#      binary and HTTP load through the balancer, one replica stopped mid-run: no request lost
#      but those on the stopped replica's open connections (a clean error), the survivor
#      takes the load.
# It stops only what it started. When no engine can run here it says so and why, and exits 0.
#   scripts/docker-test.sh        (build/ must hold this build's binaries; ../shared the models)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { echo "docker-test: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
shared=${LLAMAWIRE_SHARED:-$root/../shared}
models=$shared/models
bin=$root/build/bin
[ -f "$models/aidreams260K.bin" ] || fail "no test model in $models"
[ -x "$bin/llamawire" ] && [ -x "$bin/llamawire-run" ] || fail "build/ lacks llamawire and llamawire-run"

# --- packages ------------------------------------------------------------------------
missing=()
for p in docker.io debootstrap docker-compose; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
docker=/usr/bin/docker
compose=/usr/bin/docker-compose

# --- the engine ----------------------------------------------------------------------
work=$(mktemp -d /tmp/llamawire-docker-test.XXXXXX)
own_dockerd=""
started=()      # containers started here
project=""      # the compose project started here
cleanup() {
  set +e
  [ -n "$project" ] && $compose -p "$project" -f docker/compose.host.yaml down -t 5 > /dev/null 2>&1
  for c in "${started[@]}"; do $docker rm -f "$c" > /dev/null 2>&1; done
  if [ -n "$own_dockerd" ]; then
    kill "$own_dockerd" 2> /dev/null
    for _ in $(seq 1 100); do kill -0 "$own_dockerd" 2> /dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
if ! $docker info > /dev/null 2>&1; then
  # The engine's data stays between runs (the base image is made once).
  sock=/run/llamawire-dockerd.sock
  export DOCKER_HOST=unix://$sock
  if ! $docker info > /dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      log "SKIPPED: no Docker engine answers and starting one needs root"
      exit 0
    fi
    log "starting dockerd (vfs, no bridge, no iptables) on $sock"
    dockerd --storage-driver=vfs --bridge=none --iptables=false --ip-masq=false \
      --data-root /var/lib/llamawire-docker --exec-root /run/llamawire-docker-exec --pidfile "$work/dockerd.pid" \
      -H "$DOCKER_HOST" > "$work/dockerd.log" 2>&1 &
    own_dockerd=$!
    for _ in $(seq 1 300); do $docker info > /dev/null 2>&1 && break; sleep 0.1; done
    if ! $docker info > /dev/null 2>&1; then
      log "SKIPPED: a Docker engine cannot run on this machine; dockerd said:"
      tail -5 "$work/dockerd.log" >&2
      exit 0
    fi
  fi
fi

# --- images --------------------------------------------------------------------------
base=llamawire-base:bookworm
if ! $docker image inspect "$base" > /dev/null 2>&1; then
  log "making $base with debootstrap (once)"
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2> /dev/null | head -1)
  debootstrap --variant=minbase bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | $docker import - "$base" > /dev/null
  rm -rf "$work/rootfs"
fi
image=llamawire:test
lb_image=llamawire-haproxy:test
t0=$(date +%s)
log "building $image"
$docker build --network host --build-arg BASE="$base" -f docker/Dockerfile -t "$image" . > "$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log" >&2; fail "docker build"; }
$docker build --network host --build-arg BASE="$base" -f docker/haproxy.Dockerfile -t "$lb_image" docker > "$work/build-lb.log" 2>&1 ||
  { tail -30 "$work/build-lb.log" >&2; fail "docker build (haproxy)"; }
size=$($docker image inspect -f '{{.Size}}' "$image")
log "images built in $(( $(date +%s) - t0 )) s; $image is $(( size / 1048576 )) MiB (the base alone $(( $($docker image inspect -f '{{.Size}}' "$base") / 1048576 )) MiB)"

# The runtime stage: no compiler, a user that is not root.
compilers=$($docker run --rm --network none --entrypoint /bin/sh "$image" -c 'for c in cc gcc g++ c++ clang cmake; do command -v $c; done; true')
[ -z "$compilers" ] || fail "compilers in the runtime image: $compilers"
uid=$($docker run --rm --network none --entrypoint /usr/bin/id "$image" -u)
[ "$uid" = 10001 ] || fail "the image runs as uid $uid"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() {  # port, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    curl -fsS "http://127.0.0.1:$1/health" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# --- the image, alone ----------------------------------------------------------------
port=$(free_port)
http=$(free_port)
name=llamawire-test-$$
$docker run -d --name "$name" --network host -v "$models:/models:ro" \
  -e LLAMAWIRE_MODEL=/models/aidreams260K.bin -e LLAMAWIRE_ADDRESS=127.0.0.1 \
  -e LLAMAWIRE_PORT="$port" -e LLAMAWIRE_HTTP_PORT="$http" \
  "$image" -z /models/tok512.bin > /dev/null
started+=("$name")
wait_health "$http" 30 || { $docker logs "$name" >&2; fail "/health did not answer"; }
# The expected text: this build's engine in one process, greedy.
expected=$("$bin/llamawire-run" "$models/aidreams260K.bin" -z "$models/tok512.bin" -t 0 -n 60 -i "I dreamed" 2> /dev/null)
got=$("$bin/llamawire" -a 127.0.0.1 -o "$port" -t 0 -n 60 -i "I dreamed" 2> /dev/null)
[ "$got" = "$expected" ] || fail "binary generation: '$got', expected '$expected'"
completion=$(curl -fsS "http://127.0.0.1:$http/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "I dreamed", "max_tokens": 20, "temperature": 0}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"], end="")')
[ -n "$completion" ] && case "$expected" in "I dreamed$completion"*) ;; *) fail "completion '$completion' is not how '$expected' goes on";; esac
log "image: /health, a binary generation and a completion as expected"
t1=$(date +%s)
$docker stop -t 40 "$name" > /dev/null
code=$($docker inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { $docker logs "$name" 2>&1 | tail -5 >&2; fail "docker stop: exit code $code"; }
$docker logs "$name" 2>&1 | grep -q 'draining' || fail "no drain in the log"
log "docker stop: drained and exited 0 in $(( $(date +%s) - t1 )) s"

# --- compose: two replicas and the balancer -------------------------------------------
export LW_IMAGE=$image LW_HAPROXY_IMAGE=$lb_image MODELS=$models LLAMAWIRE_MODEL=/models/aidreams260K.bin
export LLAMAWIRE_ARGS="-z /models/tok512.bin"
export LW_R1_PORT=$(free_port) LW_R1_HTTP=$(free_port) LW_R2_PORT=$(free_port) LW_R2_HTTP=$(free_port)
export LW_LB_PORT=$(free_port) LW_LB_HTTP=$(free_port)
project=lwtest$$
$compose -p "$project" -f docker/compose.host.yaml up -d > "$work/compose.log" 2>&1 || { cat "$work/compose.log" >&2; fail "compose up"; }
for p in "$LW_R1_HTTP" "$LW_R2_HTTP" "$LW_LB_HTTP"; do wait_health "$p" 30 || fail "port $p not healthy"; done
sleep 2  # the balancer's first health checks
metric() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m " ") == 1 {print $2}'; }
served() { metric "$1" 'llamawire_requests_total{protocol="binary"}'; }
bench() {  # name clients requests: binary load through the balancer, in the background
  "$bin/llamawire" bench -a 127.0.0.1 -o "$LW_LB_PORT" --clients "$2" --requests "$3" -n 100 --prompt "I dreamed" \
    -t 0.8 --json > "$work/$1.json" 2> "$work/$1.err"
}
# Load through the balancer: binary sessions (llamawire bench, 8 clients) and HTTP (node,
# 4 clients, a connection per request), long enough to stop a replica in the middle.
bench during 8 400 &
during=$!
node bench/http_load.mjs --url "http://127.0.0.1:$LW_LB_HTTP" --clients 4 --requests 200 --max-tokens 60 \
  --prompt "I dreamed" > "$work/http.json" 2> "$work/http.err" &
httpload=$!
sleep 2
# Stop the replica that holds the binary sessions (the balancer hashes on the client's
# address: from one machine most land on one replica). Its open sessions are the only
# requests that may fail, and with a clean error.
s1=$(metric "$LW_R1_HTTP" 'llamawire_active_sessions{protocol="binary"}')
s2=$(metric "$LW_R2_HTTP" 'llamawire_active_sessions{protocol="binary"}')
if [ "${s2:-0}" -gt "${s1:-0}" ]; then victim=replica2 open=$s2 survivor=$LW_R1_HTTP; else victim=replica1 open=$s1 survivor=$LW_R2_HTTP; fi
log "stopping $victim mid-run ($open binary sessions open on it; ${s1:-0} / ${s2:-0})"
$compose -p "$project" -f docker/compose.host.yaml stop -t 40 "$victim" > /dev/null 2>&1
code=$($docker inspect -f '{{.State.ExitCode}}' "${project}_${victim}_1" 2> /dev/null || echo "?")
before=$(served "$survivor")
wait $during || true
wait $httpload || true
# After the stop, once the balancer's checks (every second, down after two failures) have
# seen it: new sessions all go to the survivor, and none fails.
sleep 3
bench after 4 40 || true
after=$(served "$survivor")
python3 - "$work" "${open:-0}" "$(( after - before ))" <<'PY' || fail "load through the balancer (above)"
import json, sys, os
work, open_sessions, survivor_served = sys.argv[1], int(float(sys.argv[2])), int(sys.argv[3])
during = json.load(open(os.path.join(work, "during.json")))
after = json.load(open(os.path.join(work, "after.json")))
http = json.load(open(os.path.join(work, "http.json")))
errors = open(os.path.join(work, "during.err")).read()
print(f"docker-test: during the stop, binary: {during['completed']} completed, {during['errors']} errors of {during['requests']} "
      f"(sessions open on the stopped replica: {open_sessions}); HTTP: {http['completed']} completed, {http['errors']} errors "
      f"of {http['requests']}; after it: {after['completed']} of {after['requests']} completed, {after['errors']} errors; "
      f"the survivor served {survivor_served} binary requests after the stop", file=sys.stderr)
assert during["errors"] <= open_sessions, "binary requests lost beyond the stopped replica's open sessions"
for line in errors.splitlines():
    if "error:" in line:
        assert "shutting down" in line or "closed" in line, f"not a clean error: {line}"
assert http["errors"] == 0 and http["completed"] == http["requests"], "HTTP requests lost"
assert after["errors"] == 0 and after["completed"] == after["requests"], "requests failed after the stop"
assert survivor_served >= after["requests"], "the survivor did not take the load"
PY
[ "$code" = 0 ] || fail "$victim's exit code after its drain: $code"
log "compose: $victim drained and exited 0; the other replica took the load"
$compose -p "$project" -f docker/compose.host.yaml down -t 40 > /dev/null 2>&1
project=""
log "all passed"
