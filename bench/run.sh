#!/usr/bin/env bash
# bench/run.sh: Ballast's added latency and throughput, measured side by side with the simulator called
# directly and through nginx (proxy_pass), at a fixed rate and at a fixed concurrency. See bench/README.md.
#
# Environment (all optional):
#   BENCH_RATE=1000  BENCH_CONCURRENCY=32  BENCH_DURATION=2.5 (s per run)  BENCH_WARMUP=0.5 (s per run)
#   BENCH_ROUNDS=5 (interleaved rounds; the table takes the median over rounds)
#   BENCH_APIS="openai anthropic"   BENCH_PIN=auto|0 (auto: loadgen on CPU 0, servers on the other CPUs)
#   BALLAST_BIN, LOADGEN_BIN: use these binaries instead of building target/release/{ballast,ballast-loadgen}
#   BENCH_OUT=bench/out
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RATE=${BENCH_RATE:-1000}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
DURATION=${BENCH_DURATION:-2.5}
WARMUP=${BENCH_WARMUP:-0.5}
ROUNDS=${BENCH_ROUNDS:-5}
APIS=${BENCH_APIS:-openai anthropic}
PIN=${BENCH_PIN:-auto}
OUT_ROOT=${BENCH_OUT:-$ROOT/bench/out}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- what the bench needs -------------------------------------------------------------------------------
apt_install() {
    command -v apt-get >/dev/null || { log "cannot install $*: no apt-get; install it by hand"; return 1; }
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # The Debian package would start a system nginx on port 80; policy-rc.d 101 tells it not to.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ] && [ -z "$sudo" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null ||
        { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null; } ||
        { [ -z "$made_policy" ] || rm -f "$policy"; log "apt-get install $* failed"; return 1; }
    [ -z "$made_policy" ] || rm -f "$policy"
}
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    log "installing nginx"
    apt_install nginx || apt_install nginx-light || die "cannot install nginx"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null || { log "installing python3"; apt_install python3 || die "cannot install python3"; }
command -v curl >/dev/null || { log "installing curl"; apt_install curl || die "cannot install curl"; }

# ---- binaries -------------------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${BALLAST_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
    log "building release binaries (cargo build --release -p ballast -p ballast-bench)"
    (cd "$ROOT" && cargo build --release -q -p ballast -p ballast-bench)
fi
BALLAST=${BALLAST_BIN:-$TARGET_DIR/release/ballast}
LOADGEN=${LOADGEN_BIN:-$TARGET_DIR/release/ballast-loadgen}
[ -x "$BALLAST" ] || die "no ballast binary at $BALLAST"
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"

# ---- CPU placement --------------------------------------------------------------------------------------
NPROC=$(nproc)
PIN_LOAD=() PIN_SERVER=() PLACEMENT="unpinned: load generator and servers share all $NPROC CPUs"
if [ "$PIN" != 0 ] && [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null; then
    SERVER_CPUS=1
    [ "$NPROC" -eq 2 ] || SERVER_CPUS="1-$((NPROC - 1))"
    PIN_LOAD=(taskset -c 0)
    PIN_SERVER=(taskset -c "$SERVER_CPUS")
    PLACEMENT="load generator on CPU 0; simulator, nginx and Ballast share CPU $SERVER_CPUS"
fi
log "$PLACEMENT"

# ---- servers --------------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ballast-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers may run as another user
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (up to 10 s) for a server's "listening on http://..." line and prints the host:port.
wait_listening() {
    local file=$1 name=$2 addr="" _
    for _ in $(seq 100); do
        addr=$(grep -o 'listening on http://[0-9.:]*' "$file" 2>/dev/null | head -n1 | sed 's|.*http://||') || true
        [ -n "$addr" ] && { echo "$addr"; return; }
        sleep 0.1
    done
    cat "$file" >&2
    die "$name did not start"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

"${PIN_SERVER[@]}" "$BALLAST" --log warn sim --listen 127.0.0.1:0 >"$TMP/sim.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
SIM=$(wait_listening "$TMP/sim.log" simulator)

cat >"$TMP/ballast.toml" <<TOML
[server]
listen = "127.0.0.1:0"

[providers.sim]
kind = "openai"
base_url = "http://$SIM/v1"
api_key = "bench"

[providers.sim-anthropic]
kind = "anthropic"
base_url = "http://$SIM"
api_key = "bench"

[routes.bench]
targets = ["sim/gpt-4.1"]

[routes.bench-anthropic]
targets = ["sim-anthropic/claude-sonnet-4-5"]
TOML
"${PIN_SERVER[@]}" "$BALLAST" --log warn serve --config "$TMP/ballast.toml" >"$TMP/ballast.log" 2>&1 &
BALLAST_PID=$!
PIDS+=("$BALLAST_PID")
GATEWAY=$(wait_listening "$TMP/ballast.log" ballast)

NGINX_PORT=$(free_port)
sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@SIM@|$SIM|g" \
    "$ROOT/bench/nginx.conf.template" >"$TMP/nginx.conf"
"$NGINX" -t -q -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/error.log" || die "nginx -t rejected $TMP/nginx.conf"
"${PIN_SERVER[@]}" "$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/error.log" >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && break
    sleep 0.1
done
NGINXADDR=127.0.0.1:$NGINX_PORT
log "simulator http://$SIM  nginx http://$NGINXADDR  ballast http://$GATEWAY"

# ---- requests -------------------------------------------------------------------------------------------
printf '%s' '{"model":"bench","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}' >"$TMP/openai.json"
printf '%s' '{"model":"bench-anthropic","max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}' >"$TMP/anthropic.json"
api_path() { case $1 in openai) echo /v1/chat/completions ;; anthropic) echo /v1/messages ;; esac; }
# Sets HDRS to the headers each SDK would send (the gateway has no keys configured and ignores them).
api_headers() {
    case $1 in
    openai) HDRS=(--header "authorization: Bearer bench") ;;
    anthropic) HDRS=(--header "x-api-key: bench" --header "anthropic-version: 2023-06-01") ;;
    esac
}
# CPU time (ns on CPU, all threads) of the given processes, from /proc/PID/task/*/schedstat.
cpu_ns() {
    local pid total=0 ns
    for pid in "$@"; do
        ns=$(cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }') || ns=0
        total=$((total + ${ns:-0}))
    done
    echo "$total"
}
# The processes that proxy for a path (none when calling the simulator directly).
proxy_pids() {
    case $1 in
    direct) ;;
    nginx) echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID") ;;
    ballast) echo "$BALLAST_PID" ;;
    esac
}
addr_of() { case $1 in direct) echo "$SIM" ;; nginx) echo "$NGINXADDR" ;; ballast) echo "$GATEWAY" ;; esac; }

