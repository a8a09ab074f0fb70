package console

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/testenv"
	"github.com/mamori-dev/mamori/web/webtest"
)

// hostile is a file name that runs script if a page parses it as HTML.
// The attack below copies busybox to /tmp/<hostile> in a container and
// runs it, so the kernel reports a process really named so.
const hostile = `<img src=x onerror=alert(1)>`

// artifacts is where the screenshots go (gitignored, kept by CI).
const artifacts = "../artifacts"

// row is the selector of a finding's row in the list.
func row(id string) string { return `#findings-body tr[data-id="` + id + `"]` }

// detailOf is true once the detail page of finding id is shown.
func detailOf(id string) string {
	return `(document.querySelector('#detail') || {dataset: {}}).dataset.id === '` + id + `' && !!document.querySelector('#lineage-tree')`
}

// TestConsole: log in, see findings of real attacks arrive live, open a
// detail and its lineage, archive and unarchive, suppress findings like
// one (and see a repeat stay suppressed), the hostile name inert, samples,
// and the local node's coverage.
func TestConsole(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequirePodman(t)
	testenv.EnsureImage(t)
	webtest.Chromium(t)
	m := launch(t, build(t, t.TempDir()))
	p := webtest.NewPage(t, artifacts, "console-", 5*time.Minute)

	// Login: a wrong token is refused, the admin token gets in.
	p.Navigate(m.url)
	p.Wait(`!!document.querySelector('#token')`)
	p.Shot("login")
	p.Type("#token", "mat1.000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	p.Click("#login-form button")
	p.Wait(`document.querySelector('#login-error').textContent.includes('did not accept')`)
	p.SetInput("#token", "")
	p.Type("#token", m.token)
	p.Click("#login-form button")
	p.Wait(`!!document.querySelector('#findings-body') && document.querySelector('#range') !== null`)
	if p.Text(`String(!!document.querySelector('#empty-state'))`) == "true" {
		if got := p.Text(`document.querySelector('#empty-state').textContent`); !strings.Contains(got, "mamori demo") {
			t.Errorf("empty state does not tell how to see a first finding: %q", got)
		}
		p.Shot("empty")
	}

	// Real attacks in a container, while the page is open: a credential
	// read, and a dropped binary whose name is hostile markup.
	ctr := testenv.StartContainer(t, nil, "sleep", "600")
	script := fmt.Sprintf(`cat /etc/shadow >/dev/null; cp /bin/busybox '/tmp/%[1]s' && '/tmp/%[1]s' true; true`, hostile)
	testenv.Exec(t, ctr, "sh", "-c", script)
	read := m.waitFinding(t, "CredentialAccess:Runtime/SensitiveFileRead", ctr)
	dropped := m.waitFinding(t, "Execution:Runtime/NewBinaryExecuted", ctr)
	if p := dropped.Service.RuntimeDetails.Process; p == nil || p.ExecutablePath != "/tmp/"+hostile {
		t.Fatalf("the dropped binary's finding does not carry the hostile name: %+v", p)
	}
	// Both appear without a reload (the list polls).
	p.Wait(`!!document.querySelector('` + row(read.ID) + `') && !!document.querySelector('` + row(dropped.ID) + `')`)
	if got := p.Text(`document.querySelector('` + row(dropped.ID) + ` td.res').textContent`); !strings.Contains(got, short(ctr)) &&
		!strings.Contains(got, "mamori-test") {
		t.Errorf("row does not name the container: %q", got)
	}
	p.Inert()
	p.Shot("findings")

	// Detail and lineage of the credential read: cat, started by the shell
	// podman exec ran.
	p.Click(row(read.ID) + ` a.type`)
	p.Wait(detailOf(read.ID))
	acting := p.Text(`document.querySelector('#lineage-tree li.acting').textContent`)
	if !strings.Contains(acting, "cat") || !strings.Contains(acting, "/etc/shadow") {
		t.Errorf("acting process in the lineage: %q", acting)
	}
	chain := p.Text(`[...document.querySelectorAll('#lineage-tree .pname')].map(e => e.textContent).join(' > ')`)
	if !strings.Contains(chain, "sh > cat") {
		t.Errorf("lineage %q lacks the shell that ran cat", chain)
	}
	if got := p.Text(`document.querySelector('#lineage-tree').textContent`); !strings.Contains(got, "uid 0") || !strings.Contains(got, "started") {
		t.Errorf("lineage lacks user or start time: %q", got)
	}
	for _, want := range []string{ctr, testenv.TestImage} {
		if got := p.Text(`document.querySelector('#resource').textContent`); !strings.Contains(got, want) {
			t.Errorf("resource section lacks %q: %q", want, got)
		}
	}
	if got := p.Text(`document.querySelector('#guide').textContent`); !strings.Contains(got, "What to do") || len(got) < 200 {
		t.Errorf("no guidance for the type: %q", got)
	}
	p.Shot("detail-lineage")

	// Archive, see it under Archived, unarchive.
	p.Click("#archive")
	p.Wait(`!!document.querySelector('#archived-tag')`)
	if !m.finding(t, read.ID).Service.Archived {
		t.Fatalf("archive did not archive")
	}
	p.Navigate(m.url + "/#/findings?archived=true")
	p.Wait(`!!document.querySelector('` + row(read.ID) + `')`)
	p.Shot("archived")
	p.Navigate(m.url + "/#/findings/" + read.ID)
	p.Wait(detailOf(read.ID) + ` && !!document.querySelector('#archived-tag')`)
	p.Click("#archive")
	p.Wait(`!document.querySelector('#archived-tag') && document.querySelector('#archive').textContent === 'Archive'`)
	if m.finding(t, read.ID).Service.Archived {
		t.Fatalf("unarchive did not unarchive")
	}

	// The hostile name renders as text, everywhere.
	p.Navigate(m.url + "/#/findings/" + dropped.ID)
	p.Wait(detailOf(dropped.ID))
	if got := p.Text(`document.querySelector('#lineage-tree li.acting .exe').textContent`); got != "/tmp/"+hostile {
		t.Errorf("hostile executable rendered as %q", got)
	}
	if got := p.Text(`document.querySelector('#process').textContent`); !strings.Contains(got, hostile[:15]) {
		t.Errorf("process section lacks the hostile name as text: %q", got)
	}
	p.Inert()
	p.Shot("hostile")

	// Suppress findings like this one: the rule is prefilled from the
	// finding and archives it; a repeat of the attack stays suppressed.
	p.Click("#suppress")
	p.Wait(`!!document.querySelector('#suppress-dialog[open]')`)
	p.Shot("suppress")
	p.Click("#rule-create")
	p.Wait(`!!document.querySelector('#archived-tag')`)
	var rules struct {
		Rules []struct {
			ID       string `json:"id"`
			Action   string `json:"action"`
			Criteria []struct {
				Field string `json:"field"`
				Op    string `json:"op"`
				Value any    `json:"value"`
			} `json:"criteria"`
		} `json:"rules"`
	}
	m.api(t, "GET", "/suppression-rules", nil, &rules)
	if len(rules.Rules) != 1 || rules.Rules[0].Action != "ARCHIVE" {
		t.Fatalf("rules after suppress: %+v", rules)
	}
	crit := fmt.Sprint(rules.Rules[0].Criteria)
	if !strings.Contains(crit, "Execution:Runtime/NewBinaryExecuted") || !strings.Contains(crit, "/tmp/"+hostile) {
		t.Errorf("rule criteria not taken from the finding: %s", crit)
	}
	if f := m.finding(t, dropped.ID); !f.Service.Archived || f.SuppressedBy != rules.Rules[0].ID {
		t.Errorf("finding not suppressed by the rule: archived=%v suppressedBy=%q", f.Service.Archived, f.SuppressedBy)
	}
	testenv.Exec(t, ctr, "sh", "-c", fmt.Sprintf(`'/tmp/%s' true; true`, hostile))
	p.Navigate(m.url + "/#/findings")
	p.Wait(`!!document.querySelector('#findings-body')`)
	time.Sleep(6 * time.Second) // the agent's update interval and a poll
	if p.Text(`String(!!document.querySelector('`+row(dropped.ID)+`'))`) != "false" {
		t.Errorf("a suppressed finding is listed among the active ones after a repeat")
	}
	if f := m.finding(t, dropped.ID); !f.Service.Archived {
		t.Errorf("the repeat unarchived a suppressed finding")
	}

	// Sample findings from the button.
	p.Click("#samples")
	p.Wait(`[...document.querySelectorAll('#findings-body .tag')].some(e => e.textContent === 'sample')`)
	p.Inert()
	p.Shot("samples")

	coverage(t, m, p)
}

// coverage checks the Coverage page with two nodes: this host's, Healthy,
// and a remote `mamori agent` enrolled by join token in cluster "edge",
// killed with SIGKILL: it turns Unhealthy with the reason, live on the page.
func coverage(t *testing.T, m *mamori, p *webtest.Page) {
	t.Helper()
	edge := startAgent(t, m, "edge")
	edgeNode, localNode := nodeID(t, edge.data), nodeID(t, m.data)
	p.Click(`nav a[data-view="coverage"]`)
	nodeRow := func(id string) string { return `document.querySelector('#coverage-body tr[data-node="` + id + `"]')` }
	p.Wait(`!!` + nodeRow(localNode) + ` && !!` + nodeRow(edgeNode))
	out, _ := exec.Command("uname", "-r").Output()
	kernel := strings.TrimSpace(string(out))
	local := p.Text(nodeRow(localNode) + `.textContent`)
	if !strings.Contains(local, "Healthy") || !strings.Contains(local, kernel) || !strings.Contains(local, "attached") {
		t.Errorf("coverage of this host: %q", local)
	}
	p.Shot("coverage-healthy")

	if err := edge.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Silence is judged after three heartbeat intervals (10 s each here);
	// the page polls, so the change shows without a reload.
	if err := webtest.WaitTrue(p.Ctx, nodeRow(edgeNode)+`.textContent.includes('Unhealthy')`, 60*time.Second); err != nil {
		p.Shot("failed")
		t.Fatal(err)
	}
	bad := p.Text(nodeRow(edgeNode) + `.textContent`)
	if !strings.Contains(bad, "not reporting since") || !strings.Contains(bad, "AGENT_NOT_REPORTING") ||
		!strings.Contains(bad, "Check that it runs") {
		t.Errorf("unhealthy node without its reason in plain words: %q", bad)
	}
	if got := p.Text(nodeRow(localNode) + `.textContent`); !strings.Contains(got, "Healthy") || strings.Contains(got, "Unhealthy") {
		t.Errorf("this host no longer healthy: %q", got)
	}
	stats := p.Text(`document.querySelector('#cluster-stats').textContent`)
	if !strings.Contains(stats, "edge0%") || !strings.Contains(stats, "local100%") {
		t.Errorf("per-cluster coverage: %q", stats)
	}
	p.Inert()
	p.Shot("coverage-unhealthy")
}

// nodeID is the node id an agent keeps in its data directory.
func nodeID(t *testing.T, data string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "node-id"))
	if err != nil {
		t.Fatalf("node id: %v", err)
	}
	return strings.TrimSpace(string(b))
}
