#!/usr/bin/env bash
# End to end with the real coding agents: Claude Code, Codex CLI and Gemini CLI, pinned from npm, run
# headless through `ballast serve` to `ballast sim`, each driven to use one of its own tools by the
# simulator's `[[ballast-sim:call NAME {ARGS}]]` directive and then to answer.
#
#   tests/agents/run.sh                 # all six cases
#   tests/agents/run.sh cc-openai ...   # some of them
#
# Cases (each is also the gateway route the agent is told to use, see ballast.toml):
#   cc-anthropic     Claude Code -> anthropic target               (same format)
#   cc-openai        Claude Code -> openai Chat Completions target (translated)
#   codex-responses  Codex -> openai target with api = "responses" (same format)
#   codex-anthropic  Codex -> anthropic target                     (translated)
#   gemini-gemini    Gemini CLI -> gemini target                   (same format)
#   gemini-anthropic Gemini CLI -> anthropic target                (translated)
#
# Environment:
#   BALLAST_BIN         the ballast binary (default: target/debug/ballast, built if missing)
#   AGENT_TIMEOUT       seconds one agent run may take (default 120)
#   CODEX_WEB_SEARCH    Codex's `web_search` setting (default: unset = Codex's own default, which
#                       offers the built-in web_search tool on every request)
#   KEEP_RUN=1          keep tests/agents/.run even when every case passed
#
# Needs: node + npm (registry access for the first install), curl, python3. The agents reach only
# the gateway on loopback: telemetry, auto-update, error reporting, plugin sync and feature flags are
# turned off (see README.md beside this script).
set -euo pipefail

