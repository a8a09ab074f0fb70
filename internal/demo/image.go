// Package demo runs `mamori demo`: a throwaway container that performs a
// harmless set of real attack behaviours so a new user sees real findings
// within a minute. It also builds the small local image the demo and the
// tests use, from Debian's busybox-static, with no registry.
package demo

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Image is the local busybox image.
const Image = "localhost/mamori-test-busybox:latest"

// EnsureImage imports Image from the host's busybox when it is missing.
func EnsureImage() error {
	if exec.Command("podman", "image", "exists", Image).Run() == nil {
		return nil
	}
	bb := ""
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			bb = p
		}
	}
	if bb == "" {
		return fmt.Errorf("busybox not found (apt-get install busybox-static)")
	}
	dir, err := os.MkdirTemp("", "mamori-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"bin", "sbin", "etc", "tmp", "root", "proc", "sys", "dev", "usr/bin", "var/log", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(filepath.Join(dir, "bin/busybox"), "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			_ = os.Symlink("busybox", filepath.Join(dir, "bin", applet))
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
		"etc/shadow": "root:*:19000:0:99999:7:::\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	tarball := dir + ".tar"
	defer os.Remove(tarball)
	if out, err := exec.Command("tar", "-C", dir, "-cf", tarball, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("tar rootfs: %v: %s", err, out)
	}
	if out, err := exec.Command("podman", "import", tarball, Image).CombinedOutput(); err != nil {
		return fmt.Errorf("podman import: %v: %s", err, out)
	}
	return nil
}
