#!/bin/sh
# Open MPI launch agent (--mca plm_rsh_agent) for the namespace hosts of netns_cluster.sh: called
# like ssh, as `netns_agent.sh HOST COMMAND...`, it runs COMMAND with sh in network namespace
# HOST, in a UTS namespace whose host name is HOST (so each rank reports its own host).
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
