#!/usr/bin/env bash
# bench/hostile-rss.sh: Ballast's peak memory (RSS) while hostile providers attack every client API through every
# provider kind, beside its idle RSS; and whether it is still alive (and answering) at the end.
#
# One `ballast sim` per provider kind (anthropic, openai Chat Completions, openai Responses, gemini,
# openai-compatible), each under the simulator's `hostile` fault, its mode changed every few seconds (staggered,
# so the simulators run different modes at once), plus one healthy simulator. The gateway has a route per client
# API (Chat Completions, Responses, Messages, Gemini generateContent) whose first tier holds a target on every
# hostile provider (weighted: each request starts on a random one and falls over through the rest: same-format
# and translated paths) and whose second tier is the healthy fallback. bench/hostile_client.py drives a bounded
# concurrent load through every client API (streaming and not, alternately), counts the outcomes and samples
# the gateway's RSS every 200 ms. See bench/README.md, "Memory benchmarks".
#
# Exits non-zero if the gateway died (the key assertion), or is alive but no longer answers.
#
# Environment (all optional):
#   HOSTILE_DURATION=60 (s of load)  HOSTILE_CONCURRENCY=16  HOSTILE_CYCLE=5 (s per mode)
#   HOSTILE_TIMEOUT=45 (client timeout per request, s)  HOSTILE_RATE=1.0 (hostile fault rate)
#   HOSTILE_MODES=huge_index,no_terminator,...  (default: every mode)
#   HOSTILE_PARAMS='{"no_terminator": {"bytes": 67108864}}'  (override sizes per mode; see hostile_client.py)
#   HOSTILE_FAULT=hostile  (or `classic`: the older faults, for simulators without the hostile fault)
#   HOSTILE_BREAKERS=off   (off: breakers and retry budgets never stop the attack; on: the gateway's defaults)
#   BALLAST_BIN            use this binary instead of building target/release/ballast
#   BENCH_OUT=bench/out
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${HOSTILE_DURATION:-60}
CONCURRENCY=${HOSTILE_CONCURRENCY:-16}
CYCLE=${HOSTILE_CYCLE:-5}
CLIENT_TIMEOUT=${HOSTILE_TIMEOUT:-45}
RATE=${HOSTILE_RATE:-1.0}
MODES=${HOSTILE_MODES:-}
PARAMS=${HOSTILE_PARAMS:-}
FAULT=${HOSTILE_FAULT:-hostile}
BREAKERS=${HOSTILE_BREAKERS:-off}
OUT_ROOT=${BENCH_OUT:-$ROOT/bench/out}
DRAIN=10
# Hard limit: load + drain + start-up, smoke requests and settling.
HARD_TIMEOUT=$(awk -v d="$DURATION" -v t="$CLIENT_TIMEOUT" 'BEGIN { printf "%d", d + 10 + 120 }')

log() { printf '[hostile] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v python3 >/dev/null || die "needs python3"
command -v curl >/dev/null || die "needs curl"
case $BREAKERS in on | off) ;; *) die "HOSTILE_BREAKERS must be on or off" ;; esac

# ---- binary ---------------------------------------------------------------------------------------------
if [ -z "${BALLAST_BIN:-}" ]; then
    log "building (cargo build --release --bin ballast)"
    (cd "$ROOT" && cargo build --release -q --bin ballast)
fi
BALLAST=${BALLAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ballast}
[ -x "$BALLAST" ] || die "no ballast binary at $BALLAST"
case $FAULT in hostile | classic) ;; *) die "HOSTILE_FAULT must be hostile or classic" ;; esac

# ---- processes ------------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ballast-hostile.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$HARD_TIMEOUT" &
    sp=$!
    wait "$sp" && printf '[hostile] hard timeout %ss reached\n' "$HARD_TIMEOUT" >&2 && kill -TERM $$
) &
PIDS+=($!)

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

# One simulator per provider kind (separate, so each target runs its own mode), and a healthy one.
declare -A SIM SIMPID
for name in anthropic openai responses gemini compat healthy; do
    "$BALLAST" --log warn sim --listen 127.0.0.1:0 --seed 7 >"$TMP/sim-$name.log" 2>&1 &
    SIMPID[$name]=$!
    PIDS+=("${SIMPID[$name]}")
