#!/usr/bin/env bash
# Benchmarks the three services (release builds) against the local MariaDB, Redis and RabbitMQ,
# with wrk as the load generator on the same machine. Prints figures; asserts nothing.
#
#   scripts/bench/bench.sh            # all scenarios
#   DURATION=30s scripts/bench/bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/scripts/bench"
DURATION=${DURATION:-15s}
BURST=${BURST:-10000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
NAME="ofbench"  # exchanges are reused between runs; queues and databases are removed
ORDER_PORT=18080 ANALYTICS_PORT=18081 NOTIFY_PORT=18082
LOGS=$(mktemp -d)

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  { apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; } >/dev/null
fi
"$ROOT/scripts/ensure-servers.sh" >/dev/null
(cd "$ROOT" && cargo build --release --locked -q -p order-service -p analytics-service -p notification-worker)

mysql() { mariadb -uroot -h127.0.0.1 -N -B "$@"; }
delete_queues() {
  local queue
  for queue in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$NAME\." || true); do
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
  done
}
delete_queues
mysql -e "DROP DATABASE IF EXISTS ${NAME}_orders; DROP DATABASE IF EXISTS ${NAME}_analytics"
mysql -e "CREATE DATABASE ${NAME}_orders; CREATE DATABASE ${NAME}_analytics"

declare -A pid_of
cleanup() {
  for pid in "${pid_of[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  mysql -e "DROP DATABASE IF EXISTS ${NAME}_orders; DROP DATABASE IF EXISTS ${NAME}_analytics"
  delete_queues
  redis-cli --scan --pattern "$NAME:*" | xargs -r redis-cli del >/dev/null
  rm -rf "$LOGS"
}
trap cleanup EXIT

common=(
  LOG_LEVEL=warn
  REDIS_URL=redis://127.0.0.1:6379
  ORDERFLOW_REDIS__KEY_PREFIX="$NAME:"
  RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
  ORDERFLOW_RABBITMQ__EXCHANGE="$NAME.orders"
  ORDERFLOW_QUEUES__ORDER_PROCESSED="$NAME.orders.processed"
  ORDERFLOW_QUEUES__ANALYTICS="$NAME.analytics.orders"
  ORDERFLOW_QUEUES__NOTIFICATIONS="$NAME.notifications.orders"
)
start() {
  local name=$1 port=$2; shift 2
  env -i PATH="$PATH" "${common[@]}" SERVICE_PORT="$port" "$@" "$TARGET/$name" >>"$LOGS/$name.log" 2>&1 &
  pid_of[$name]=$!
  for _ in $(seq 1 100); do curl -sf "localhost:$port/readyz" >/dev/null && return; sleep 0.2; done
  echo "$name did not become ready" >&2; cat "$LOGS/$name.log" >&2; exit 1
}
start order-service $ORDER_PORT DATABASE_URL="mysql://root@127.0.0.1:3306/${NAME}_orders"
start analytics-service $ANALYTICS_PORT DATABASE_URL="mysql://root@127.0.0.1:3306/${NAME}_analytics"
start notification-worker $NOTIFY_PORT

rss() {
  for name in order-service analytics-service notification-worker; do
    awk '/VmRSS/ {printf "%d MiB ", $2/1024}' "/proc/${pid_of[$name]}/status"
  done
  echo
}
echo "idle RSS (order, analytics, notifications): $(rss)"

summary_exact() {
  local orders revenue summary
  read -r orders revenue < <(mysql -e "SELECT COUNT(*), COALESCE(SUM(total_minor),0) FROM ${NAME}_orders.orders")
  summary=$(curl -s "localhost:$ANALYTICS_PORT/analytics/summary")
  python3 - "$orders" "$revenue" "$summary" <<'PY'
import json, sys
from decimal import Decimal
orders, revenue, summary = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3], parse_float=Decimal)
ok = summary["total_orders"] == orders and Decimal(str(summary["total_revenue"])) * 100 == revenue
sys.exit(0 if ok else 1)
PY
}

# Where events wait: unpublished outbox rows of each service, then messages in each queue.
backlog() {
  local orders analytics
  orders=$(mysql -e "SELECT COUNT(*) FROM ${NAME}_orders.outbox")
  analytics=$(mysql -e "SELECT COUNT(*) FROM ${NAME}_analytics.outbox")
  echo -n "outbox orders=$orders analytics=$analytics; queues "
  rabbitmqctl -q list_queues name messages | awk -v p="$NAME." 'index($1, p) == 1 && $1 !~ /retry|dlq/ {printf "%s=%s ", substr($1, length(p) + 1), $2}'
}

wait_exact() {
  local started=$1
  until summary_exact; do sleep 0.05; done
  python3 -c "import time; print(f'{time.time() - $started:.2f}')"
}

for connections in 16 64; do
  echo
  echo "== POST /orders, $connections connections, $DURATION"
  wrk -t2 -c"$connections" -d"$DURATION" --latency -s "$HERE/post.lua" "http://127.0.0.1:$ORDER_PORT" \
    | grep -E "Requests/sec|Latency  |50%|99%|Non-2xx|Socket errors"
  last_post=$(python3 -c 'import time; print(time.time())')
  echo "backlog when the load stopped: $(backlog)"
  echo "summary exact $(wait_exact "$last_post") s after the last POST"
done

echo
echo "== burst of $BURST orders with analytics-service stopped, then its drain"
kill "${pid_of[analytics-service]}"; wait "${pid_of[analytics-service]}" 2>/dev/null || true
read -r _ last_post < <(python3 "$HERE/burst.py" 127.0.0.1 $ORDER_PORT "$BURST" 32)
backlog=$(rabbitmqctl -q list_queues name messages | awk -v q="$NAME.analytics.orders" '$1 == q {print $2}')
start analytics-service $ANALYTICS_PORT DATABASE_URL="mysql://root@127.0.0.1:3306/${NAME}_analytics"
restarted=$(python3 -c 'import time; print(time.time())')
drained_after=$(wait_exact "$restarted")
# All $BURST events of the burst were counted by then (some may still have been on their way to
# the queue when it restarted), so $BURST / time is a lower bound of the drain rate.
python3 -c "print(f'queue held {$backlog} events at restart; all {$BURST} counted {$drained_after} s after analytics-service started: at least {$BURST / $drained_after:.0f} events/s')"

echo
echo "== burst of $BURST orders, everything running"
read -r first_post last_post < <(python3 "$HERE/burst.py" 127.0.0.1 $ORDER_PORT "$BURST" 32)
exact_after=$(wait_exact "$last_post")
python3 -c "print(f'{$BURST} orders in {$last_post - $first_post:.2f} s ({$BURST / ($last_post - $first_post):.0f}/s); summary exact {$exact_after} s after the last POST')"

echo
id=$(curl -s -X POST "localhost:$ORDER_PORT/orders" -H 'Content-Type: application/json' \
  -d '{"customer_id":"bench","product_id":"p","quantity":1,"total_amount":1}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "== GET /orders/{id} (cached), 64 connections, $DURATION"
wrk -t2 -c64 -d"$DURATION" --latency "http://127.0.0.1:$ORDER_PORT/orders/$id" | grep -E "Requests/sec|Latency  |50%|99%|Non-2xx"

echo
echo "== GET /analytics/summary, 64 connections, $DURATION"
wrk -t2 -c64 -d"$DURATION" --latency "http://127.0.0.1:$ANALYTICS_PORT/analytics/summary" | grep -E "Requests/sec|Latency  |99%|Non-2xx"

echo
echo "RSS after load (order, analytics, notifications): $(rss)"
