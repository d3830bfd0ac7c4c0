#!/usr/bin/env bash
# bench/run.sh: Ballast's added latency and throughput, measured side by side with the simulator called
# directly and through nginx (proxy_pass), at a fixed rate and at a fixed concurrency, on the same-format path
# and on the translated path (each client API routed to a provider of the other format). The OpenAI Responses and
# Gemini clients are measured too (by default at the fixed rate only, without nginx): Responses -> Anthropic and
# Gemini -> OpenAI Chat translated, next to their same-format path and the direct call. An optional path `nosignal`
# is the same-format route on a second gateway, identical but for `[signal] detectors = false`: the detectors' cost
# (ballast minus nosignal, within each round). See bench/README.md.
#
# Environment (all optional):
#   BENCH_RATE=1000  BENCH_CONCURRENCY=32  BENCH_DURATION=2 (s per run)  BENCH_WARMUP=0.5 (s per run)
#   BENCH_ROUNDS=5 (interleaved rounds; the table takes the median over rounds)
#   BENCH_APIS="openai anthropic responses gemini"
#   BENCH_PATHS="direct nginx ballast translated"  BENCH_MODES="rate concurrency"  (openai, anthropic)
#   BENCH_XPATHS="direct ballast translated"       BENCH_XMODES="rate"             (responses, gemini)
#     paths: direct nginx ballast nosignal translated (nosignal: the same-format route on a second gateway with
#     `[signal] detectors = false`, started only when some API's paths name it)
#   BENCH_PIN=auto|0 (auto: loadgen on CPU 0, servers on the other CPUs)
#   BENCH_PROFILE=0 (s): when > 0, after the rounds, `perf record -g` Ballast for that long on the same-format and
#     the translated path of each API at BENCH_RATE, and write the top symbols to the result directory
#   BENCH_STREAM=0: 1 sends every request with streaming on (SSE answers), same paths and routes
#   BENCH_LOG=warn: the gateways' `--log` filter; `default` starts them without `--log` (the default level, info:
#     one access log line per request)
#   BALLAST_BIN, LOADGEN_BIN: use these binaries instead of building target/release/{ballast,ballast-loadgen}
#   BENCH_OUT=bench/out
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RATE=${BENCH_RATE:-1000}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
DURATION=${BENCH_DURATION:-2}
WARMUP=${BENCH_WARMUP:-0.5}
ROUNDS=${BENCH_ROUNDS:-5}
APIS=${BENCH_APIS:-openai anthropic responses gemini}
# The paths and loads of the Chat Completions and Messages clients, and those of the Responses and Gemini clients
# (fewer by default, to keep the whole run near 5 minutes).
PATHS_MAIN=${BENCH_PATHS:-direct nginx ballast translated}
MODES_MAIN=${BENCH_MODES:-rate concurrency}
PATHS_X=${BENCH_XPATHS:-direct ballast translated}
MODES_X=${BENCH_XMODES:-rate}
paths_of() { case $1 in openai | anthropic) echo "$PATHS_MAIN" ;; *) echo "$PATHS_X" ;; esac; }
modes_of() { case $1 in openai | anthropic) echo "$MODES_MAIN" ;; *) echo "$MODES_X" ;; esac; }
PROFILE=${BENCH_PROFILE:-0}
STREAM=${BENCH_STREAM:-0}
LOG_LEVEL=${BENCH_LOG:-warn}
# The gateways' log flag: none at all for `default`, so they log as users get it out of the box.
GW_LOG=(--log "$LOG_LEVEL")
[ "$LOG_LEVEL" = default ] && GW_LOG=()
PIN=${BENCH_PIN:-auto}
OUT_ROOT=${BENCH_OUT:-$ROOT/bench/out}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for api in $APIS; do
    case $api in openai | anthropic | responses | gemini) ;; *) die "unknown API $api in BENCH_APIS" ;; esac
done
NOSIGNAL="" # non-empty when some API's paths include nosignal: the second gateway is started
for api in $APIS; do
    for path in $(paths_of "$api"); do
        case $path in
        direct | nginx | ballast | translated) ;;
        nosignal) NOSIGNAL=1 ;;
        *) die "unknown path $path for $api (BENCH_PATHS / BENCH_XPATHS: direct nginx ballast nosignal translated)" ;;
        esac
    done
