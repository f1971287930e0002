#!/usr/bin/env bash
# Two feedgate nodes, one PostgreSQL and one Redis on this machine (docs/deployment.md).
# State goes to var/cluster/. Ctrl-C stops everything this script started.
#   ./ops/cluster/run.sh            then, in another shell:
#   feedgate nodes --local --config ops/cluster/node1.toml
#   ffmpeg -re -f lavfi -i testsrc2=size=640x360:rate=25 -c:v libx264 -preset ultrafast \
#     -tune zerolatency -g 25 -f rtsp 'rtsp://riverside-encoder:<password>@127.0.0.1:18554/high-street-north'
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
var="$root/var/cluster"
mkdir -p "$var"
pids=()
as_pg=""
pg_ctl=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${pg_ctl:-}" ] && $as_pg "$pg_ctl" stop -D "$var/pg" -m fast >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# Redis, append-only so a restart keeps camera ownership and the usage stream.
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly yes --dir "$var" \
  --logfile "$var/redis.log" --daemonize no &
pids+=($!)

# PostgreSQL from Debian's binaries (initdb refuses root: run it as postgres then).
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pg_ctl="$bindir/pg_ctl"
if [ "$(id -u)" = 0 ]; then as_pg="runuser -u postgres --"; chown postgres "$var"; fi
if [ ! -d "$var/pg" ]; then
  $as_pg "$bindir/initdb" -D "$var/pg" -U postgres --auth=trust -E UTF8 >/dev/null
fi
$as_pg "$pg_ctl" start -D "$var/pg" -l "$var/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 15432 -c unix_socket_directories=$var" >/dev/null
"$bindir/psql" -h 127.0.0.1 -p 15432 -U postgres -tc \
  "SELECT 1 FROM pg_database WHERE datname = 'feedgate'" | grep -q 1 ||
  "$bindir/createdb" -h 127.0.0.1 -p 15432 -U postgres feedgate

# The cluster's shared secret and signing keys, made once.
[ -s "$var/secret" ] || (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$var/secret")
feedgate keys init --config "$here/node1.toml"

for n in 1 2; do
  feedgate serve --config "$here/node$n.toml" &
  pids+=($!)
done
echo "node1: rtsp://127.0.0.1:18554/  http://127.0.0.1:18080/   node2: rtsp://127.0.0.1:19554/  http://127.0.0.1:19080/"
wait -n "${pids[@]}"