done
for name in anthropic openai responses gemini compat healthy; do
    SIM[$name]=$(wait_listening "$TMP/sim-$name.log" "simulator $name")
done

if [ "$FAULT" = hostile ]; then
    code=$(curl -s -o "$TMP/probe.out" -w '%{http_code}' --max-time 5 -X POST \
        -d '{"hostile": {"mode": "huge_index", "rate": 0}}' "http://${SIM[anthropic]}/_sim/faults") || true
    [ "$code" = 200 ] || die "this ballast sim has no hostile fault ($code: $(cat "$TMP/probe.out"));" \
        "HOSTILE_FAULT=classic runs the older faults instead"
    curl -s -o /dev/null --max-time 5 -X DELETE "http://${SIM[anthropic]}/_sim/faults" || true
fi

if [ "$BREAKERS" = off ]; then
    BREAKER_POLICY='# Breakers never open and retry budgets never run dry: every request meets the hostile targets.
retry_budget_ratio = 1000
retry_budget_min_per_second = 100000

[policy.breaker]
failure_ratio = 1.0
min_requests = 1000000
consecutive_failures = 1000000'
else
    BREAKER_POLICY='# Breakers and retry budgets: the defaults.'
fi
HOSTILE_TARGETS='"h-anthropic/claude-sonnet-4-5", "h-openai/gpt-4.1", "h-responses/gpt-4.1", "h-gemini/gemini-2.5-flash", "h-compat/llama-3"'
{
    cat <<TOML
[server]
listen = "127.0.0.1:0"

[policy]
# Bounded attempts so each request meets several hostile targets within the run.
first_token_timeout = "5s"
response_timeout = "5s"
idle_timeout = "5s"
attempt_timeout = "10s"
deadline = "30s"
retries = 0
$BREAKER_POLICY

[providers.h-anthropic]
kind = "anthropic"
base_url = "http://${SIM[anthropic]}"
api_key = "bench"

[providers.h-openai]
kind = "openai"
base_url = "http://${SIM[openai]}/v1"
api_key = "bench"

[providers.h-responses]
kind = "openai"
api = "responses"
base_url = "http://${SIM[responses]}/v1"
api_key = "bench"

[providers.h-gemini]
kind = "gemini"
base_url = "http://${SIM[gemini]}"
api_key = "bench"

[providers.h-compat]
kind = "openai-compatible"
base_url = "http://${SIM[compat]}/v1"

[providers.healthy]
kind = "openai"
base_url = "http://${SIM[healthy]}/v1"
api_key = "bench"
TOML
    for route in h-chat h-responses h-messages h-gemini; do
        cat <<TOML

[[routes.$route.tiers]]
strategy = "weighted"
targets = [$HOSTILE_TARGETS]

[[routes.$route.tiers]]
targets = ["healthy/gpt-4.1"]
TOML
    done
} >"$TMP/ballast.toml"
"$BALLAST" check --config "$TMP/ballast.toml" >"$TMP/check.log" 2>&1 || { cat "$TMP/check.log" >&2; die "ballast check rejected the config"; }
"$BALLAST" --log warn serve --config "$TMP/ballast.toml" >"$TMP/ballast.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
GATEWAY=$(wait_listening "$TMP/ballast.log" ballast)
log "ballast http://$GATEWAY (pid $GW_PID); hostile simulators: anthropic ${SIM[anthropic]} openai ${SIM[openai]}" \
    "responses ${SIM[responses]} gemini ${SIM[gemini]} openai-compatible ${SIM[compat]}; healthy ${SIM[healthy]}"

SIMS="anthropic=${SIM[anthropic]},openai=${SIM[openai]},responses=${SIM[responses]},gemini=${SIM[gemini]},compat=${SIM[compat]}"
EXTRA=()
[ -n "$MODES" ] && EXTRA+=(--modes "$MODES")
[ -n "$PARAMS" ] && EXTRA+=(--params "$PARAMS")
[ "$FAULT" = classic ] && EXTRA+=(--classic)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_ROOT"
log "load: ${DURATION}s, $CONCURRENCY workers, mode change every ${CYCLE}s, client timeout ${CLIENT_TIMEOUT}s, breakers $BREAKERS"
python3 "$ROOT/bench/hostile_client.py" --gateway "$GATEWAY" --gateway-pid "$GW_PID" \
    --routes "chat=h-chat,responses=h-responses,messages=h-messages,gemini=h-gemini" --sims "$SIMS" \
    --duration "$DURATION" --concurrency "$CONCURRENCY" --cycle "$CYCLE" --timeout "$CLIENT_TIMEOUT" \
    --rate "$RATE" --drain "$DRAIN" --deadline $((HARD_TIMEOUT - 15)) --out "$TMP/client.json" "${EXTRA[@]}" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait "$CLIENT_PID" || die "the client failed"

