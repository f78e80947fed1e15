# nfhost nsd: read what it reconciles, write only status and what it
# publishes. A leaked nsd token cannot change any tenant's config.
key_prefix "nfhost/tenants/" {
  policy = "read"
}
key_prefix "nfhost/dos/" {
  policy = "read"
}
key_prefix "nfhost/control/" {
  policy = "read"
}
# The operator's shared lists that tenants' rules refer to.
key_prefix "nfhost/lists/" {
  policy = "read"
}
# Its status, per tenant and per host.
key_prefix "nfhost/tenant-status/" {
  policy = "write"
}
key_prefix "nfhost/host-status/" {
  policy = "write"
}
# Its acknowledgement (nsd --status-writes ack): up to which index it
# processed every tenant write.
key_prefix "nfhost/acks/" {
  policy = "write"
}
# status/ is the layout before tenant-status/ and host-status/: nsd
# deletes what it wrote there, nothing writes it any more.
key_prefix "nfhost/status/" {
  policy = "write"
}
# The fleet-wide automatic DoS mitigations it derives (dos/fleet).
key_prefix "nfhost/dos/mitigations/" {
  policy = "write"
}
# The nsctl dos top summaries it publishes while an operator watches.
key_prefix "nfhost/top/" {
  policy = "write"
}
# The fleet's index (the journal and digest the elected nsd keeps, so that
# a change costs each server one tenant's keys) and the session of the
# lock that elects it.
key_prefix "nfhost/index/" {
  policy = "write"
}
session_prefix "" {
  policy = "write"
}
