"""Subnet stores: where nodes lease their subnets and learn each other's (flannel's layout).

base.py holds the interface and its errors, directory.py the embedded default store, etcd.py
the cluster store (on etcd_client.py, a small client for etcd's JSON gateway; etcd_server.py
runs etcd for labs and tests), kube.py the Kubernetes API store of --kube-subnet-mgr (on
kube_client.py, a thin client over httpx, and kube_annotations.py, flannel's Node annotations),
options.py the command-line flags that choose a store,
command.py `dataplane leases`.
"""
