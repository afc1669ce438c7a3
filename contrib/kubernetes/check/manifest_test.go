package check

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/supervisor"
)

// repoRoot is baton's repository.
const repoRoot = "../../.."

// graceMargin is what the grace period must leave after stop.delay and
// the drain: baton kills what is left, reaps it and exits, and the
// kubelet's clock is not baton's.
const graceMargin = 5 * time.Second

// manifest is app.yaml: its text and its objects, decoded.
type manifest struct {
	text       string
	configMap  *corev1.ConfigMap
	deployment *appsv1.Deployment
	service    *corev1.Service
	baton      *config.Config // the ConfigMap's baton.toml, validated
	count      int            // its worker.count before Validate's default
}

// load reads and decodes app.yaml, every object strictly with the API
// type of its apiVersion and kind: an unknown or misspelt field, a
// duplicate key or a value of the wrong type fails.
func load(t *testing.T) *manifest {
	t.Helper()
	b, err := os.ReadFile("../app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	m := &manifest{text: string(b)}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("app.yaml: %v", err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("app.yaml, object %d: %v", i, err)
		}
		obj, err := scheme.New(tm.GroupVersionKind())
		if err != nil {
			t.Fatalf("app.yaml, object %d: %v", i, err)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("app.yaml, object %d (%s %s): %v", i, tm.APIVersion, tm.Kind, err)
		}
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			m.configMap = o
		case *appsv1.Deployment:
			m.deployment = o
		case *corev1.Service:
			m.service = o
		default:
			t.Fatalf("app.yaml, object %d: a %s, which this test does not check", i, tm.Kind)
		}
	}
	if m.configMap == nil || m.deployment == nil || m.service == nil {
		t.Fatal("app.yaml: want a ConfigMap, a Deployment and a Service")
	}
	if len(m.deployment.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("app.yaml: want one container, baton's, got %d", len(m.deployment.Spec.Template.Spec.Containers))
	}
	cfg, err := config.Parse("baton.toml", []byte(m.configMap.Data["baton.toml"]))
	if err != nil {
		t.Fatalf("app.yaml: the ConfigMap's %v", err)
	}
	m.count = cfg.Worker.Count
	if err := cfg.Validate(); err != nil {
		t.Fatalf("app.yaml: the ConfigMap's %v", err)
	}
	m.baton = cfg
	return m
}

// container is the Deployment's one container, baton's.
func (m *manifest) container() *corev1.Container {
	return &m.deployment.Spec.Template.Spec.Containers[0]
}

// port resolves a probe's or the Service's port, a number or the name of
// a container port.
func (m *manifest) port(p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range m.container().Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

// The objects fit together: the Deployment's selector and the Service's
// select its pods, the Service's port and every listener's are the
// container's, and the pod mounts the ConfigMap.
func TestObjectsFitTogether(t *testing.T) {
	m := load(t)
	pod := m.deployment.Spec.Template
	sel, err := metav1.LabelSelectorAsMap(m.deployment.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]map[string]string{"the Deployment's selector": sel, "the Service's selector": m.service.Spec.Selector} {
		for k, v := range s {
			if pod.Labels[k] != v {
				t.Errorf("%s %s=%s does not select the pod (labels %v)", what, k, v, pod.Labels)
			}
		}
	}
	for _, p := range m.service.Spec.Ports {
		if m.port(p.TargetPort) == 0 {
			t.Errorf("the Service's port %s targets %s, which is not a container port", p.Name, p.TargetPort.String())
		}
	}
	ports := map[int]bool{}
	for _, cp := range m.container().Ports {
		ports[int(cp.ContainerPort)] = true
	}
	for _, l := range m.baton.Listen {
		if _, port, err := net.SplitHostPort(l.Addr); err != nil || !ports[atoi(port)] {
			t.Errorf("listener %s: not on a container port (%v)", l.Address, err)
		}
	}
	if m.configMapMount() == "" {
		t.Errorf("the pod does not mount ConfigMap %s", m.configMap.Name)
	}
}

// configMapMount returns where the container mounts the ConfigMap whole.
func (m *manifest) configMapMount() string {
	for _, v := range m.deployment.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != m.configMap.Name || len(v.ConfigMap.Items) > 0 {
			continue
		}
		for _, vm := range m.container().VolumeMounts {
			if vm.Name == v.Name && vm.SubPath == "" {
				return vm.MountPath
			}
		}
	}
	return ""
}

