#!/usr/bin/env bash
# bench/streams.sh: Ballast's memory (RSS) with N concurrent open streams (goal: <= 200 MB at 10,000).
#
# Starts `ballast sim` with a slow token delay (so every stream stays open through the measurement) and
# `ballast serve` in front of it, then bench/streams_client.py opens N streaming Chat Completions requests
# (one HTTP/1.1 keep-alive connection each, at a bounded rate), waits until they all have their first token,
# samples the gateway's VmRSS/VmHWM (and the simulator's, for reference) over ~10 s, and closes everything.
# See bench/README.md, "Memory benchmarks".
#
# Environment (all optional):
#   STREAMS_N=10000            concurrent streams
#   STREAMS_RATE=2000          connections opened per second
#   STREAMS_TOKEN_DELAY_MS=2000  the simulator's delay between tokens (answers outlast the measurement)
#   STREAMS_PATH=same          same: Chat Completions client -> OpenAI provider (fast path);
#                              translated: Chat Completions client -> Anthropic provider (canonical model)
#   STREAMS_SAMPLES=6 STREAMS_INTERVAL=2   RSS samples once every stream is open, and seconds between them
#   STREAMS_REFERENCE=auto     auto: when nginx is installed, measure nginx (proxy_pass, buffering off, one worker)
#                              with the same streams after Ballast, as a reference; none: Ballast only
#   STREAMS_TIMEOUT=300        hard limit (s) for the whole script
#   BALLAST_BIN                use this binary instead of building target/release/ballast
#   BENCH_OUT=bench/out
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${STREAMS_N:-10000}
RATE=${STREAMS_RATE:-2000}
DELAY_MS=${STREAMS_TOKEN_DELAY_MS:-2000}
PATH_KIND=${STREAMS_PATH:-same}
SAMPLES=${STREAMS_SAMPLES:-6}
INTERVAL=${STREAMS_INTERVAL:-2}
HARD_TIMEOUT=${STREAMS_TIMEOUT:-300}
REFERENCE=${STREAMS_REFERENCE:-auto}
OUT_ROOT=${BENCH_OUT:-$ROOT/bench/out}

log() { printf '[streams] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
case $PATH_KIND in same | translated) ;; *) die "STREAMS_PATH must be same or translated" ;; esac
case $REFERENCE in auto | none | nginx) ;; *) die "STREAMS_REFERENCE must be auto, nginx or none" ;; esac
NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
if [ "$REFERENCE" = auto ]; then REFERENCE=$([ -n "$NGINX" ] && echo nginx || echo none); fi
[ "$REFERENCE" = none ] || [ -n "$NGINX" ] || die "STREAMS_REFERENCE=nginx needs nginx installed"
command -v python3 >/dev/null || die "needs python3"
command -v curl >/dev/null || die "needs curl"

# ---- binary ---------------------------------------------------------------------------------------------
if [ -z "${BALLAST_BIN:-}" ]; then
    log "building (cargo build --release --bin ballast)"
    (cd "$ROOT" && cargo build --release -q --bin ballast)
fi
BALLAST=${BALLAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ballast}
[ -x "$BALLAST" ] || die "no ballast binary at $BALLAST"

# ---- processes ------------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ballast-streams.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A watchdog: the whole run stops by itself after HARD_TIMEOUT seconds.
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$HARD_TIMEOUT" &
    sp=$!
    wait "$sp" && printf '[streams] hard timeout %ss reached\n' "$HARD_TIMEOUT" >&2 && kill -TERM $$
) &
PIDS+=($!)

# Every stream is two descriptors in the gateway (client connection + upstream connection), one in the
# simulator and one in the client: raise the soft limit to the hard one (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ $((2 * N + 64)) -gt "$NOFILE" ]; then
    log "warning: open-file limit $NOFILE: the gateway can hold about $(((NOFILE - 64) / 2)) streams, not $N" \
        "(each is a client and an upstream connection); the report counts the streams really open"
fi

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

"$BALLAST" --log warn sim --listen 127.0.0.1:0 --token-delay-ms "$DELAY_MS" >"$TMP/sim.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
SIM=$(wait_listening "$TMP/sim.log" simulator)

case $PATH_KIND in
same) TARGET=sim-openai/gpt-4.1 ;;
translated) TARGET=sim-anthropic/claude-sonnet-4-5 ;;
esac
cat >"$TMP/ballast.toml" <<TOML
[server]
listen = "127.0.0.1:0"
# Above the streams held, so nothing is shed.
max_in_flight = $((N + 1000))

[policy]
max_in_flight_per_target = $((N + 1000))
# Long enough that no stream is cut during the measurement (a token every ${DELAY_MS} ms).
first_token_timeout = "60s"
idle_timeout = "60s"
deadline = "10m"

[providers.sim-openai]
kind = "openai"
base_url = "http://$SIM/v1"
api_key = "bench"

[providers.sim-anthropic]
kind = "anthropic"
base_url = "http://$SIM"
api_key = "bench"