done

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
NOSIG_PID="" GATEWAY_NOSIG=""

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

# Translated paths: each client API served by a provider of the other format.
[routes.bench-openai-to-anthropic]
targets = ["sim-anthropic/claude-sonnet-4-5"]

[routes.bench-anthropic-to-openai]
targets = ["sim/gpt-4.1"]

# The Responses and Gemini clients: same format (an OpenAI provider spoken to in Responses, a Gemini provider) and
# translated (Responses -> Anthropic Messages, Gemini -> OpenAI Chat Completions).
[providers.sim-responses]
kind = "openai"
api = "responses"
base_url = "http://$SIM/v1"
api_key = "bench"

[providers.sim-gemini]
kind = "gemini"
base_url = "http://$SIM"
api_key = "bench"

[routes.bench-responses]
targets = ["sim-responses/gpt-4.1"]

[routes.bench-gemini]
targets = ["sim-gemini/gemini-2.5-flash"]

[routes.bench-responses-to-anthropic]
targets = ["sim-anthropic/claude-sonnet-4-5"]

[routes.bench-gemini-to-openai]
targets = ["sim/gpt-4.1"]

# Resilience policies ([policy]: retries, breakers, retry budgets) are left at their defaults, as users get
# them. The admin key only opens GET /admin/targets, read once at the end to show no breaker opened.
[admin]
key = "bench-admin"
TOML
# Each gateway runs in its own directory: `ballast serve` keeps incidents in ./ballast-incidents.sqlite by default,
# which two gateways must not share (nor should the bench leave one in the caller's directory).
mkdir -p "$TMP/gw-ballast"
(cd "$TMP/gw-ballast" && exec "${PIN_SERVER[@]}" "$BALLAST" "${GW_LOG[@]}" serve --config "$TMP/ballast.toml") \
    >"$TMP/ballast.log" 2>&1 &
BALLAST_PID=$!
PIDS+=("$BALLAST_PID")
GATEWAY=$(wait_listening "$TMP/ballast.log" ballast)
if [ -n "$NOSIGNAL" ]; then
    # The same gateway with its detectors unfed (availability, latency and output quality on every answer): the
    # `nosignal` path, to measure what they cost.
    cp "$TMP/ballast.toml" "$TMP/ballast-nosignal.toml"
    printf '\n[signal]\ndetectors = false\n' >>"$TMP/ballast-nosignal.toml"
    mkdir -p "$TMP/gw-nosignal"
    (cd "$TMP/gw-nosignal" && exec "${PIN_SERVER[@]}" "$BALLAST" "${GW_LOG[@]}" serve --config "$TMP/ballast-nosignal.toml") \
        >"$TMP/ballast-nosignal.log" 2>&1 &
    NOSIG_PID=$!
    PIDS+=("$NOSIG_PID")
    GATEWAY_NOSIG=$(wait_listening "$TMP/ballast-nosignal.log" "ballast (detectors off)")
fi

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
log "simulator http://$SIM  nginx http://$NGINXADDR  ballast http://$GATEWAY${NOSIGNAL:+  ballast (detectors off) http://$GATEWAY_NOSIG}"

# ---- requests -------------------------------------------------------------------------------------------
printf '%s' '{"model":"bench","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}' >"$TMP/openai.json"
printf '%s' '{"model":"bench-anthropic","max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}' >"$TMP/anthropic.json"
# The same requests naming the translated routes.
printf '%s' '{"model":"bench-openai-to-anthropic","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}' \
    >"$TMP/openai-translated.json"
printf '%s' '{"model":"bench-anthropic-to-openai","max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}' \
    >"$TMP/anthropic-translated.json"
printf '%s' '{"model":"bench-responses","input":"Hello","max_output_tokens":16}' >"$TMP/responses.json"
printf '%s' '{"model":"bench-responses-to-anthropic","input":"Hello","max_output_tokens":16}' \
    >"$TMP/responses-translated.json"
# Gemini names the model (the route) in the URL: the same body for both routes.
printf '%s' '{"contents":[{"role":"user","parts":[{"text":"Hello"}]}],"generationConfig":{"maxOutputTokens":16}}' \
    >"$TMP/gemini.json"