# Every path must answer 200 before anything is measured.
for api in $APIS; do
    for path in direct nginx ballast; do
        api_headers "$api"
        code=$(curl -s -o "$TMP/smoke.out" -w '%{http_code}' --max-time 5 \
            "${HDRS[@]}" -H "content-type: application/json" \
            --data-binary "@$TMP/$api.json" "http://$(addr_of "$path")$(api_path "$api")") || true
        [ "$code" = 200 ] || { cat "$TMP/smoke.out" >&2; die "$api via $path answered $code"; }
    done
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$OUT_ROOT/$STAMP
mkdir -p "$OUT"
cat >"$OUT/meta.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "nproc": $NPROC, "placement": "$PLACEMENT", "rate": $RATE,
 "concurrency": $CONCURRENCY, "duration_s": $DURATION, "warmup_s": $WARMUP, "rounds": $ROUNDS,
 "nginx": "$("$NGINX" -v 2>&1 | sed 's|.*/||')", "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"}
JSON

RUNS=$(($(wc -w <<<"$APIS") * 2 * 3 * ROUNDS))
log "$RUNS runs of ${WARMUP}s warmup + ${DURATION}s each ($(awk -v n="$RUNS" -v w="$WARMUP" -v d="$DURATION" 'BEGIN { printf "%.0f", n * (w + d + 0.1) }') s)"
PATHS=(direct nginx ballast)
for round in $(seq "$ROUNDS"); do
    for api in $APIS; do
        for mode in rate concurrency; do
            # Rotate the order of the three paths each round so none always runs first (or last).
            for i in 0 1 2; do
                path=${PATHS[$(((i + round - 1) % 3))]}
                load=(--rate "$RATE")
                [ "$mode" = concurrency ] && load=(--concurrency "$CONCURRENCY")
                api_headers "$api"
                # shellcheck disable=SC2046 # pid lists are meant to split
                read -r up0 px0 <<<"$(cpu_ns "$SIM_PID") $(cpu_ns $(proxy_pids "$path"))"
                "${PIN_LOAD[@]}" "$LOADGEN" --url "http://$(addr_of "$path")$(api_path "$api")" \
                    --body "$TMP/$api.json" "${HDRS[@]}" \
                    "${load[@]}" --duration "$DURATION" --warmup "$WARMUP" --label "$path" \
                    --out "$OUT/$api-$mode-$path-r$round.json" >/dev/null 2>"$TMP/loadgen.err" ||
                    { cat "$TMP/loadgen.err" >&2; die "loadgen failed"; }
                # shellcheck disable=SC2046
                read -r up1 px1 <<<"$(cpu_ns "$SIM_PID") $(cpu_ns $(proxy_pids "$path"))"
                printf '{"upstream_cpu_ns": %s, "proxy_cpu_ns": %s}\n' $((up1 - up0)) $((px1 - px0)) \
                    >"$OUT/$api-$mode-$path-r$round.cpu"
                printf '[bench] r%s %-9s %s\n' "$round" "$api" "$(cat "$TMP/loadgen.err")" >&2
            done
        done
    done
done

python3 "$ROOT/bench/summarize.py" "$OUT" | tee "$OUT/table.txt"
cp "$OUT/summary.json" "$OUT_ROOT/latest.json"
log "results: $OUT (summary.json, table.txt, one JSON per run); $OUT_ROOT/latest.json"
