#!/bin/sh
# A cluster of "hosts" on one machine, for multi-node MPI tests (root only): N network
# namespaces PREFIX-h1..PREFIX-hN, each with one interface (eth0, 10.R.S.i/24), joined by a
# bridge that lives in its own namespace PREFIX-br over veth pairs. Optionally every host's
# link is limited to RATE (tc tbf, both directions); tc netem is not in this kernel. TCP gives
# up on an unanswered connection after a few seconds (net.ipv4.tcp_retries2=4 per namespace).
# mpirun reaches the hosts through a launch agent (netns_agent.sh) that runs the remote command
# in the namespace named like the host, with that name as its host name (its own UTS namespace).
#
#   netns_cluster.sh up PREFIX N [SUBNET_BASE] [RATE]   e.g. up dt42 3 10.213.7 1gbit
#   netns_cluster.sh mpirun PREFIX N [SUBNET_BASE] -- MPIRUN_ARGS...
#       runs mpirun inside PREFIX-h1 with -np N --host PREFIX-h1,...,PREFIX-hN and the MCA
#       settings the namespaces need (launch agent, no tree spawn, TCP only, on the subnet),
#       plus TCP keepalives on mpirun's own links to its daemons so that a cut link ends the
#       job in seconds (by default Open MPI notices a silent daemon after 300 + 9 x 20 s)
#   netns_cluster.sh down PREFIX
#
# Exit status: 0 ok, 1 a command failed, 2 usage, 3 not root or no namespace support.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 prefix=$2
shift 2

need_root() {
  if [ "$(id -u)" != 0 ]; then echo "netns_cluster.sh: needs root" >&2; exit 3; fi
  command -v ip > /dev/null || { echo "netns_cluster.sh: needs iproute2 (ip)" >&2; exit 3; }
}

case "$cmd" in
up)
  need_root
  n=${1:?N}; base=${2:-10.213.0}; rate=${3:-}
  br="$prefix-br"
  ip netns add "$br" || exit 3
  ip netns exec "$br" ip link set lo up
  ip netns exec "$br" ip link add br0 type bridge
  ip netns exec "$br" ip link set br0 up
  i=1
  while [ "$i" -le "$n" ]; do
    h="$prefix-h$i"
    a="${prefix}a$i" b="${prefix}b$i"   # temporary names, <= 15 characters
    ip netns add "$h"
    ip link add "$a" type veth peer name "$b"
    ip link set "$a" netns "$h"
    ip link set "$b" netns "$br"
    ip netns exec "$h" ip link set "$a" name eth0
    ip netns exec "$h" ip addr add "$base.$i/24" dev eth0
    ip netns exec "$h" ip link set eth0 up
    ip netns exec "$h" ip link set lo up
    # Give up on an unanswered TCP connection after ~6 s instead of ~15 min (the default 15
    # retries), as clusters tune it: with a cut link, mpirun's daemons then notice in seconds.
    ip netns exec "$h" sysctl -qw net.ipv4.tcp_retries2=4 || true
    ip netns exec "$br" ip link set "$b" master br0
    ip netns exec "$br" ip link set "$b" up
    if [ -n "$rate" ]; then
      # Egress of the host, and egress of the bridge port towards it (= the host's ingress).
      ip netns exec "$h" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
      ip netns exec "$br" tc qdisc add dev "$b" root tbf rate "$rate" burst 256kb latency 50ms
    fi
    i=$((i + 1))
  done
  ;;
down)
  need_root
  for ns in $(ip netns list | awk '{print $1}'); do
    case "$ns" in
      "$prefix"-h*|"$prefix"-br)
        # Whatever still runs there (a daemon of a job that was cut off) goes first.
        for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2> /dev/null || true; done
        ip netns del "$ns" ;;
    esac
  done
  ;;
mpirun)
  need_root
  n=${1:?N}; shift
  base=10.213.0
  if [ $# -gt 0 ] && [ "$1" != "--" ]; then base=$1; shift; fi
  [ "${1:-}" = "--" ] && shift
  hosts=""
  i=1
  while [ "$i" -le "$n" ]; do hosts="$hosts${hosts:+,}$prefix-h$i"; i=$((i + 1)); done
  # Each MCA parameter once only: Open MPI treats a repeated one as a fatal error.
  exec ip netns exec "$prefix-h1" mpirun --allow-run-as-root -np "$n" --host "$hosts" \
    --mca plm_rsh_agent "$here/netns_agent.sh" --mca plm_rsh_no_tree_spawn 1 \
    --mca oob_tcp_if_include "$base.0/24" --mca btl tcp,self \
    --mca btl_tcp_if_include "$base.0/24" \
    --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1 \
    --mca oob_tcp_keepalive_probes 3 "$@"
  ;;
*) usage ;;
esac