cp "$TMP/gemini.json" "$TMP/gemini-translated.json"
if [ "$STREAM" = 1 ]; then
    # The same requests asking for a stream (Gemini asks in the URL: `:streamGenerateContent?alt=sse`).
    for f in openai anthropic responses; do
        for g in "$TMP/$f.json" "$TMP/$f-translated.json"; do
            sed -i 's/^{/{"stream":true,/' "$g"
        done
    done
fi
# (`nosignal` sends the same-format request, like `ballast`.)
body_of() { case $2 in translated) echo "$TMP/$1-translated.json" ;; *) echo "$TMP/$1.json" ;; esac; }
# The field that shows an answer is in the client's own format.
api_marker() {
    case $STREAM:$1 in
    0:openai) echo '"object":"chat.completion"' ;;
    0:anthropic) echo '"type":"message"' ;;
    0:responses) echo '"object":"response"' ;;
    1:openai) echo '"object":"chat.completion.chunk"' ;;
    1:anthropic) echo 'event: message_start' ;;
    1:responses) echo 'event: response.created' ;;
    *:gemini) echo '"candidates":[' ;;
    esac
}
# The provider API the simulator must see for an api and path: chat, messages, responses or gemini.
upstream_api() {
    case $2 in
    translated) case $1 in openai | responses) echo messages ;; anthropic | gemini) echo chat ;; esac ;;
    *) case $1 in openai) echo chat ;; anthropic) echo messages ;; *) echo "$1" ;; esac ;;
    esac
}
# Its counter in the `by_api` of /_sim/stats, and the path the simulator records for it.
upstream_counter() { case $1 in chat | responses) echo openai ;; messages) echo anthropic ;; gemini) echo gemini ;; esac; }
upstream_path_re() {
    case $1 in
    chat) echo '^/v1/chat/completions$' ;;
    responses) echo '^/v1/responses$' ;;
    messages) echo '^/v1/messages$' ;;
    gemini) [ "$STREAM" = 1 ] && echo '^/v1beta/models/[^/]*:streamGenerateContent(\?alt=sse)?$' ||
        echo '^/v1beta/models/[^/]*:generateContent$' ;;
    esac
}
api_path() {
    case $1 in
    openai) echo /v1/chat/completions ;;
    anthropic) echo /v1/messages ;;
    responses) echo /v1/responses ;;
    gemini)
        local method=generateContent
        [ "$STREAM" = 1 ] && method='streamGenerateContent?alt=sse'
        case $2 in translated) echo "/v1beta/models/bench-gemini-to-openai:$method" ;;
            *) echo "/v1beta/models/bench-gemini:$method" ;; esac ;;
    esac
}
# Sets HDRS to the headers each SDK would send (the gateway has no keys configured and ignores them).
api_headers() {
    case $1 in
    openai | responses) HDRS=(--header "authorization: Bearer bench") ;;
    anthropic) HDRS=(--header "x-api-key: bench" --header "anthropic-version: 2023-06-01") ;;
    gemini) HDRS=(--header "x-goog-api-key: bench") ;;
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
    ballast | translated) echo "$BALLAST_PID" ;;
    nosignal) echo "$NOSIG_PID" ;;
    esac
}
addr_of() {
    case $1 in
    direct) echo "$SIM" ;;
    nginx) echo "$NGINXADDR" ;;
    ballast | translated) echo "$GATEWAY" ;;
    nosignal) echo "$GATEWAY_NOSIG" ;;
    esac
}
# The simulator's counters: "total ok by_api.openai by_api.anthropic by_api.gemini" (the control plane is not
# counted). (Parsed in bash: a Python start per run would add seconds to the whole run.)
sim_counts() {
    local json field out=""
    json=$(curl -s --max-time 5 "http://$SIM/_sim/stats") || die "cannot read the simulator's stats"
    for field in total_requests ok openai anthropic gemini; do
        [[ $json =~ \"$field\":([0-9]+) ]] || die "no $field in the simulator's stats: $json"
        out+="${BASH_REMATCH[1]} "
    done
    echo "$out"
}

# Every path must answer 200, in the client's format, from a provider of the expected format, before anything
# is measured.
for api in $APIS; do
    for path in $(paths_of "$api"); do
        api_headers "$api"
        read -r _ _ s_oa0 s_an0 s_ge0 <<<"$(sim_counts)"
        code=$(curl -s -o "$TMP/smoke.out" -w '%{http_code}' --max-time 5 \
            "${HDRS[@]}" -H "content-type: application/json" \
            --data-binary "@$(body_of "$api" "$path")" "http://$(addr_of "$path")$(api_path "$api" "$path")") || true
        [ "$code" = 200 ] || { cat "$TMP/smoke.out" >&2; die "$api via $path answered $code"; }
        grep -qF "$(api_marker "$api")" "$TMP/smoke.out" ||
            { cat "$TMP/smoke.out" >&2; die "$api via $path: the answer is not in the $api format"; }
        read -r _ _ s_oa1 s_an1 s_ge1 <<<"$(sim_counts)"
        up=$(upstream_api "$api" "$path")
        seen="openai:$((s_oa1 - s_oa0)) anthropic:$((s_an1 - s_an0)) gemini:$((s_ge1 - s_ge0))"
        want="openai:0 anthropic:0 gemini:0"
        want=${want/$(upstream_counter "$up"):0/$(upstream_counter "$up"):1}
        [ "$seen" = "$want" ] || die "$api via $path did not reach the simulator's $up API exactly once ($seen)"
        # Chat Completions and Responses share a counter: the path of the last request tells them apart.
        last=$(curl -s --max-time 5 "http://$SIM/_sim/requests" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)[-1]["path"])') || die "cannot read /_sim/requests"
        grep -qE "$(upstream_path_re "$up")" <<<"$last" || die "$api via $path reached $last, not the $up API"
    done
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$OUT_ROOT/$STAMP
mkdir -p "$OUT"
cat >"$OUT/meta.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "nproc": $NPROC, "placement": "$PLACEMENT", "rate": $RATE,
 "concurrency": $CONCURRENCY, "stream": $([ "$STREAM" = 1 ] && echo true || echo false), "log": "$LOG_LEVEL", "duration_s": $DURATION, "warmup_s": $WARMUP, "rounds": $ROUNDS,
 "nginx": "$("$NGINX" -v 2>&1 | sed 's|.*/||')", "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)",
 "ballast_bin": "$BALLAST", "built_here": $([ -n "${BALLAST_BIN:-}" ] && echo false || echo true),
 "nosignal": $([ -n "$NOSIGNAL" ] && echo '"second gateway, same config plus [signal] detectors = false"' || echo null),
 "runs": {$(for api in $APIS; do printf '"%s": {"paths": "%s", "modes": "%s"}, ' "$api" "$(paths_of "$api")" "$(modes_of "$api")"; done | sed 's/, $//')}}
