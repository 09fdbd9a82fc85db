#!/usr/bin/env bash
# RabbitMQ 4.x for the test suites, beside the machine's own broker: Debian 13's rabbitmq-server and
# Erlang in a debootstrap root outside the repository (built once, about a minute and 370 MB, then
# reused), run as a node of its own on its own AMQP and distribution ports.
#
#   scripts/rabbitmq4.sh ensure   build the root if missing, start the node if it does not answer
#   scripts/rabbitmq4.sh stop     stop the node
#   scripts/rabbitmq4.sh ctl ...  rabbitmqctl against the node
#
# The node serves its Prometheus metrics (rabbitmq_prometheus, as the chart's broker does) on
# 127.0.0.1:RABBITMQ4_PROMETHEUS_PORT.
#
# Settings (environment): RABBITMQ4_ROOT (/var/cache/orderflow/rabbitmq4), RABBITMQ4_PORT (5673),
# RABBITMQ4_DIST_PORT (25673), RABBITMQ4_NODE (orderflow4@localhost), RABBITMQ4_PROMETHEUS_PORT (15693).
set -euo pipefail

ROOT=${RABBITMQ4_ROOT:-/var/cache/orderflow/rabbitmq4}
PORT=${RABBITMQ4_PORT:-5673}
DIST_PORT=${RABBITMQ4_DIST_PORT:-25673}
NODE=${RABBITMQ4_NODE:-orderflow4@localhost}
PROMETHEUS_PORT=${RABBITMQ4_PROMETHEUS_PORT:-15693}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

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

case "${1:-ensure}" in
  ensure) start ;;
  stop) in_root /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$NODE" stop ;;
  ctl) shift; in_root /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "$@" ;;
  *) echo "usage: $0 ensure|stop|ctl ARGS..." >&2; exit 64 ;;
esac