// The pod passes the Pod Security "restricted" profile, as the admission
// controller of the newest Kubernetes evaluates it, and its container
// sets every field of it explicitly, with a read-only root file system.
func TestPodSecurityRestricted(t *testing.T) {
	m := load(t)
	pod := m.deployment.Spec.Template
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	level := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, r := range ev.EvaluatePod(level, &pod.ObjectMeta, &pod.Spec) {
		if !r.Allowed {
			t.Errorf("Pod Security %s: %s: %s", level, r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
	ps := pod.Spec.SecurityContext
	if ps == nil {
		ps = &corev1.PodSecurityContext{}
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		if nonRoot := cmp(sc.RunAsNonRoot, ps.RunAsNonRoot); nonRoot == nil || !*nonRoot {
			t.Errorf("container %s: runAsNonRoot is not true", c.Name)
		}
		if uid := cmp(sc.RunAsUser, ps.RunAsUser); uid == nil || *uid == 0 {
			t.Errorf("container %s: no runAsUser other than 0 (a non-root image USER is not known here)", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: capabilities do not drop ALL", c.Name)
		} else if add := slices.DeleteFunc(slices.Clone(sc.Capabilities.Add), func(c corev1.Capability) bool { return c == "NET_BIND_SERVICE" }); len(add) > 0 {
			t.Errorf("container %s: adds capabilities %v; restricted allows NET_BIND_SERVICE alone", c.Name, add)
		}
		if sp := cmp(sc.SeccompProfile, ps.SeccompProfile); sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container %s: seccompProfile is not RuntimeDefault", c.Name)
		}
	}
}

// cmp returns the container's setting, else the pod's.
func cmp[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

// baton's runtime directory (its notify and control sockets) is writable
// on a read-only root file system: RUNTIME_DIRECTORY names a volume that
// is an emptyDir mounted read-write.
func TestRuntimeDirectoryWritable(t *testing.T) {
	m := load(t)
	var dir string
	for _, e := range m.container().Env {
		if e.Name == "RUNTIME_DIRECTORY" {
			dir = e.Value
		}
	}
	if dir == "" {
		t.Fatal("the container sets no RUNTIME_DIRECTORY: on a read-only root file system, baton (not root) would make its runtime directory in /tmp, which is read-only too")
	}
	for _, vm := range m.container().VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range m.deployment.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.EmptyDir != nil && !vm.ReadOnly {
				return
			}
		}
	}
	t.Errorf("RUNTIME_DIRECTORY=%s is not a read-write emptyDir mount", dir)
}

// The kubelet's SIGKILL comes after stop.delay and the drain, with room
// to spare; no preStop hook takes time out of the grace period.
func TestGracePeriodCoversStop(t *testing.T) {
	m := load(t)
	delay, drain := m.baton.Stop.Delay.Std(), m.baton.Worker.DrainTimeout.Std()
	if delay == 0 {
		t.Error("stop.delay is 0: connections that proxies send after SIGTERM, before they learn the pod is going, are refused")
	}
	g := m.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if g == nil {
		t.Fatal("no terminationGracePeriodSeconds: Kubernetes' 30 s default is not derived from baton's")
	}
	if grace := time.Duration(*g) * time.Second; grace < delay+drain+graceMargin {
		t.Errorf("terminationGracePeriodSeconds %d: want at least stop.delay %s + worker.drain_timeout %s + %s", *g, delay, drain, graceMargin)
	}
	if l := m.container().Lifecycle; l != nil && l.PreStop != nil {
		t.Error("a preStop hook: stop.delay is baton's, and the grace arithmetic leaves no time for a hook")
	}
}

// Both probes are baton's, on control.metrics' port, with every setting
// explicit; the liveness probe's timeout leaves /livez time to say what
// it found.
func TestProbes(t *testing.T) {
	m := load(t)
	_, port, err := net.SplitHostPort(m.baton.Control.Metrics)
	if err != nil {
		t.Fatalf("control.metrics %q: %v", m.baton.Control.Metrics, err)
	}
	c := m.container()
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{
		{"livenessProbe", "/livez", c.LivenessProbe},
		{"readinessProbe", "/readyz", c.ReadinessProbe},
	} {
		pr := p.probe
		switch {
		case pr == nil || pr.HTTPGet == nil:
			t.Errorf("%s: want GET %s", p.name, p.path)
			continue
		case pr.HTTPGet.Path != p.path || m.port(pr.HTTPGet.Port) != atoi(port):
			t.Errorf("%s: GET %s on port %s; want %s on control.metrics' port %s", p.name, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), p.path, port)
		}
		if pr.TimeoutSeconds == 0 || pr.PeriodSeconds == 0 || pr.FailureThreshold == 0 {
			t.Errorf("%s: timeoutSeconds %d, periodSeconds %d, failureThreshold %d: set each (0 is Kubernetes' default)", p.name, pr.TimeoutSeconds, pr.PeriodSeconds, pr.FailureThreshold)
		}
	}
	if lp := c.LivenessProbe; lp != nil && time.Duration(lp.TimeoutSeconds)*time.Second <= supervisor.LivezTimeout {
		t.Errorf("livenessProbe timeoutSeconds %d: want it above /livez's own %s", lp.TimeoutSeconds, supervisor.LivezTimeout)
	}
}

// The container has CPU and memory requests and limits, and baton's
// worker count is left to follow the CPU limit.
func TestResources(t *testing.T) {
	m := load(t)
	r := m.container().Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := r.Requests[name]
		lim, okLim := r.Limits[name]
		if !okReq || !okLim {
			t.Errorf("resources: %s wants a request and a limit", name)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("resources: %s request %s above its limit %s", name, req.String(), lim.String())
		}
	}
	if m.count != 0 {
		t.Errorf("worker.count = %d: leave it out, so that the workers follow the CPU limit", m.count)
	}
}

