// Command guest is the init process of test/kernels' qemu guests: it mounts
// the kernel's filesystems, prints `mamori probe --json`, runs `mamori events`
// with a sensor of its own, waits until the sensor reports, performs the
// actions the test looks for, and powers the guest off. Every line of the
// event stream goes to the console prefixed "EVENT ", where the test reads it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		return // exec'd as a marker
	}
	defer func() {
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	if err := run(); err != nil {
		fmt.Println("GUEST-ERROR", err)
	}
	fmt.Println("GUEST-DONE")
}

func run() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"devtmpfs", "/dev", "devtmpfs"}, {"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"},
		{"tracefs", "/sys/kernel/tracing", "tracefs"}, {"bpf", "/sys/fs/bpf", "bpf"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"}, {"tmpfs", "/tmp", "tmpfs"}, {"tmpfs", "/data", "tmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	_ = os.MkdirAll("/etc", 0o755)
	if err := os.WriteFile("/etc/shadow", []byte("root:*:1::::::\n"), 0o600); err != nil {
		return err
	}
	// The probe loads every program once and says which failed and why;
	// the test reads its JSON line. A guest whose sensor cannot report an
	// exec stops here instead of waiting for one.
	probe, err := exec.Command("/mamori", "probe", "--json").Output()
	if err != nil {
		return fmt.Errorf("mamori probe: %w", err)
	}
	fmt.Println("PROBE " + strings.Join(strings.Fields(string(probe)), " "))
	var pr struct {
		Hooks []struct {
			Program  string `json:"program"`
			Attached bool   `json:"attached"`
		} `json:"hooks"`
	}
	if err := json.Unmarshal(probe, &pr); err != nil {
		return fmt.Errorf("mamori probe: %w", err)
	}
	if !slices.ContainsFunc(pr.Hooks, func(h struct {
		Program  string `json:"program"`
		Attached bool   `json:"attached"`
	}) bool {
		return h.Program == "on_exec" && h.Attached
	}) {
		return fmt.Errorf("the sensor did not attach its exec program")
	}
	cmd := exec.Command("/mamori", "events", "--standalone", "--json", "--data-dir", "/data",
		"--kind", "exec,open,connect,mount,capset,mprotect")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = prefixed("MAMORI ")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mamori: %w", err)
	}
	seen := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			fmt.Println("EVENT " + sc.Text())
			select {
			case seen <- sc.Text():
			default:
			}
		}
		close(seen)
	}()
	// The sensor reports once an exec of ours comes back through it.
	ready := false
	for deadline := time.Now().Add(8 * time.Minute); !ready && time.Now().Before(deadline); {
		_ = exec.Command("/init", "child", "ping").Run()
		timer := time.After(2 * time.Second)
	wait:
		for {
			select {
			case line, ok := <-seen:
				if !ok {
					return fmt.Errorf("mamori events stopped: %v", cmd.Wait())
				}
				if strings.Contains(line, `"ping"`) {
					ready = true
					break wait
				}
			case <-timer:
				break wait
			}
		}
	}
	if !ready {
		return fmt.Errorf("no event from the sensor")
	}
	fmt.Println("GUEST-ACTIONS")
	_ = exec.Command("/init", "child", "marker-arg").Run()
	if f, err := os.Open("/etc/shadow"); err == nil {
		f.Close()
	}
	// An open that makes a file, then one that finds it (FMODE_CREATED).
	for range 2 {
		if f, err := os.OpenFile("/etc/mamori-created", os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
			f.Close()
		}
	}
	// A failed mount: source and target are arguments 0 and 1.
	err = unix.Mount("guest-src", "/nonexistent-target", "tmpfs", 0, "")
	fmt.Println("GUEST mount:", err)
	if c, err := net.DialTimeout("tcp", "127.0.0.1:4444", time.Second); err == nil {
		c.Close()
	}
	if err := dropNetRaw(); err != nil {
		fmt.Println("GUEST capset:", err)
	}
	// Anonymous memory made executable, as a loader of shellcode does.
	if mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE); err != nil {
		fmt.Println("GUEST mmap:", err)
	} else if err := unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		fmt.Println("GUEST mprotect:", err)
	}
	time.Sleep(3 * time.Second)
	_ = cmd.Process.Signal(unix.SIGINT)
	for range seen {
	}
	return nil
}

// dropNetRaw removes CAP_NET_RAW from this process's effective set.
func dropNetRaw() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective &^= 1 << unix.CAP_NET_RAW
	return unix.Capset(&hdr, &data[0])
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

type prefixWriter struct{ prefix string }

func prefixed(p string) *prefixWriter { return &prefixWriter{p} }

func (w *prefixWriter) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Println(w.prefix + l)
	}
	return len(b), nil
}