[routes.streams]
targets = ["$TARGET"]
TOML
"$BALLAST" check --config "$TMP/ballast.toml" >"$TMP/check.log" 2>&1 || { cat "$TMP/check.log" >&2; die "ballast check rejected the config"; }
"$BALLAST" --log warn serve --config "$TMP/ballast.toml" >"$TMP/ballast.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
GATEWAY=$(wait_listening "$TMP/ballast.log" ballast)
log "simulator http://$SIM (pid $SIM_PID)  ballast http://$GATEWAY (pid $GW_PID)  path $PATH_KIND -> $TARGET"

# One short non-streaming request (token delay applies to streams only) proves the route works.
code=$(curl -s -o "$TMP/smoke.out" -w '%{http_code}' --max-time 10 -H 'content-type: application/json' \
    -d '{"model":"streams","messages":[{"role":"user","content":"echo ok"}],"max_tokens":8}' \
    "http://$GATEWAY/v1/chat/completions") || true
[ "$code" = 200 ] || { cat "$TMP/smoke.out" "$TMP/ballast.log" >&2; die "smoke request answered $code"; }
sleep 1

# Answer length: long enough that a stream outlives the ramp, the wait for first tokens and the samples.
WORDS=$(awk -v n="$N" -v r="$RATE" -v s="$SAMPLES" -v i="$INTERVAL" -v d="$DELAY_MS" \
    'BEGIN { w = int((n / r + 40 + s * i + 30) * 1000 / d) + 1; print (w < 20 ? 20 : w) }')
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_ROOT"
log "opening $N streams at $RATE/s (answers of $WORDS tokens, one every $DELAY_MS ms)"
PASS_DEADLINE=$(((HARD_TIMEOUT - 30) / 2))
# Runs the client against a proxy ($1: name, $2: its address, $3: the pid whose memory is sampled).
measure() {
    python3 "$ROOT/bench/streams_client.py" --addr "$2" --n "$N" --rate "$RATE" --words "$WORDS" \
        --gateway-pid "$3" --sim-pid "$SIM_PID" --samples "$SAMPLES" --interval "$INTERVAL" \
        --deadline "$PASS_DEADLINE" --out "$TMP/client-$1.json" &
    CLIENT_PID=$!
    PIDS+=("$CLIENT_PID")
    wait "$CLIENT_PID" || die "the client failed ($1)"
}
measure ballast "$GATEWAY" "$GW_PID"
kill -0 "$GW_PID" 2>/dev/null || { tail -20 "$TMP/ballast.log" >&2; die "the gateway died"; }
# Its log, then stop it: the reference gets the machine (and the descriptors) to itself.
cp "$TMP/ballast.log" "$TMP/ballast-kept.log"
kill "$GW_PID" 2>/dev/null || true
wait "$GW_PID" 2>/dev/null || true

if [ "$REFERENCE" = nginx ]; then
    NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<NGINX
