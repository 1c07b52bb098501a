# LAN discovery tests (crates/ferry-cli/tests/discovery.rs) build a private LAN of network
# namespaces with `ip` and `bridge` from iproute2; they need root (or CAP_SYS_ADMIN +
# CAP_NET_ADMIN) and fail with a message saying so where namespaces cannot be created.
apt_need iproute2
