"""Subnet stores: where nodes lease their subnets and learn each other's (flannel's layout).

base.py holds the interface and its errors, directory.py the embedded default store,
options.py the command-line flags that choose a store, command.py `dataplane leases`.
"""