# The reference: nginx proxy_pass with response buffering off (each SSE chunk goes out as it comes), keep-alive
# upstream, one worker.
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections $((2 * N + 200)); }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream sim { server $SIM; keepalive 1024; }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 60s;
        }
    }
}
NGINX
    "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx/out.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    WORKER=""
    for _ in $(seq 100); do
        WORKER=$(ps -o pid= --ppid "$NGINX_PID" | head -n1 | tr -d ' ') || true
        [ -n "$WORKER" ] && (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && break
        sleep 0.1
    done
    [ -n "$WORKER" ] || { cat "$TMP/nginx/error.log" >&2; die "nginx did not start"; }
    sleep 1
    log "reference: nginx http://127.0.0.1:$NGINX_PORT (worker pid $WORKER)"
    measure nginx "127.0.0.1:$NGINX_PORT" "$WORKER"
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
fi

# ---- report ---------------------------------------------------------------------------------------------
OUTFILE=$OUT_ROOT/streams-$STAMP.json
cp "$TMP/ballast-kept.log" "${OUTFILE%.json}.ballast.log"
python3 - "$TMP" "$OUTFILE" <<PY
import json, os, sys
tmp, dst = sys.argv[1:3]
MB = 1e6

def figures(r):
    """The figures of one pass (the sampled process: Ballast, or the reference)."""
    samples = r["samples"]
    idle = r["idle"]["gateway"].get("VmRSS", 0)
    rss = [s["gateway"].get("VmRSS", 0) for s in samples]
    opened = min(s["open"] for s in samples)
    loaded = sorted(rss)[len(rss) // 2]
    sim_idle = r["idle"]["sim"].get("VmRSS", 0)
    sim_rss = sorted(s.get("sim", {}).get("VmRSS", 0) for s in samples)[len(samples) // 2]
    return {
        "streams_requested": r["n"], "streams_open_min": opened, "streams_open_at_end": r["open_at_end"],
        "failed": r["failed"], "closed_early": r["closed_early"], "never_started": r["never_started"],
        "errors": r["errors"], "statuses": r["statuses"], "ramp_s": r["ramp_s"],
        "all_first_tokens_s": r["all_first_tokens_s"], "first_token_s": r.get("first_token_s"),
        "idle_rss": idle, "loaded_rss_median": loaded, "loaded_rss_max": max(rss),
        "hwm": max(s["gateway"].get("VmHWM", 0) for s in samples),
        "rss_per_stream": (loaded - idle) / opened if opened else None,
        "rss_after_close": r["after_close"]["gateway"].get("VmRSS", 0),
        "threads": samples[-1]["gateway"].get("Threads"),
        "fds_loaded": samples[-1]["gateway_fds"], "fds_after_close": r["after_close"]["gateway_fds"],
        "sim_idle_rss": sim_idle, "sim_loaded_rss_median": sim_rss,
        "sim_rss_per_stream": (sim_rss - sim_idle) / opened if opened else None,
        "samples": samples,
    }

passes = {}
for name in ("ballast", "nginx"):
    f = os.path.join(tmp, f"client-{name}.json")
    if os.path.exists(f):
        r = json.load(open(f))
        if "samples" not in r:
            print(f"{name}: no measurement: {json.dumps(r)[:500]}")
            sys.exit(1)
        passes[name] = figures(r)
b = passes["ballast"]
log_lines = open(os.path.join(tmp, "ballast-kept.log"), errors="replace").read().splitlines()
warn = sum(1 for l in log_lines if " WARN " in l or " ERROR " in l)
summary = {
    "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)",
    "tree_changes": $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l),  # source files changed since the commit (0: clean)
    "binary": "$BALLAST", "nproc": $(nproc), "nofile": "$NOFILE", "path": "$PATH_KIND", "target": "$TARGET",
    "rate": $RATE, "token_delay_ms": $DELAY_MS, "answer_tokens": $WORDS, "goal_rss_bytes": 200_000_000,
    "ballast": b, "reference": {"nginx": passes["nginx"]} if "nginx" in passes else {},
    "ballast_warn_error_log_lines": warn,
}
summary["goal_met"] = bool(b["streams_open_min"] >= b["streams_requested"] and b["loaded_rss_median"] <= 200e6)
json.dump(summary, open(dst, "w"), indent=1)

names = list(passes)
print()
print(f"streams: {b['streams_requested']} requested at {summary['rate']}/s, path {summary['path']} ({summary['target']}), "
      f"a token every {summary['token_delay_ms']} ms, open-file limit {summary['nofile']}")
print(f"  {'':34}" + "".join(f"{n:>14}" for n in names) + f"{'simulator':>14}")
sim = lambda k: f"{b[k] / MB:>9.1f} MB" if b.get(k) is not None else ""
print(f"  {'idle RSS':34}" + "".join(f"{passes[n]['idle_rss'] / MB:>11.1f} MB" for n in names) + f"{sim('sim_idle_rss'):>14}")
print(f"  {'RSS with the streams open (median)':34}" + "".join(f"{passes[n]['loaded_rss_median'] / MB:>11.1f} MB" for n in names) + f"{sim('sim_loaded_rss_median'):>14}")
print(f"  {'RSS max over the samples':34}" + "".join(f"{passes[n]['loaded_rss_max'] / MB:>11.1f} MB" for n in names))
print(f"  {'peak (VmHWM)':34}" + "".join(f"{passes[n]['hwm'] / MB:>11.1f} MB" for n in names))
per = lambda v: f"{v / 1e3:>11.1f} kB" if v is not None else f"{'-':>14}"
print(f"  {'per stream: (loaded - idle) / open':34}" + "".join(per(passes[n]["rss_per_stream"]) for n in names) + per(b["sim_rss_per_stream"]))
print(f"  {'RSS 2 s after closing them':34}" + "".join(f"{passes[n]['rss_after_close'] / MB:>11.1f} MB" for n in names))
print(f"  {'streams open (min over samples)':34}" + "".join(f"{passes[n]['streams_open_min']:>14}" for n in names))
print(f"  {'failed / cut / never started':34}" + "".join(f"{str(passes[n]['failed']) + ' / ' + str(passes[n]['closed_early']) + ' / ' + str(passes[n]['never_started']):>14}" for n in names))
print(f"  {'first token p50 / max (s)':34}" + "".join(f"{str((passes[n]['first_token_s'] or {}).get('p50')) + ' / ' + str((passes[n]['first_token_s'] or {}).get('max')):>14}" for n in names))
print(f"  {'descriptors loaded / after close':34}" + "".join(f"{str(passes[n]['fds_loaded']) + ' / ' + str(passes[n]['fds_after_close']):>14}" for n in names))
for n in names:
    if passes[n]["errors"]:
        print(f"  {n} errors: " + ", ".join(f"{k} x{v}" for k, v in passes[n]["errors"].items()))
print(f"  ballast: {b['threads']} threads, {warn} WARN/ERROR log lines; all first tokens {b['all_first_tokens_s']} s after the ramp began")
print(f"  goal (<= 200 MB with {b['streams_requested']} streams open): {'met' if summary['goal_met'] else 'NOT met'}")
PY
cp "$OUTFILE" "$OUT_ROOT/streams-latest.json"
log "results: $OUTFILE (and $OUT_ROOT/streams-latest.json, ${OUTFILE%.json}.ballast.log)"
