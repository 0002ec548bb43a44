#!/bin/sh
# An example dataplane for `dataplane bench --dataplane cmd:PATH`: a kernel VXLAN device per
# node, peers fixed (no learning, no ARP), the peer's pod subnet routed through it. Copy it
# and replace the `up` and `down` bodies with what brings up your own tunnel.
#
#   PATH overhead                       print the bytes each pod packet gains (here 50:
#                                       outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14)
#   PATH up|down NODE LOCAL PEER LSUB PSUB
#                                       run in node NODE's (1 or 2) network namespace;
#                                       LOCAL/PEER: underlay IPv4s, LSUB/PSUB: pod subnets
# Environment: DATAPLANE_TUNNEL_DIR, DATAPLANE_UNDERLAY_DEV, DATAPLANE_UNDERLAY_MTU,
# DATAPLANE_TUNNEL_TAG (see `dataplane bench --help`).
set -eu

OVERHEAD=50
DEV=vxbench0

usage() {
    echo "usage: $0 overhead | {up|down} NODE LOCAL_IP PEER_IP LOCAL_SUBNET PEER_SUBNET" >&2
    exit 2
}

[ $# -ge 1 ] || usage
action=$1
if [ "$action" = overhead ]; then
    echo "$OVERHEAD"
    exit 0
fi
[ $# -eq 6 ] || usage
node=$2 local=$3 peer=$4 lsub=$5 psub=$6
case "$node" in 1) other=2 ;; 2) other=1 ;; *) echo "NODE must be 1 or 2, not $node" >&2; exit 2 ;; esac
gw=${lsub%/*}           # <subnet>.0 on the device, as flannel puts it on flannel.1
peer_gw=${psub%/*}

case "$action" in
up)
    ip link add "$DEV" address "02:00:00:00:00:0$node" type vxlan id 1 local "$local" \
        remote "$peer" dstport 4789 nolearning dev "${DATAPLANE_UNDERLAY_DEV:-eth0}"
    ip link set "$DEV" mtu $(( ${DATAPLANE_UNDERLAY_MTU:-1500} - OVERHEAD )) up
    ip addr add "$gw/32" dev "$DEV"
    # The peer's gateway by a permanent neighbour entry, then its subnet through it.
    ip neigh replace "$peer_gw" lladdr "02:00:00:00:00:0$other" dev "$DEV" nud permanent
    ip route replace "$psub" via "$peer_gw" dev "$DEV" onlink src "$gw"
    ;;
down)
    ip link del "$DEV" 2>/dev/null || true
    ;;
*)
    usage
    ;;
esac
