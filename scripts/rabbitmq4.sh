#!/usr/bin/env bash
# RabbitMQ 4.x for the test suites, beside the machine's own broker: Debian 13's rabbitmq-server and
# Erlang in a debootstrap root outside the repository (built once, about a minute and 370 MB, then
# reused), run as a node of its own on its own AMQP and distribution ports.
#
#   scripts/rabbitmq4.sh ensure   build the root if missing, start the node if it does not answer
#   scripts/rabbitmq4.sh stop     stop the node
#   scripts/rabbitmq4.sh ctl ...  rabbitmqctl against the node
#
# A three-node cluster of the same broker, for the suites that need one (scale-out tests); it
# starts empty every time and shares nothing with the single node but the root:
#
#   scripts/rabbitmq4.sh cluster-start          three fresh nodes, clustered (AMQP 5681-5683)
#   scripts/rabbitmq4.sh cluster-stop           stop them and delete their data
#   scripts/rabbitmq4.sh node-stop|node-start N stop or start node N (1-3) of the cluster
#   scripts/rabbitmq4.sh node-ctl N ...         rabbitmqctl against node N
#
# The node serves its Prometheus metrics (rabbitmq_prometheus, as the chart's broker does) on
# 127.0.0.1:RABBITMQ4_PROMETHEUS_PORT.
#
# Settings (environment): RABBITMQ4_ROOT (/var/cache/orderflow/rabbitmq4), RABBITMQ4_PORT (5673),
# RABBITMQ4_DIST_PORT (25673), RABBITMQ4_NODE (orderflow4@localhost), RABBITMQ4_PROMETHEUS_PORT (15693);
# for the cluster, RABBITMQ4_CLUSTER_PORT (5680: node N listens on 5680+N, distribution on 25680+N).
set -euo pipefail

ROOT=${RABBITMQ4_ROOT:-/var/cache/orderflow/rabbitmq4}
PORT=${RABBITMQ4_PORT:-5673}
DIST_PORT=${RABBITMQ4_DIST_PORT:-25673}
NODE=${RABBITMQ4_NODE:-orderflow4@localhost}
PROMETHEUS_PORT=${RABBITMQ4_PROMETHEUS_PORT:-15693}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CLUSTER_PORT=${RABBITMQ4_CLUSTER_PORT:-5680}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Runs a command inside the root as the broker's user, with the node's settings.
in_root() {
  chroot --userspec=rabbitmq:rabbitmq "$ROOT" env -i HOME=/var/lib/rabbitmq PATH=/usr/sbin:/usr/bin:/bin \
    LANG=C.UTF-8 RABBITMQ_NODENAME="$NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$PORT" \
    RABBITMQ_DIST_PORT="$DIST_PORT" "$@"
}

build_root() {
  [ -e "$ROOT/.orderflow-ready" ] && return 0
  if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
  fi
  echo "building the RabbitMQ 4 root in $ROOT (Debian trixie, about a minute)"
  # A root without the mark is an interrupted build: start over.
  if [ -d "$ROOT" ]; then
    mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"
    rm -rf "$ROOT"
  fi
  rm -rf "$ROOT.partial"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase --include=rabbitmq-server trixie "$ROOT.partial" "$MIRROR" >/dev/null
  # The package's own service start does not happen in a chroot; nothing of it is left to clean.
  rm -rf "$ROOT.partial/var/lib/rabbitmq/mnesia/"* "$ROOT.partial/var/log/rabbitmq/"*
  touch "$ROOT.partial/.orderflow-ready"
  mv "$ROOT.partial" "$ROOT"
}

mount_proc() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
}

# The node's configuration: written before it starts, read when it starts.
configure() {
  local conf="$ROOT/etc/rabbitmq/rabbitmq.conf"
  local wanted
  wanted=$(printf 'prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = %s\n' "$PROMETHEUS_PORT")
  [ -e "$conf" ] && [ "$(cat "$conf")" = "$wanted" ] || printf '%s\n' "$wanted" > "$conf"
  echo '[rabbitmq_prometheus].' > "$ROOT/etc/rabbitmq/enabled_plugins"
  chmod 644 "$conf" "$ROOT/etc/rabbitmq/enabled_plugins"
}

