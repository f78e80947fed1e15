# nfhost nsd: read what it reconciles, write only status and the
# fleet-wide automatic DoS mitigations (dos/mitigations/).
# status/ is the layout before tenant-status/ and host-status/: nsd
# deletes what it wrote there, nothing writes it any more.
key_prefix "nfhost/tenants/" {
  policy = "read"
}
key_prefix "nfhost/dos/" {
  policy = "read"
}
key_prefix "nfhost/control/" {
  policy = "read"
}
key_prefix "nfhost/tenant-status/" {
  policy = "write"
}
key_prefix "nfhost/host-status/" {
  policy = "write"
}
key_prefix "nfhost/status/" {
  policy = "write"
}
key_prefix "nfhost/dos/mitigations/" {
  policy = "write"
}
