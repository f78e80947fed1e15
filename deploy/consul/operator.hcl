# nfhost operator: everything under the prefix, and the ACL
# system (nsctl acl init, nsctl tenant token).
key_prefix "nfhost/" {
  policy = "write"
}
acl = "write"