GW_ALIVE=1
kill -0 "$GW_PID" 2>/dev/null || GW_ALIVE=0
GW_EXIT=""
if [ "$GW_ALIVE" = 0 ]; then
    wait "$GW_PID" 2>/dev/null && GW_EXIT=0 || GW_EXIT=$?
fi
# Simulator memory, for reference.
SIM_RSS=""
for name in anthropic openai responses gemini compat healthy; do
    SIM_RSS+="\"$name\": $(awk '/^VmHWM/ { print $2 * 1024 }' "/proc/${SIMPID[$name]}/status" 2>/dev/null || echo null), "
done

# ---- report ---------------------------------------------------------------------------------------------
OUTFILE=$OUT_ROOT/hostile-rss-$STAMP.json
set +e
python3 - "$TMP/client.json" "$OUTFILE" "$TMP/ballast.log" <<PY
import json, re, sys
src, dst, logf = sys.argv[1:4]
r = json.load(open(src))
alive = bool($GW_ALIVE) and bool(r.get("alive", False))
log_lines = open(logf, errors="replace").read().splitlines()
levels = {lvl: sum(1 for l in log_lines if f" {lvl} " in l) for lvl in ("WARN", "ERROR")}
panics = [l for l in log_lines if "panicked" in l or "thread '" in l]
# WARN/ERROR lines by message (timestamps, request ids and timings dropped).
kinds = {}
for l in log_lines:
    m = re.match(r"\S+\s+(WARN|ERROR)\s+(\S+): (.*?)(?: request_id=.*)?$", l)
    if m:
        msg = re.sub(r"\d+(\.\d+)?\s*(ms|s|µs)\b", r"N\\2", m.group(3))
        k = f"{m.group(1)} {msg[:200]}"
        kinds[k] = kinds.get(k, 0) + 1
r.update({
    "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)",
    "tree_changes": $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l),  # source files changed since the commit (0: clean)
    "binary": "$BALLAST", "nproc": $(nproc), "fault": "$FAULT", "breakers": "$BREAKERS",
    "gateway_alive": alive, "gateway_exit": "$GW_EXIT", "sim_hwm": {${SIM_RSS%, }},
    "gateway_log": {"lines": len(log_lines), **levels, "panics": panics[:5], "tail": log_lines[-15:],
                    "by_message": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))},
})
json.dump(r, open(dst, "w"), indent=1)
if "counts" not in r or "idle" not in r:
    print(json.dumps({k: v for k, v in r.items() if k != "gateway_log"}, indent=1)[:3000])
    print("gateway alive:", alive)
    sys.exit(0 if alive else 1)
MB = 1e6
idle = r["idle"].get("VmRSS", 0)
end = (r.get("end") or {}).get("VmRSS")
settled = (r.get("settled") or {}).get("VmRSS")
hwm = max(x for x in [r.get("hwm") or 0, (r.get("settled") or {}).get("VmHWM", 0)])
print()
print(f"hostile providers: {r['load_s']:.0f} s of load, {r['concurrency']} workers, fault {r['fault']} "
      f"(modes {', '.join(r['modes'])}; one change every {r['cycle_s']} s), breakers {r['breakers']}")
print(f"  gateway RSS: idle {idle/MB:.1f} MB, peak (VmHWM) {hwm/MB:.1f} MB, peak sampled {(r['peak_rss_sampled'] or 0)/MB:.1f} MB, "
      f"at end {(end or 0)/MB:.1f} MB, {3:.0f} s later {(settled or 0)/MB:.1f} MB")
print(f"  gateway fds: idle {r['idle'].get('fds')}, after {r.get('settled_fds')}; threads {r['idle'].get('Threads')} -> "
      f"{(r.get('settled') or {}).get('Threads')}")
