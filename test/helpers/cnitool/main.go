// cnitool as upstream ships it (containernetworking/cni/cnitool), against Debian's libcni
// (golang-github-appc-cni-dev): cnitool add|check|del <network name> <netns path>, with the same
// variables: NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS, CAP_ARGS (JSON of the capability args).
// Two additions for tests: CNI_CONTAINERID (upstream derives it from the netns path) and
// CNI_CACHE_DIR (upstream uses /var/lib/cni). A plugin error is printed as the CNI error JSON
// libcni parsed it into (code, msg, details), on stdout, exit status 1.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out, _ := json.Marshal(cniErr)
		fmt.Println(string(out))
	} else {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: cnitool add|check|del <network name> <netns path>")
		os.Exit(2)
	}
	command, name, netns := os.Args[1], os.Args[2], os.Args[3]
	list, err := libcni.LoadConfList(env("NETCONFPATH", "/etc/cni/net.d"), name)
	if err != nil {
		fail(err)
	}
	var capabilityArgs map[string]interface{}
	if caps := os.Getenv("CAP_ARGS"); caps != "" {
		if err := json.Unmarshal([]byte(caps), &capabilityArgs); err != nil {
			fail(fmt.Errorf("CAP_ARGS is not a JSON object: %w", err))
		}
	}
	var args [][2]string
	if cniArgs := os.Getenv("CNI_ARGS"); cniArgs != "" {
		for _, pair := range strings.Split(cniArgs, ";") {
			kv := strings.SplitN(pair, "=", 2)
			if len(kv) != 2 {
				fail(fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", pair))
			}
			args = append(args, [2]string{kv[0], kv[1]})
		}
	}
	netnsPath, err := filepath.Abs(netns)
	if err != nil {
		fail(err)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    env("CNI_CONTAINERID", fmt.Sprintf("cnitool-%x", sha512.Sum512([]byte(netnsPath)))[:28]),
		NetNS:          netnsPath,
		IfName:         env("CNI_IFNAME", "eth0"),
		Args:           args,
		CapabilityArgs: capabilityArgs,
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), env("CNI_CACHE_DIR", ""), nil)
	ctx := context.Background()
	switch command {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: use add, check or del\n", command)
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}
