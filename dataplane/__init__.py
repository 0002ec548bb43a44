"""dataplane: a userspace overlay dataplane for pod networks.

flannel's `udp` backend and kernel-compatible VXLAN, driven by asyncio with a C hot path.
"""

__version__ = "0.1.0"
