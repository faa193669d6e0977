package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// rootlessUser is docker:dind-rootless's user, which the runner pod's Rootless
// mode runs the daemon as (internal/runnerpod: rootlessUID).
const rootlessUser = 1000

// dindTree is dockerd, containerd, runc and iptables from Debian, plus what
// rootless mode needs (rootlesskit, slirp4netns, newuidmap, ip), a shell and the
// few tools the entrypoint and the pod's probes call (docker, chown, mount).
var dindTree = debianTree{
	name: "dind",
	packages: []string{
		"docker.io", "iptables", "dash", "coreutils", "grep", "util-linux", "mount",
		"rootlesskit", "slirp4netns", "uidmap", "iproute2",
	},
	drop: []string{
		"perl", "perl-base", "perl-modules-5.36", "libperl5.36", "libfile-find-rule-perl",
		"libnumber-compare-perl", "libtext-glob-perl", "usrmerge", "debconf", "adduser",
		"init-system-helpers", "sysvinit-utils", "lsb-base", "dpkg", "passwd",
		"libsemanage2", "libsemanage-common", "libsepol2", "libdb5.3", "libgdbm6", "libgdbm-compat4",
	},
	recipe: "dind-4",
	finish: finishDind,
}

// dindEntrypoint behaves like docker:dind's dockerd-entrypoint.sh for what
// the runner pod uses: `dockerd ARGS` (or flags alone, or nothing) starts the
// daemon; as root after the cgroup and mount setup of moby's hack/dind, as any
// other user rootless through dockerd-rootless.sh. Any other command runs as
// is (the rootless mode's init container runs chown).
const dindEntrypoint = `#!/bin/sh
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	# Like docker:dind without TLS, but on the socket only: nothing here
	# serves docker's TCP port.
	set -- dockerd --host=unix:///var/run/docker.sock "$@"
fi
if [ "$1" != dockerd ]; then
	exec "$@"
fi
shift
if [ -n "${DOCKER_TLS_CERTDIR:-}" ]; then
	echo "dockerd-entrypoint: DOCKER_TLS_CERTDIR=$DOCKER_TLS_CERTDIR ignored: this image serves the unix socket only" >&2
fi

# Pick the iptables backend the kernel has rules in (docker:dind does the same).
if ! iptables-legacy -nL >/dev/null 2>&1 && iptables-nft -nL >/dev/null 2>&1; then
	for t in iptables ip6tables; do
		for s in "" -save -restore; do ln -sf xtables-nft-multi /usr/sbin/$t$s 2>/dev/null || true; done
	done
fi

if [ "$(id -u)" != 0 ]; then
	export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"
	# The runtime may set HOME=/ for a user it finds no entry for.
	if [ -z "${HOME:-}" ] || [ ! -w "$HOME" ]; then export HOME=/home/rootless; fi
	mkdir -p "$XDG_RUNTIME_DIR"
	exec dockerd-rootless.sh "$@"
fi

# What moby's hack/dind does: securityfs for AppArmor-aware tools, shared
# mount propagation for the build containers' volumes, and on cgroup v2 a
# leaf cgroup for this process so that the controllers can be delegated.
if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
	mount -t securityfs none /sys/kernel/security || echo "dockerd-entrypoint: could not mount securityfs" >&2
fi
mount --make-rshared / 2>/dev/null || true
if [ ! -f /sys/fs/cgroup/cgroup.controllers ] && ! mountpoint -q /sys/fs/cgroup/devices 2>/dev/null; then
	# cgroup v1 with no hierarchy mounted (ctr run gives none): mount them as
	# cgroupfs-mount does; dockerd needs at least the devices controller.
	mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
	while read -r name _ _ enabled; do
		case "$name" in "#"*) continue ;; esac
		[ "$enabled" = 1 ] || continue
		mkdir -p "/sys/fs/cgroup/$name"
		mountpoint -q "/sys/fs/cgroup/$name" || mount -n -t cgroup -o "$name" cgroup "/sys/fs/cgroup/$name" || true
	done < /proc/cgroups
fi
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	mkdir -p /sys/fs/cgroup/init
	xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
	sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
fi
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
exec dockerd "$@"
`

