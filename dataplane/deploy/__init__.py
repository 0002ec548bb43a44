"""Deployment artefacts shipped in the package: the systemd unit (dataplane.service), the
Containerfile of the DaemonSet's image, and the YAML writer `dataplane manifest` prints with."""