// The header's image instructions agree with the Deployment: the image's
// ENTRYPOINT is baton, which the container's args make `baton run
// --config FILE` with FILE in the mounted ConfigMap, and both baton and
// the worker's program are copied into the image.
func TestImageHeaderAgrees(t *testing.T) {
	m := load(t)
	copied := map[string]string{} // destination: source
	var entrypoint []string
	for _, line := range strings.Split(m.text, "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		instr, ok := strings.CutPrefix(line, "#   ")
		switch f := strings.Fields(instr); {
		case !ok || len(f) == 0:
		case f[0] == "COPY" && len(f) == 3:
			copied[f[2]] = f[1]
		case f[0] == "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimPrefix(instr, "ENTRYPOINT")), &entrypoint); err != nil {
				t.Fatalf("header: %s: %v", instr, err)
			}
		}
	}
	if len(entrypoint) == 0 {
		t.Fatal(`the header shows no ENTRYPOINT ["..."]`)
	}
	// What the container runs: its command, else the image's ENTRYPOINT;
	// then its args.
	c := m.container()
	argv := slices.Concat(c.Command, c.Args)
	if len(c.Command) == 0 {
		argv = slices.Concat(entrypoint, c.Args)
	}
	if path.Base(copied[argv[0]]) != "baton" {
		t.Fatalf("the container runs %s, which the header does not copy baton to (COPY: %v)", argv[0], copied)
	}
	file := ""
	if i := slices.Index(argv, "--config"); i > 0 && i+1 < len(argv) {
		file = argv[i+1]
	}
	if len(argv) < 2 || argv[1] != "run" || slices.Contains(argv[2:], "run") || file == "" {
		t.Fatalf("the container runs %q: want %s run --config FILE, no other run (ENTRYPOINT %q, args %q)", argv, argv[0], entrypoint, c.Args)
	}
	if dir := m.configMapMount(); path.Dir(file) != dir || m.configMap.Data[path.Base(file)] == "" {
		t.Errorf("--config %s is not a key of ConfigMap %s mounted at %s", file, m.configMap.Name, dir)
	}
	if cmd := m.baton.Worker.Command; len(cmd) == 0 || copied[cmd[0]] == "" {
		t.Errorf("worker.command %q: the header copies no program there (COPY: %v)", cmd, copied)
	}
}

// The ConfigMap's baton.toml passes `baton check`: the real binary, built
// from this repository unless $BATON names one.
func TestBatonCheck(t *testing.T) {
	m := load(t)
	dir := t.TempDir()
	baton := os.Getenv("BATON")
	if baton == "" {
		baton = filepath.Join(dir, "baton")
		build := exec.Command("go", "build", "-o", baton, "./cmd/baton")
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build baton: %v\n%s", err, out)
		}
	}
	file := filepath.Join(dir, "baton.toml")
	if err := os.WriteFile(file, []byte(m.configMap.Data["baton.toml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	// The worker command is the image's, not this machine's.
	out, err := exec.Command(baton, "check", "--no-command", "--config", file).CombinedOutput()
	if err != nil {
		t.Fatalf("baton check on the ConfigMap's baton.toml: %v\n%s", err, out)
	}
	t.Logf("baton check: %s", out)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