CLAUDE_CODE_VERSION=2.1.330
CODEX_VERSION=0.169.0
GEMINI_CLI_VERSION=0.61.0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NPM_PREFIX=$HERE/.npm
RUN=$HERE/.run
AGENT_TIMEOUT=${AGENT_TIMEOUT:-120}
GATEWAY_KEY=ballast-agents-key
ALL_CASES=(cc-anthropic cc-openai codex-responses codex-anthropic gemini-gemini gemini-anthropic)
CASES=("$@")
[ ${#CASES[@]} -eq 0 ] && CASES=("${ALL_CASES[@]}")
for c in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $c "* ]] || { echo "unknown case $c (known: ${ALL_CASES[*]})" >&2; exit 2; }
done

log() { printf '[agents] %s\n' "$*" >&2; }
indent() { awk '{ print "    " $0 }' >&2; } # (awk also ends a last line that has no newline)
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
T0=$(now)

# --- the agents, pinned -------------------------------------------------------------------------
installed_version() { # package name -> installed version or ""
  local pj=$NPM_PREFIX/node_modules/$1/package.json
  [ -f "$pj" ] && python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "$pj" || true
}
if [ "$(installed_version @anthropic-ai/claude-code)" != "$CLAUDE_CODE_VERSION" ] ||
  [ "$(installed_version @openai/codex)" != "$CODEX_VERSION" ] ||
  [ "$(installed_version @google/gemini-cli)" != "$GEMINI_CLI_VERSION" ]; then
  log "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION @openai/codex@$CODEX_VERSION" \
    "@google/gemini-cli@$GEMINI_CLI_VERSION into $NPM_PREFIX"
  t=$(now)
  # Install scripts are not needed: Claude Code and Codex ship their native binary in a platform
  # package, Gemini CLI is one JavaScript bundle (its optional node-pty and keytar go unused here).
  # One retry: a registry hiccup should not fail the suite.
  for try in 1 2; do
    if npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --ignore-scripts --loglevel=error \
      "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" "@openai/codex@$CODEX_VERSION" \
      "@google/gemini-cli@$GEMINI_CLI_VERSION" >&2; then
      break
    fi
    [ "$try" = 2 ] && { log "npm install failed twice"; exit 1; }
    log "npm install failed; retrying"
    sleep 5
  done
  log "installed in $(since "$t")s"
fi
# Claude Code's package runs a postinstall that copies the platform binary over its `bin` stub (and
# asks for Node 22); run the platform package's binary directly instead.
CLAUDE=$(ls "$NPM_PREFIX"/node_modules/@anthropic-ai/claude-code-*/claude 2>/dev/null | head -n 1 || true)
CODEX=$NPM_PREFIX/node_modules/.bin/codex
GEMINI=$NPM_PREFIX/node_modules/.bin/gemini
[ -x "$CLAUDE" ] || { log "no Claude Code platform binary under $NPM_PREFIX/node_modules/@anthropic-ai"; exit 1; }
[ -x "$CODEX" ] || { log "no codex launcher at $CODEX"; exit 1; }
[ -x "$GEMINI" ] || { log "no gemini launcher at $GEMINI"; exit 1; }
log "$("$CLAUDE" --version), $("$CODEX" --version 2>/dev/null), Gemini CLI $(installed_version @google/gemini-cli)"

# --- simulator and gateway ----------------------------------------------------------------------
if [ -z "${BALLAST_BIN:-}" ]; then
  BALLAST_BIN=$ROOT/target/debug/ballast
  [ -x "$BALLAST_BIN" ] || (cd "$ROOT" && cargo build -q -p ballast)
fi
[ -x "$BALLAST_BIN" ] || { log "BALLAST_BIN=$BALLAST_BIN is not executable"; exit 1; }

rm -rf "$RUN"
mkdir -p "$RUN"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap "exit 130" INT TERM

# Starts a ballast subcommand with port 0 in this shell (so cleanup knows its pid), then reads the
# URL it says it listens on into the variable named first.
start() { # var name args...
  local var=$1 name=$2
  shift 2
  "$BALLAST_BIN" "$@" >"$RUN/$name.out" 2>"$RUN/$name.log" &
  local pid=$! url=""
  PIDS+=("$pid")
  for _ in $(seq 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$RUN/$name.out" | head -n 1 | sed 's/listening on //' || true)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$url" ] || { log "$name did not start:"; cat "$RUN/$name.out" "$RUN/$name.log" >&2; exit 1; }
  printf -v "$var" '%s' "$url"
}
start SIM sim sim --listen 127.0.0.1:0 --require-key sim-key --seed 1
export BALLAST_SIM_URL=$SIM BALLAST_AGENTS_GATEWAY_KEY=$GATEWAY_KEY
start GW gateway serve --config "$HERE/ballast.toml" --listen 127.0.0.1:0
log "simulator $SIM, gateway $GW"

# --- one agent run ------------------------------------------------------------------------------
# Every case: a fresh HOME / config dir and working directory, a clean environment (nothing of the
# caller's ANTHROPIC_* / OPENAI_* leaks in), the simulator's request log reset before and saved after.
PASSED=0
FAILED=0
RESULTS=()

run_claude() { # case dir
  local model=$1 dir=$2
  mkdir -p "$dir/home/.claude"
  (cd "$dir/work" && env -i PATH="$PATH" HOME="$dir/home" CLAUDE_CONFIG_DIR="$dir/home/.claude" \
    ANTHROPIC_BASE_URL="$GW" ANTHROPIC_API_KEY="$GATEWAY_KEY" \
    ANTHROPIC_DEFAULT_HAIKU_MODEL="$model" ANTHROPIC_SMALL_FAST_MODEL="$model" \
    CLAUDE_CODE_MAX_CONTEXT_TOKENS=200000 \
    DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 DISABLE_ERROR_REPORTING=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    timeout "$AGENT_TIMEOUT" "$CLAUDE" -p --model "$model" --allowedTools Bash -- \
    'Write the marker file. [[ballast-sim:call Bash {"command": "echo ballast-ok > out.txt", "description": "Write the marker file"}]]' \
    </dev/null >"$dir/stdout" 2>"$dir/stderr")
}

run_codex() { # case dir
  local model=$1 dir=$2
  mkdir -p "$dir/codex"
  {
    echo "model = \"$model\""
    echo 'model_provider = "ballast"'
    echo 'check_for_update_on_startup = false'
    [ -n "${CODEX_WEB_SEARCH:-}" ] && echo "web_search = \"$CODEX_WEB_SEARCH\""
    echo
    sed "s|@BASE_URL@|$GW/v1|" "$HERE/codex-config.toml"
  } >"$dir/codex/config.toml"
  (cd "$dir/work" && env -i PATH="$PATH" HOME="$dir/home" CODEX_HOME="$dir/codex" \
    BALLAST_API_KEY="$GATEWAY_KEY" \
    timeout "$AGENT_TIMEOUT" "$CODEX" exec --strict-config --skip-git-repo-check --ephemeral \
    --color never --dangerously-bypass-approvals-and-sandbox -o "$dir/last-message" -- \
    'Write the marker file. [[ballast-sim:call exec_command {"cmd": "echo ballast-ok > out.txt"}]]' \
    </dev/null >"$dir/stdout" 2>"$dir/stderr")
}

run_gemini() { # case dir
  local model=$1 dir=$2 rc=0
  mkdir -p "$dir/home/.gemini"
  cp "$HERE/gemini-settings.json" "$dir/home/.gemini/settings.json"
  # --skip-trust: headless in a folder not yet trusted, the CLI otherwise exits (55) before any
  # request; --approval-mode yolo: the shell tool runs without a confirmation prompt.
  (cd "$dir/work" && env -i PATH="$PATH" HOME="$dir/home" GEMINI_CLI_HOME="$dir/home" \
    GOOGLE_GEMINI_BASE_URL="$GW" GEMINI_API_KEY="$GATEWAY_KEY" \
    timeout "$AGENT_TIMEOUT" "$GEMINI" -m "$model" --skip-trust --approval-mode yolo \
    --output-format json -p \
    'Write the marker file. [[ballast-sim:call run_shell_command {"command": "echo ballast-ok > out.txt", "description": "Write the marker file"}]]' \
    </dev/null >"$dir/stdout" 2>"$dir/stderr") || rc=$?
  # The final answer is the JSON output's `response` (on failure the CLI prints its error, as JSON,
  # to stderr).
  python3 - "$dir" <<'EOF' || true
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
try:
    out = json.loads((d / "stdout").read_text())
except ValueError:
    sys.exit(0)
if isinstance(out, dict) and isinstance(out.get("response"), str):
    (d / "last-message").write_text(out["response"])
EOF
  return "$rc"
}

# Checks what the agent did and what the simulator saw; prints problems, one a line.
check() { # case dir expected-upstream-path tool
  python3 - "$@" <<'EOF'
import json, pathlib, sys
case, d, path, tool = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
problems = []
marker = d / "work" / "out.txt"
if not marker.exists():
    problems.append("the tool did not run: work/out.txt is missing")
elif marker.read_text().strip() != "ballast-ok":
    problems.append(f"work/out.txt holds {marker.read_text()!r}")
answer = (d / "last-message").read_text() if (d / "last-message").exists() else (d / "stdout").read_text()
if "Tool result received:" not in answer:
    problems.append(f"no final answer after the tool result; agent printed {answer[:300]!r}")
seen = json.loads((d / "requests.json").read_text())
seen = seen if isinstance(seen, list) else seen.get("requests", [])
gen = [r for r in seen if r["method"] == "POST"]
paths = sorted({r["path"].split("?")[0] for r in gen})
if paths != [path]:
    problems.append(f"the simulator saw {paths}, expected only {path}")
def offered(body):
    names = []
    for t in body.get("tools") or []:
        names.append(t.get("name") or (t.get("function") or {}).get("name"))
        names.extend(f.get("name") for f in t.get("functionDeclarations") or [])
    return names
calls = [r for r in gen if tool in offered(r["body"] if isinstance(r["body"], dict) else {})]
if len(calls) < 2:
    problems.append(f"expected 2 upstream turns offering {tool} (call, then answer), saw {len(calls)} of {len(gen)}")
if "Invalid configuration in" in (d / "stderr").read_text(errors="replace"):
    problems.append("the agent rejected its settings (see stderr)")
for p in problems:
    print(p)
EOF
}

run_case() {
  local case=$1 dir=$RUN/$1 t rc=0 problems
  mkdir -p "$dir/work" "$dir/home"
  curl -fsS -X POST "$SIM/_sim/reset" >/dev/null
  # Where this case's lines start in the gateway's and the simulator's logs.
  local gw_from sim_from
  gw_from=$(($(wc -l <"$RUN/gateway.log") + 1))
  sim_from=$(($(wc -l <"$RUN/sim.log") + 1))
  t=$(now)
  case $case in
    cc-anthropic) run_claude "$case" "$dir" || rc=$? ;;
    cc-openai) run_claude "$case" "$dir" || rc=$? ;;
    codex-responses) run_codex "$case" "$dir" || rc=$? ;;
    codex-anthropic) run_codex "$case" "$dir" || rc=$? ;;
    gemini-gemini) run_gemini "$case" "$dir" || rc=$? ;;
    gemini-anthropic) run_gemini "$case" "$dir" || rc=$? ;;
  esac
  local took
  took=$(since "$t")
  curl -fsS "$SIM/_sim/requests" >"$dir/requests.json"
  local path tool
  case $case in
    cc-anthropic) path=/v1/messages tool=Bash ;;
    cc-openai) path=/v1/chat/completions tool=Bash ;;
    codex-responses) path=/v1/responses tool=exec_command ;;
    codex-anthropic) path=/v1/messages tool=exec_command ;;
    gemini-gemini) path=/v1beta/models/gemini-2.5-flash:streamGenerateContent tool=run_shell_command ;;
    gemini-anthropic) path=/v1/messages tool=run_shell_command ;;
  esac
  problems=$(check "$case" "$dir" "$path" "$tool")
  local exited="agent exited with status $rc"
  [ "$rc" -eq 124 ] && exited="agent timed out after ${AGENT_TIMEOUT}s (AGENT_TIMEOUT)"
  [ "$rc" -eq 0 ] || problems="$exited${problems:+$'\n'$problems}"
  if [ -z "$problems" ]; then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS $case (${took}s)")
    local answer=$dir/stdout
    [ -f "$dir/last-message" ] && answer=$dir/last-message
    log "PASS $case in ${took}s: $(head -c 120 "$answer" | tr '\n' ' ')"
  else
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $case (${took}s)")
    log "FAIL $case in ${took}s:"
    indent <<<"$problems"
    log "  agent stdout (last lines, full output in $dir/stdout):"
    tail -n 8 "$dir/stdout" | indent
    log "  agent stderr (last lines, full log in $dir/stderr):"
    tail -n 8 "$dir/stderr" | indent
    log "  gateway log during the case (last lines, full log in $RUN/gateway.log):"
    tail -n "+$gw_from" "$RUN/gateway.log" | tail -n 12 | indent
    if [ "$(tail -n "+$sim_from" "$RUN/sim.log" | wc -l)" -gt 0 ]; then
      log "  simulator log during the case (last lines, full log in $RUN/sim.log):"
      tail -n "+$sim_from" "$RUN/sim.log" | tail -n 8 | indent
    fi
  fi
}

for c in "${CASES[@]}"; do run_case "$c"; done

printf '%s\n' "${RESULTS[@]}"
log "total $(since "$T0")s; logs in $RUN"
echo "agents: $PASSED passed, $FAILED failed"
if [ "$FAILED" -eq 0 ] && [ -z "${KEEP_RUN:-}" ]; then rm -rf "$RUN"; fi
[ "$FAILED" -eq 0 ]
