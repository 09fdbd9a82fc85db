#!/usr/bin/env bash
# Makes sure MariaDB, Redis and RabbitMQ answer on their usual loopback ports, starting any that
# does not (the tests run against these real servers), that the RabbitMQ 4 broker the chart
# deploys runs beside them on :5673 (scripts/rabbitmq4.sh), and that the Debian packages the tests
# use are installed. Safe to run when they are already up.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Debian packages the tests use: bubblewrap runs the services as their pods would (user,
# read-only root) in the chart contract tests; prometheus brings promtool for the alert rules;
# chromium opens the APIs' /docs pages headless, chromedriver (chromium-driver) drives it there.
install_package() { # command package
  command -v "$1" >/dev/null && return
  echo "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
}
install_package bwrap bubblewrap
install_package promtool prometheus
install_package chromium chromium
install_package chromedriver chromium-driver

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    if answers "$port"; then echo "$name is up on :$port"; return 0; fi
    sleep 1
  done
  echo "$name did not come up on :$port" >&2
  return 1
}

if ! answers 3306; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
if ! answers 6379; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! answers 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
fi

wait_for MariaDB 3306
wait_for Redis 6379
wait_for RabbitMQ 5672
# RabbitMQ opens its port before it accepts logins.
if command -v rabbitmqctl >/dev/null; then rabbitmqctl -q await_startup >/dev/null 2>&1 || true; fi
mariadb -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null
redis-cli -h 127.0.0.1 ping >/dev/null
"$(dirname "$0")/rabbitmq4.sh" ensure