print(f"  requests {r['requests']} ({r['requests_per_s']}/s), cancelled at the end {r['cancelled_at_end']}")
cols = ["2xx_complete", "2xx_error_event", "2xx_malformed", "error_clean", "error_unclean", "client_timeout", "connection_error"]
short = ["2xx ok", "2xx err-ev", "2xx BAD", "4/5xx clean", "4/5xx BAD", "timeout", "conn err"]
print(f"  {'client API':18}" + "".join(f"{s:>12}" for s in short) + f"{'statuses':>8}")
tot = {c: 0 for c in cols}
for key in sorted(r["counts"]):
    row = r["counts"][key]
    for c in cols: tot[c] += row[c]
    st = " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].get(key, {}).items()))
    print(f"  {key:18}" + "".join(f"{row[c]:>12}" for c in cols) + f"   {st}")
print(f"  {'total':18}" + "".join(f"{tot[c]:>12}" for c in cols))
# Client API and provider of the same wire format: the fast path (bytes passed through).
SAME = {("chat", "h-openai"), ("chat", "h-compat"), ("chat", "healthy"), ("responses", "h-responses"),
        ("messages", "h-anthropic"), ("gemini", "h-gemini")}
def path_of(key):
    api, _, target = key.partition(" <- ")
    target = target.split(" [")[0]
    return "" if target == "-" else ("same format" if (api.split()[0], target) in SAME else "translated")
print("  by client API <- provider that answered (x-ballast-target; '-' = none):")
for key in sorted(r.get("by_target", {})):
    row = r["by_target"][key]
    print(f"    {key:26}{path_of(key):13}" + "  ".join(f"{s} {row[c]}" for c, s in zip(cols, short) if row[c]))
bad = {k: v for k, v in r.get("by_mode", {}).items() if v["2xx_malformed"] or v["error_unclean"]}
if bad:
    print("  malformed answers passed to the client, by client API <- provider [its hostile mode]:")
    for k in sorted(bad):
        print(f"    {k:48} {path_of(k):12} 2xx BAD {bad[k]['2xx_malformed']}, 4/5xx BAD {bad[k]['error_unclean']} "
              f"(of {sum(bad[k].values())})")
for k, ex in sorted(r.get("examples", {}).items()):
    print(f"  e.g. {k}: " + " | ".join(ex[:2]))
print("  peak RSS per fault window (modes of anthropic, openai, responses, gemini, openai-compatible):")
for w in r.get("rss_by_cycle", []):
    print(f"    t={w['t']:5.1f}s {(w['max_rss'] or 0)/MB:7.1f} MB  " + " ".join(w["modes"].values()))
served = {n: (s.get("by_outcome", {}) if isinstance(s, dict) else s) for n, s in r.get("sim_stats", {}).items()}
print("  hostile answers per simulator: " + ", ".join(
    f"{n} {v.get('hostile', '?')}/{sum(x for x in v.values() if isinstance(x, int))}" if isinstance(v, dict) else f"{n} ?"
    for n, v in served.items()))
print(f"  gateway log: {levels['WARN']} WARN, {levels['ERROR']} ERROR, {len(panics)} panic lines; most frequent:")
for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]:
    print(f"    {n:5} {k[:150]}")
print(f"  after the run (faults cleared): " + "; ".join(f"{k} {v}" for k, v in r.get("after", {}).items()))
print(f"  gateway alive at the end: {'yes' if alive else 'NO'}")
ok_after = all(v.startswith("2xx_complete") for v in r.get("after", {}).values()) and r.get("after")
sys.exit(0 if alive and ok_after else (1 if not alive else 2))
PY
rc=$?
set -e
cp "$OUTFILE" "$OUT_ROOT/hostile-rss-latest.json"
cp "$TMP/ballast.log" "${OUTFILE%.json}.ballast.log"
log "results: $OUTFILE (and $OUT_ROOT/hostile-rss-latest.json)"
[ "$GW_ALIVE" = 1 ] || { tail -30 "$TMP/ballast.log" >&2; die "the gateway died (exit $GW_EXIT)"; }
[ "$rc" = 0 ] || die "the gateway is alive but did not answer every API after the run (see above)"