start() {
  build_root
  configure
  if answers "$PORT"; then
    if answers "$PROMETHEUS_PORT"; then
      echo "RabbitMQ 4 is up on :$PORT"
      return 0
    fi
    # Started before it served metrics: once, restart it with its configuration.
    echo "restarting RabbitMQ 4 to serve its metrics on :$PROMETHEUS_PORT"
    in_root /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$NODE" stop
    for _ in $(seq 1 30); do answers "$PORT" || break; sleep 1; done
  fi
  mount_proc
  echo "starting RabbitMQ 4 ($NODE) on :$PORT"
  in_root /usr/lib/rabbitmq/bin/rabbitmq-server -detached
  for _ in $(seq 1 120); do
    if answers "$PORT" && in_root /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$NODE" await_startup >/dev/null 2>&1 \
      && answers "$PROMETHEUS_PORT"; then
      echo "RabbitMQ 4 is up on :$PORT ($(in_root /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$NODE" version)), metrics on :$PROMETHEUS_PORT"
      return 0
    fi
    sleep 1
  done
  echo "RabbitMQ 4 did not come up on :$PORT; logs in $ROOT/var/log/rabbitmq" >&2
  return 1
}

# --- the three-node cluster ------------------------------------------------------------------
cluster_node() { echo "orderflow4-c$1@localhost"; }

# Runs a command inside the root as node N of the cluster: its own name and ports, and a
# configuration of its own without the metrics plugin (whose port the single node holds).
in_cluster_node() {
  local n=$1
  shift
  chroot --userspec=rabbitmq:rabbitmq "$ROOT" env -i HOME=/var/lib/rabbitmq PATH=/usr/sbin:/usr/bin:/bin \
    LANG=C.UTF-8 RABBITMQ_NODENAME="$(cluster_node "$n")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$((CLUSTER_PORT + n)) RABBITMQ_DIST_PORT=$((CLUSTER_PORT + 20000 + n)) \
    RABBITMQ_CONFIG_FILE=/etc/rabbitmq/cluster-node.conf RABBITMQ_ENABLED_PLUGINS_FILE=/etc/rabbitmq/cluster-plugins \
    "$@"
}

node_ctl() { local n=$1; shift; in_cluster_node "$n" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$(cluster_node "$n")" "$@"; }

node_start() {
  node_launch "$1"
  node_await "$1"
}

node_launch() {
  mount_proc
  in_cluster_node "$1" /usr/lib/rabbitmq/bin/rabbitmq-server -detached
}

node_await() {
  local n=$1
  for _ in $(seq 1 120); do
    if answers $((CLUSTER_PORT + n)) && node_ctl "$n" -q await_startup >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "cluster node $n did not come up on :$((CLUSTER_PORT + n)); logs in $ROOT/var/log/rabbitmq" >&2
  return 1
}

node_stop() { node_ctl "$1" -q stop >/dev/null 2>&1 || true; }

node_wipe() {
  rm -rf "$ROOT/var/lib/rabbitmq/mnesia/$(cluster_node "$1")" "$ROOT/var/lib/rabbitmq/mnesia/$(cluster_node "$1")"-* \
    "$ROOT/var/log/rabbitmq/$(cluster_node "$1")"*
}

cluster_stop() {
  for n in 1 2 3; do node_stop "$n"; done
  [ -d "$ROOT" ] && for n in 1 2 3; do node_wipe "$n"; done
  return 0
}

cluster_start() {
  build_root
  : > "$ROOT/etc/rabbitmq/cluster-node.conf"
  echo '[].' > "$ROOT/etc/rabbitmq/cluster-plugins"
  chmod 644 "$ROOT/etc/rabbitmq/cluster-node.conf" "$ROOT/etc/rabbitmq/cluster-plugins"
  cluster_stop
  for n in 1 2 3; do node_launch "$n"; done
  for n in 1 2 3; do node_await "$n"; done
  for n in 2 3; do
    node_ctl "$n" -q stop_app
    node_ctl "$n" -q join_cluster "$(cluster_node 1)"
    node_ctl "$n" -q start_app
  done
  local running
  running=$(node_ctl 1 -q cluster_status --formatter json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
  if [ "$running" != 3 ]; then
    echo "the cluster has $running running nodes, not 3" >&2
    return 1
  fi
  echo "RabbitMQ 4 cluster is up: $(cluster_node 1), $(cluster_node 2), $(cluster_node 3) on :$((CLUSTER_PORT + 1))-$((CLUSTER_PORT + 3))"
}

case "${1:-ensure}" in
  ensure) start ;;
  stop) in_root /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$NODE" stop ;;
  ctl) shift; in_root /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "$@" ;;
  cluster-start) cluster_start ;;
  cluster-stop) cluster_stop ;;
  node-start) node_start "$2" ;;
  node-stop) node_stop "$2" ;;
  node-ctl) n=$2; shift 2; node_ctl "$n" "$@" ;;
  *) echo "usage: $0 ensure|stop|ctl ARGS...|cluster-start|cluster-stop|node-start N|node-stop N|node-ctl N ARGS..." >&2; exit 64 ;;
esac
