# Sourced by placement_overhead.sh and placement_instructions.sh: the
# config of the two gateways they compare, identical but for placement.
# 4 + 2, write quorum 5, six in-memory backends on six sites (no disk, so
# the gateway's own work is all there is to measure).
#
#   placement_pair_config DIR PLUGIN_LINE     writes DIR/config.toml
placement_pair_config() {
  mkdir -p "$1"
  {
    echo 'default_policy = "default"'
    echo '[policies.default]'
    echo 'k = 4'
    echo 'm = 2'
    echo 'write_quorum = 5'
    echo "$2"
    for i in 1 2 3 4 5 6; do
      printf '[[backends]]\nid = "mem-%s"\nkind = "memory"\nlabels = { site = "s%s" }\n' "$i" "$i"
    done
  } > "$1/config.toml"
}
