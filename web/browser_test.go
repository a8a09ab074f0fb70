package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/web/webtest"
)

// artifacts is where screenshots go (gitignored, kept by CI).
const artifacts = "../test/e2e/artifacts"

// hostile is a process name that runs script if a page parses it as HTML.
const hostile = `<img src=x onerror=alert(1)>`

type css = chromedp.CSS

// storeHostile stores a finding, as an agent would report it, whose every
// runtime string is hostile markup.
func storeHostile(t *testing.T, st store.Store) *finding.Finding {
	now := time.Now().UTC()
	ev := &event.Event{Time: now, Process: event.Process{PID: 4100, Comm: hostile[:15], Exe: "/tmp/" + hostile,
		Args: []string{"/tmp/" + hostile, "<script>alert(2)</script>"}, UUID: "hostile-uuid", Start: now, User: "<b>root</b>",
		Cwd: `"><svg onload=alert(3)>`,
		Lineage: []event.Ancestor{
			{PID: 4099, Name: "sh", Exe: "/bin/sh", Args: []string{"sh", "-c", "/tmp/" + hostile}, Start: now.Add(-time.Second)},
			{PID: 1, Name: "init", Exe: "/sbin/init", Args: []string{"/sbin/init"}, Start: now.Add(-time.Hour)},
		}},
		Container: &event.Container{ID: strings.Repeat("ab", 32), Name: "evil\u202etxt.exe", Runtime: "podman",
			Image: "localhost/<iframe src=javascript:alert(4)>",
			Pod:   &event.Pod{Name: "<a href=javascript:alert(5)>pod</a>", Namespace: "ns<u>"}}}
	f := finding.New("Execution:Runtime/NewBinaryExecuted", ev, finding.Agent{NodeID: "node-h", Hostname: "host<i>h</i>"}, "",
		map[string]any{"executablePath": "/tmp/" + hostile, "modifyingProcess": map[string]any{"name": hostile}, "upperLayer": true})
	res, err := st.UpsertFindings(context.Background(), []store.Upsert{{Finding: f, Reporter: "node-h", Epoch: "1", Cluster: "<b>c</b>"}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("store hostile finding: %v %v", err, res)
	}
	return f
}

// storeCustom stores a finding of a custom rule's own type.
func storeCustom(t *testing.T, st store.Store) *finding.Finding {
	now := time.Now().UTC()
	ev := &event.Event{Time: now, Process: event.Process{PID: 77, Comm: "touch", Exe: "/bin/touch", Args: []string{"touch", "/etc/marker"},
		UUID: "custom-uuid", Start: now}}
	f := finding.New("Custom:Runtime/MarkerFileTouched", ev, finding.Agent{NodeID: "node-c"}, "", map[string]any{"ruleId": "marker-rule"})
	f.Title, f.Description = "marker touched by touch", "The marker file was opened for writing."
	f.Service.Detector.Rule = "marker-rule"
	res, err := st.UpsertFindings(context.Background(), []store.Upsert{{Finding: f, Reporter: "node-c", Epoch: "1"}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("store custom finding: %v %v", err, res)
	}
	return f
}

// TestConsoleInBrowser drives the console in Chromium over the real API
// and store: login, samples, filters, paging, detail and lineage, hostile
// strings, archive, suppression.
func TestConsoleInBrowser(t *testing.T) {
	webtest.Chromium(t)
	c := newConsole(t, 0)
	b := webtest.NewPage(t, artifacts, "web-", 3*time.Minute)

	// Login: a wrong token is refused with a message, the right one gets in.
	b.Do(chromedp.Navigate(c.srv.URL), chromedp.WaitVisible(css("#token")))
	b.Shot("login")
	b.Do(chromedp.SendKeys(css("#token"), "mat1.000000000000.wrong"), chromedp.Click(css("#login-form button")))
	b.Wait(`document.querySelector('#login-error').textContent.includes('did not accept')`)
	b.SetInput("#token", "")
	b.Do(chromedp.SendKeys(css("#token"), c.token), chromedp.Click(css("#login-form button")))

	// The Content-Security-Policy holds in the browser: an inline script
	// put into the page does not run.
	if got := b.Text(`(() => { const e = document.createElement('script'); e.textContent = 'window.__inline = 1';
		document.body.append(e); e.remove(); return String(window.__inline); })()`); got != "undefined" {
		t.Errorf("an inline script ran despite the CSP: %s", got)
	}

	// Empty state, then samples from its button.
	b.Wait(`!!document.querySelector('#empty-state')`)
	if got := b.Text(`document.querySelector('#empty-state').textContent`); !strings.Contains(got, "mamori demo") {
		t.Errorf("empty state does not tell how to see a first finding: %q", got)
	}
	b.Shot("empty")
	b.Do(chromedp.Click(css("#samples-empty")))
	nSamples := len(finding.Catalogue)
	b.Wait(fmt.Sprintf(`document.querySelectorAll('#findings-body tr').length === %d`, nSamples))
	if got := b.Text(`document.querySelector('#range').textContent`); got != fmt.Sprintf("1–%d of %d", nSamples, nSamples) {
		t.Errorf("range %q", got)
	}

	// Live update: a finding stored behind the page's back shows up
	// without a reload.
	f := storeHostile(t, c.store)
	b.Wait(`!!document.querySelector('tr[data-id="` + f.ID + `"]')`)
	b.Shot("findings")

	// Filters: type narrows to that type; the status filter shows archived ones.
	b.Do(chromedp.SendKeys(css("#f-type"), "Execution:Runtime/NewBinaryExecuted"))
	b.Wait(`document.querySelectorAll('#findings-body tr').length === 2`)
	b.SetInput("#f-type", "")
	b.Wait(fmt.Sprintf(`document.querySelectorAll('#findings-body tr').length === %d`, nSamples+1))
	b.SetInput("#f-severity", "Low")
	b.Wait(`document.querySelectorAll('#findings-body tr').length > 0 && [...document.querySelectorAll('#findings-body .sev')].every(e => e.textContent === 'Low')`)
	b.SetInput("#f-severity", "")
	b.Wait(fmt.Sprintf(`document.querySelectorAll('#findings-body tr').length === %d`, nSamples+1))

	// Detail of the hostile finding: lineage tree, every string as text.
	b.Do(chromedp.Click(css(`tr[data-id="` + f.ID + `"] a.type`)))
	b.Wait(`!!document.querySelector('#lineage-tree')`)
	names := b.Text(`[...document.querySelectorAll('#lineage-tree .pname')].map(e => e.textContent).join('|')`)
	if names != "init|sh|"+hostile[:15] {
		t.Errorf("lineage names %q", names)
	}
	if got := b.Text(`document.querySelector('#lineage-tree li.acting .exe').textContent`); got != "/tmp/"+hostile {
		t.Errorf("acting exe rendered as %q", got)
	}
	if got := b.Text(`document.querySelector('#raw pre').textContent`); !strings.Contains(got, hostile) {
		t.Errorf("raw JSON lacks the hostile name")
	}
	b.Inert()
	b.Shot("detail-hostile")

	// Archive and unarchive.
	b.Do(chromedp.Click(css("#archive")))
	b.Wait(`!!document.querySelector('#archived-tag')`)
	if !archived(t, c, f.ID) {
		t.Errorf("archive button did not archive")
	}
	b.Do(chromedp.Click(css("#archive")))
	b.Wait(`!document.querySelector('#archived-tag')`)
	if archived(t, c, f.ID) {
		t.Errorf("unarchive button did not unarchive")
	}

	// Suppress findings like this: the rule is prefilled from the finding
	// and archives it.
	b.Do(chromedp.Click(css("#suppress")))
	b.Wait(`!!document.querySelector('#suppress-dialog[open]')`)
	b.Shot("suppress")
	b.Do(chromedp.Click(css("#rule-create")))
	b.Wait(`!!document.querySelector('#archived-tag')`)
	rules, err := c.store.ListRules(context.Background())
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules %v %v", rules, err)
	}
	r := rules[0]
	if r.Action != store.ActionArchive || !slices.ContainsFunc(r.Criteria, func(c store.Criterion) bool {
		return c.Field == "type" && c.Op == store.OpEq && c.Value == f.Type
	}) || !slices.ContainsFunc(r.Criteria, func(c store.Criterion) bool {
		return c.Field == "service.runtimeDetails.process.executablePath" && c.Value == "/tmp/"+hostile
	}) {
		t.Errorf("rule not prefilled from the finding: %+v", r)
	}
	if rec, _ := c.store.GetFinding(context.Background(), f.ID); rec == nil || rec.SuppressedBy != r.ID {
		t.Errorf("finding not suppressed by the new rule: %+v", rec)
	}
	b.Inert()

	// The rule is listed under Suppression rules, and can be deleted.
	b.Click(`nav a[data-view="rules"]`)
	b.Wait(`!!document.querySelector('#rules-body tr[data-id="` + r.ID + `"]')`)
	if got := b.Text(`document.querySelector('#rules-body').textContent`); !strings.Contains(got, "/tmp/"+hostile) {
		t.Errorf("rule criteria not shown as text: %q", got)
	}
	b.Inert()
	b.Shot("rules")
	b.Click(`#rules-body tr[data-id="` + r.ID + `"] button.delete`)
	b.Click(`#rules-body tr[data-id="` + r.ID + `"] button.delete`)
	b.Wait(`!!document.querySelector('#rules-empty')`)
	if rules, _ := c.store.ListRules(context.Background()); len(rules) != 0 {
		t.Errorf("rule not deleted: %+v", rules)
	}

	// Threat-intel evidence and type-specific context of a sample.
	var intel string
	page, err := c.store.ListFindings(context.Background(), store.Query{Limit: 100,
		Criteria: []store.Criterion{{Field: "type", Op: store.OpEq, Value: "Backdoor:Runtime/C&CActivity.B!DNS"}}})
	if err != nil || len(page.Findings) != 1 {
		t.Fatalf("sample intel finding: %v %v", page, err)
	}
	intel = page.Findings[0].ID
	b.Navigate(c.srv.URL + "/#/findings/" + intel)
	b.Wait(`(document.querySelector('#detail') || {dataset: {}}).dataset.id === '` + intel + `'`)
	if got := b.Text(`document.querySelector('#evidence').textContent`); !strings.Contains(got, "mamori-sample-list") ||
		!strings.Contains(got, "guarddutyc2activityb.com") {
		t.Errorf("evidence section: %q", got)
	}
	if got := b.Text(`document.querySelector('#context').textContent`); !strings.Contains(got, "c2.guarddutyc2activityb.com") {
		t.Errorf("context section lacks the queried domain: %q", got)
	}
	b.Shot("detail-intel")

	// A custom rule's type, unknown to the catalogue, gets generic guidance
	// and names its rule.
	custom := storeCustom(t, c.store)
	b.Navigate(c.srv.URL + "/#/findings/" + custom.ID)
	b.Wait(`(document.querySelector('#detail') || {dataset: {}}).dataset.id === '` + custom.ID + `'`)
	if got := b.Text(`document.querySelector('#guide').textContent`); !strings.Contains(got, "custom rule") {
		t.Errorf("custom type guidance: %q", got)
	}
	if got := b.Text(`document.querySelector('#detector').textContent`); !strings.Contains(got, "marker-rule") {
		t.Errorf("detector section does not name the rule: %q", got)
	}

	// Paging: past 50 findings, Next and Previous walk the pages.
	seed(t, c.store, 60)
	b.Do(chromedp.Navigate(c.srv.URL + "/#/findings?archived="))
	b.Wait(`document.querySelectorAll('#findings-body tr').length === 50`)
	b.Do(chromedp.Click(css("#next")))
	b.Wait(`document.querySelector('#range').textContent.startsWith('51–')`)
	b.Do(chromedp.Click(css("#prev")))
	b.Wait(`document.querySelector('#range').textContent.startsWith('1–50')`)

	// Coverage: a healthy node and one whose hook failed, judged by the
	// coverage monitor from their heartbeats.
	heartbeats(t, c.store)
	b.Do(chromedp.Click(css(`nav a[data-view="coverage"]`)))
	b.Wait(`document.querySelectorAll('#coverage-body tr').length === 2`)
	row := func(node string) string {
		return b.Text(`document.querySelector('#coverage-body tr[data-node="` + node + `"]').textContent`)
	}
	if got := row("node-ok"); !strings.Contains(got, "Healthy") || !strings.Contains(got, "5.15.0-91-generic") || !strings.Contains(got, "2/3 attached") ||
		!strings.Contains(got, "BPF objects for older kernels") {
		t.Errorf("healthy node row (a 5.15 node on the compat objects): %q", got)
	}
	got := row("node-bad")
	if strings.Contains(got, "older kernels") {
		t.Errorf("a node on the default objects is said to run the compat ones: %q", got)
	}
	if !strings.Contains(got, "Unhealthy") || !strings.Contains(got, "tracepoint/syscalls/sys_enter_mount") ||
		!strings.Contains(got, "Part of the sensor is missing") {
		t.Errorf("unhealthy node row lacks its reason in plain words: %q", got)
	}
	if pct := b.Text(`document.querySelector('#cluster-stats .pct').textContent`); pct != "50%" {
		t.Errorf("cluster coverage %q, want 50%%", pct)
	}
	b.Shot("coverage")

	// The server cannot take agent messages (its disk is low): every view
	// says so, and stops saying so once it can.
	b.Wait(`document.querySelector('#server-health').hidden`)
	problems := []string{"agent intake paused since 2026-03-01T12:00:00Z: " + hostile}
	c.problems.Store(&problems)
	b.Wait(`!document.querySelector('#server-health').hidden`)
	if got := b.Text(`document.querySelector('#server-health').textContent`); !strings.Contains(got, "late, not lost") ||
		!strings.Contains(got, "agent intake paused since 2026-03-01T12:00:00Z: "+hostile) {
		t.Errorf("server health banner: %q", got)
	}
	b.Shot("server-degraded")
	b.Inert()
	c.problems.Store(nil)
	b.Wait(`document.querySelector('#server-health').hidden`)
	b.Inert()
}

// heartbeats feeds the coverage monitor one healthy node and one with a
// required hook that failed to attach, in cluster "prod".
func heartbeats(t *testing.T, st store.Store) {
	t.Helper()
	m, err := coverage.New(coverage.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, hb := range []*coverage.Heartbeat{
		{NodeID: "node-ok", Hostname: "worker-1", Cluster: "prod", AgentVersion: "0.1.0", Kernel: "5.15.0-91-generic", BTF: true,
			BPFObjects: "compat: kernel lacks bpf_loop (Linux 5.17+)",
			Time:       now, Started: now.Add(-time.Hour), IntervalSeconds: 30, LastEvent: now,
			Hooks: []coverage.Hook{{Program: "exec", Family: "process", Hook: "tp_btf/sched_process_exec", Attached: true},
				{Program: "connect", Family: "net", Hook: "cgroup/connect4", Attached: true},
				{Program: "lsm", Family: "lsm", Hook: "lsm/file_open", Optional: true, Error: "operation not permitted"}},
			Drops: map[string]uint64{"kernel": 0, "queue": 0}},
		{NodeID: "node-bad", Hostname: "worker-2", Cluster: "prod", AgentVersion: "0.1.0", Kernel: "6.18.0", BTF: true, BPFObjects: "default",
			Time: now, Started: now.Add(-time.Hour), IntervalSeconds: 30, LastEvent: now,
			Hooks: []coverage.Hook{{Program: "exec", Family: "process", Hook: "tp_btf/sched_process_exec", Attached: true},
				{Program: "mount", Family: "file", Hook: "tracepoint/syscalls/sys_enter_mount", Error: "permission denied"}}},
	} {
		if _, err := m.Observe(context.Background(), hb, now); err != nil {
			t.Fatal(err)
		}
	}
}

func archived(t *testing.T, c *console, id string) bool {
	t.Helper()
	cl := c.client(t)
	var rec struct {
		Service struct {
			Archived bool `json:"archived"`
		} `json:"service"`
	}
	if err := json.Unmarshal(c.get(t, cl, "/console/api/v1/findings/"+id), &rec); err != nil {
		t.Fatal(err)
	}
	return rec.Service.Archived
}