// finishDind does what the maintainer scripts and docker:dind's Dockerfile
// would: users, subordinate ids, the iptables alternatives, the rootless
// script on PATH, the shared-library cache and the entrypoint.
func finishDind(root string) error {
	files := map[string]string{
		"etc/passwd": fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\nrootless:x:%d:%d:rootless:/home/rootless:/bin/sh\n", rootlessUser, rootlessUser),
		"etc/group":  fmt.Sprintf("root:x:0:\ndocker:x:2375:\nrootless:x:%d:\n", rootlessUser),
		"etc/subuid": "rootless:100000:65536\n",
		"etc/subgid": "rootless:100000:65536\n",
		// Lookups of localhost inside the daemon and its builds.
		"etc/hosts":                           "127.0.0.1 localhost\n::1 localhost\n",
		"etc/nsswitch.conf":                   "passwd: files\ngroup: files\nhosts: files dns\n",
		"usr/local/bin/dockerd-entrypoint.sh": dindEntrypoint,
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			return err
		}
	}
	links := map[string]string{
		"usr/local/bin/dockerd-rootless.sh": "/usr/share/docker.io/contrib/dockerd-rootless.sh",
		// Debian's dockerd runs docker-init from /usr/bin; /bin/sh is dash.
		"bin/sh": "dash",
	}
	for _, t := range []string{"iptables", "ip6tables"} {
		for _, s := range []string{"", "-save", "-restore"} {
			links["usr/sbin/"+t+s] = "xtables-legacy-multi"
		}
	}
	for name, target := range links {
		p := filepath.Join(root, name)
		_ = os.Remove(p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	for _, d := range []string{"home/rootless", "run/user", "var/lib/docker", "var/run", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777|os.ModeSticky); err != nil {
		return err
	}
	// uidmap's maintainer script gives these CAP_SETUID as file capabilities,
	// or the setuid bit where it cannot; rootlesskit needs them to map the
	// subordinate ids. The setuid bit survives a tar layer.
	for _, f := range []string{"usr/bin/newuidmap", "usr/bin/newgidmap"} {
		if err := os.Chmod(filepath.Join(root, f), 0o755|os.ModeSetuid); err != nil {
			return err
		}
	}
	// Some tools read the distribution from os-release; base-files is not unpacked.
	if err := os.WriteFile(filepath.Join(root, "usr/lib/os-release"), []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm), docker.io only\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n"), 0o644); err != nil {
		return err
	}
	if err := os.Symlink("../usr/lib/os-release", filepath.Join(root, "etc/os-release")); err != nil && !os.IsExist(err) {
		return err
	}
	// dpkg-deb does not run ldconfig; the cache spares the loader a search.
	if err := runCmd(context.Background(), "", os.Environ(), "ldconfig", "-r", root); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild: ldconfig -r failed, the image relies on the loader's default paths:", err)
	}
	return nil
}

// dindImage is docker-in-docker for the test node's runner pods.
func dindImage(ctx context.Context, b *build) (Image, error) {
	root, pkgs, err := dindTree.build(ctx, b)
	if err != nil {
		return Image{}, err
	}
	var version string
	for _, p := range pkgs {
		if p.name == "docker.io" {
			version = p.version
		}
	}
	return Image{
		Config: Config{
			Entrypoint: []string{"dockerd-entrypoint.sh"},
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"DOCKER_TLS_CERTDIR=",
			},
			Volumes: map[string]struct{}{"/var/lib/docker": {}},
			Labels:  b.labels("dind", "Docker-in-docker from Debian's docker.io "+version+", for runnerpool-operator's tests."),
		},
		Layers: []Layer{{
			Comment: "debian packages: " + strings.Join(dindTree.packages, " "),
			Entries: []Entry{
				Copy(root, "/"),
				// The rootless daemon writes its configuration under its home.
				{Path: "/home/rootless", Mode: fs.ModeDir | 0o755, UID: rootlessUser, GID: rootlessUser},
			},
			// Names the entries above: change the suffix when they change.
			CacheKey: "layer-" + filepath.Base(filepath.Dir(root)) + "-1",
		}},
	}, nil
}
