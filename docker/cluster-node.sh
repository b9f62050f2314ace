#!/usr/bin/env bash
# A node of a multi-container MPI job (docker/Dockerfile.cluster, docker/compose.yaml).
#
#   cluster-node sshd                      serve ssh on $CLUSTER_SSH_PORT (2222) as this user,
#                                          accepting the key $CLUSTER_KEYS/id_ed25519.pub
#   cluster-node launch LAUNCHER_ARGS...   make that key if missing, wait until the ssh ports of
#                                          $CLUSTER_PEERS (host names, space-separated) answer,
#                                          then deeptrain-launch with ssh as mpirun's agent
set -euo pipefail

keys=${CLUSTER_KEYS:-/ssh}
port=${CLUSTER_SSH_PORT:-2222}
die() { echo "cluster-node: error: $*" >&2; exit 2; }

[[ $# -ge 1 ]] || die "usage: cluster-node sshd | cluster-node launch LAUNCHER_ARGS..."
case "$1" in
  sshd)
    dir=$HOME/.sshd
    mkdir -p "$dir"
    [[ -f $dir/host_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    cat > "$dir/config" << CONF
Port $port
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $keys/id_ed25519.pub
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitUserEnvironment no
CONF
    exec /usr/sbin/sshd -D -e -f "$dir/config"
    ;;
  launch)
    shift
    [[ -w $keys ]] || die "$keys: not writable by $(id -un) (mount a volume there shared by every node)"
    [[ -f $keys/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$keys/id_ed25519"
    for peer in ${CLUSTER_PEERS:-}; do
      for ((i = 0; ; i++)); do
        (: < "/dev/tcp/$peer/$port") 2> /dev/null && break
        ((i < 300)) || die "node $peer: no ssh on port $port after 30 s"
        sleep 0.1
      done
    done
    exec deeptrain-launch --rsh-agent "ssh -i $keys/id_ed25519 -p $port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR" "$@"
    ;;
  *) exec "$@" ;;
esac
