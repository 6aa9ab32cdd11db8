#!/bin/sh
# Command agent on a serial port. Every line is self-describing so that noise, echoes or a
# half-received line can never be mistaken for a reply (tests/harness/guest_agent.ts is the
# other end):
#   host -> guest  "@@VUP PING <token>"                   -> "@@VUP PONG <token>"
#   host -> guest  "@@VUP RUN <id> <timeout_s> <base64 script>"
#   guest -> host  "@@VUP O <id> <base64 line>"  (stdout, 0..n lines)
#                  "@@VUP E <id> <base64 line>"  (stderr, 0..n lines)
#                  "@@VUP END <id> <exit code>"  (always last)
# The script runs in its own sh with stdin from /dev/null, killed after <timeout_s> (code 137).
port="${1:-/dev/ttyS1}"
stty -F "$port" raw -echo -echoe -echok -echoctl -echoke 2>/dev/null || stty -F "$port" raw -echo
exec <"$port" >"$port" 2>/dev/null
work=/run/vup-agent
mkdir -p "$work"
while IFS= read -r line; do
  # Drop anything before the marker (e.g. garbage received before the port was set up).
  case "$line" in
  *"@@VUP "*) line="@@VUP ${line##*@@VUP }" ;;
  *) continue ;;
  esac
  set -- $line
  case "$2" in
  PING) echo "@@VUP PONG $3" ;;
  RUN)
    id="$3" timeout_s="$4" script="$5"
    if ! echo "$script" | base64 -d >"$work/$id.sh" 2>/dev/null; then
      echo "@@VUP E $id $(echo 'agent: cannot decode script' | base64)"
      echo "@@VUP END $id 254"
      continue
    fi
    (cd / && timeout -s KILL "$timeout_s" sh "$work/$id.sh") </dev/null >"$work/$id.out" 2>"$work/$id.err"
    rc=$?
    base64 "$work/$id.out" | sed "s/^/@@VUP O $id /"
    base64 "$work/$id.err" | sed "s/^/@@VUP E $id /"
    echo "@@VUP END $id $rc"
    rm -f "$work/$id.sh" "$work/$id.out" "$work/$id.err"
    ;;
  esac
done
