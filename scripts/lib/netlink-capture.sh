# Shared by scripts/capture-iproute2.sh and scripts/capture-tc.sh (sourced): pull a netlink message
# out of an strace log and write it as a fixture under test/fixtures/iproute2/.

# hex of the last sendmsg/sendto payload whose nlmsg_type is $2, from strace log $1
extract_hex() {
  awk -v want="$2" '
    /(sendmsg|sendto)\(/ { if (cur != "") msgs[n++] = cur; cur = ""; insend = 1; next }
    /^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  / && insend {
      cur = cur substr($0, 11, 48); next }
    /^ \* [0-9]+ bytes in buffer/ { next }
    { if (cur != "") { msgs[n++] = cur; cur = "" } insend = 0 }
    END {
      if (cur != "") msgs[n++] = cur
      best = ""
      for (i = 0; i < n; i++) {
        h = msgs[i]; gsub(/[^0-9a-f]/, "", h)
        t = substr(h, 11, 2) substr(h, 9, 2)
        if (t == want) best = h
      }
      print best
    }' "$1"
}

# write_fixture FILE NAME COMMAND HEX INPUTS_JSON VERSION EXIT STDERR NOTE
write_fixture() {
  jq -n --arg name "$2" --arg cmd "$3" --arg hex "$4" --argjson inputs "$5" \
    --arg iproute2 "$6" --argjson exit "$7" --arg stderr "$8" --arg note "$9" \
    '{name:$name, command:$cmd, iproute2:$iproute2, inputs:$inputs, hex:$hex, exit:$exit}
     + (if $stderr != "" then {stderr:$stderr} else {} end)
     + (if $note != "" then {note:$note} else {} end)' >"$1"
}