JSON

RUNS=0
for api in $APIS; do
    RUNS=$((RUNS + $(wc -w <<<"$(modes_of "$api")") * $(wc -w <<<"$(paths_of "$api")") * ROUNDS))
done
log "$RUNS runs of ${WARMUP}s warmup + ${DURATION}s each ($(awk -v n="$RUNS" -v w="$WARMUP" -v d="$DURATION" 'BEGIN { printf "%.0f", n * (w + d + 0.2) }') s)"
for round in $(seq "$ROUNDS"); do
    for api in $APIS; do
        read -r -a PATHS <<<"$(paths_of "$api")"
        NPATHS=${#PATHS[@]}
        for mode in $(modes_of "$api"); do
            # Rotate the order of the paths each round so none always runs first (or last).
            for i in $(seq 0 $((NPATHS - 1))); do
                path=${PATHS[$(((i + round - 1) % NPATHS))]}
                load=(--rate "$RATE")
                [ "$mode" = concurrency ] && load=(--concurrency "$CONCURRENCY")
                api_headers "$api"
                # The simulator's counters around the run (outside the CPU window): for a proxied path, the
                # upstream requests beyond those the client sent are retries.
                read -r st0 ok0 _ _ <<<"$(sim_counts)"
                # shellcheck disable=SC2046 # pid lists are meant to split
                read -r up0 px0 <<<"$(cpu_ns "$SIM_PID") $(cpu_ns $(proxy_pids "$path"))"
                "${PIN_LOAD[@]}" "$LOADGEN" --url "http://$(addr_of "$path")$(api_path "$api" "$path")" \
                    --body "$(body_of "$api" "$path")" "${HDRS[@]}" \
                    "${load[@]}" --duration "$DURATION" --warmup "$WARMUP" --label "$path" \
                    --out "$OUT/$api-$mode-$path-r$round.json" >/dev/null 2>"$TMP/loadgen.err" ||
                    { cat "$TMP/loadgen.err" >&2; die "loadgen failed"; }
                # shellcheck disable=SC2046
                read -r up1 px1 <<<"$(cpu_ns "$SIM_PID") $(cpu_ns $(proxy_pids "$path"))"
                read -r st1 ok1 _ _ <<<"$(sim_counts)"
                printf '{"upstream_cpu_ns": %s, "proxy_cpu_ns": %s, "upstream_requests": %s, "upstream_ok": %s}\n' \
                    $((up1 - up0)) $((px1 - px0)) $((st1 - st0)) $((ok1 - ok0)) >"$OUT/$api-$mode-$path-r$round.cpu"
                printf '[bench] r%s %-9s %s\n' "$round" "$api" "$(cat "$TMP/loadgen.err")" >&2
            done
        done
    done
done

# Resilience state after the load: breakers, retry budgets (the gateway's view), and its warnings.
curl -s --max-time 5 -H "authorization: Bearer bench-admin" "http://$GATEWAY/admin/targets" >"$OUT/admin-targets.json" ||
    log "could not read /admin/targets"
cp "$TMP/ballast.log" "$OUT/ballast.log"
if [ -n "$NOSIGNAL" ]; then
    curl -s --max-time 5 -H "authorization: Bearer bench-admin" "http://$GATEWAY_NOSIG/admin/targets" \
        >"$OUT/admin-targets-nosignal.json" || log "could not read /admin/targets of the nosignal gateway"
    cp "$TMP/ballast-nosignal.log" "$OUT/ballast-nosignal.log"
fi

if [ "$ROUNDS" -gt 0 ]; then
    python3 "$ROOT/bench/summarize.py" "$OUT" | tee "$OUT/table.txt"
    cp "$OUT/summary.json" "$OUT_ROOT/latest.json"
    log "results: $OUT (summary.json, table.txt, one JSON per run); $OUT_ROOT/latest.json"
fi

# ---- optional profile -----------------------------------------------------------------------------------
if awk -v p="$PROFILE" 'BEGIN { exit !(p > 0) }'; then
    command -v perf >/dev/null || die "BENCH_PROFILE needs perf"
    PERF_FREQ=1999
    for api in $APIS; do
        # The nosignal gateway too, when this API's paths include it (its own pid).
        prof_paths="ballast translated"
        [[ " $(paths_of "$api") " == *" nosignal "* ]] && prof_paths="ballast nosignal translated"
        for path in $prof_paths; do
            api_headers "$api"
            data="$OUT/perf-$api-$path.data"
            "${PIN_LOAD[@]}" "$LOADGEN" --url "http://$(addr_of "$path")$(api_path "$api" "$path")" \
                --body "$(body_of "$api" "$path")" "${HDRS[@]}" --rate "$RATE" \
                --duration "$(awk -v p="$PROFILE" 'BEGIN { print p + 0.5 }')" --warmup 0.5 --label "$path" \
                --out "$OUT/profile-$api-$path.json" >/dev/null 2>"$TMP/loadgen.err" &
            lg=$!
            sleep 0.7
            perf record -q -g -F "$PERF_FREQ" -p "$(proxy_pids "$path")" -o "$data" -- sleep "$PROFILE" >/dev/null 2>&1 ||
                die "perf record failed"
            wait "$lg" || { cat "$TMP/loadgen.err" >&2; die "loadgen failed"; }
            perf report -q -i "$data" --stdio --no-children -n --sort dso,sym -g none \
                2>/dev/null >"$OUT/perf-$api-$path.txt"
            log "profile $api $path: $(cat "$TMP/loadgen.err")"
        done
    done
    # One sample is 1/PERF_FREQ s of CPU; the load sends RATE * PROFILE requests while perf samples.
    python3 "$ROOT/bench/perf_top.py" --us-per-sample \
        "$(awk -v f="$PERF_FREQ" -v r="$RATE" -v p="$PROFILE" 'BEGIN { print 1e6 / f / (r * p) }')" \
        "$OUT"/perf-*.txt | tee "$OUT/profile.txt"
    log "profile: $OUT/profile.txt (perf report per path: $OUT/perf-*.txt, data: perf-*.data)"
fi
