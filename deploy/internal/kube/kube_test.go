package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// good is a small valid set: a portbridge Deployment, its ConfigMap and Service.
const good = `# leading comment-only document
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {config.yaml: "server: {}"}
---
apiVersion: v1
kind: Service
metadata: {name: pb}
spec:
  selector: {app: pb}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: pb}
spec:
  replicas: 1
  selector: {matchLabels: {app: pb}}
  template:
    metadata: {labels: {app: pb}}
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
        - name: portbridge
          image: r.example/pb:v1
          args: [serve, --config, /etc/portbridge/config.yaml]
          ports: [{name: http, containerPort: 8080}]
          env:
            - {name: PORTBRIDGE_SERVER_TOKEN, valueFrom: {secretKeyRef: {name: s, key: server-token}}}
            - {name: PORTBRIDGE_BACKSTAGE_TOKEN, valueFrom: {secretKeyRef: {name: s, key: backstage-token}}}
            - {name: PORTBRIDGE_PORT_CLIENT_ID, valueFrom: {secretKeyRef: {name: s, key: port-client-id}}}
            - {name: PORTBRIDGE_PORT_CLIENT_SECRET, valueFrom: {secretKeyRef: {name: s, key: port-client-secret}}}
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          readinessProbe: {httpGet: {path: /readyz, port: http}}
          resources: {requests: {cpu: 100m, memory: 160Mi}, limits: {memory: 320Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: config, mountPath: /etc/portbridge, readOnly: true}
            - {name: state, mountPath: /var/lib/portbridge}
      volumes:
        - {name: config, configMap: {name: cfg}}
        - {name: state, emptyDir: {}}
`

var goodExt = External{Secrets: map[string][]string{"s": {"server-token", "backstage-token", "port-client-id", "port-client-secret"}}}

func TestGood(t *testing.T) {
	t.Parallel()
	objs, err := Decode("good", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := Kinds(objs); got != "ConfigMap/cfg, Service/pb, Deployment/pb" {
		t.Errorf("objects %s", got)
	}
	if err := Check(objs, goodExt); err != nil {
		t.Fatal(err)
	}
	files, err := ConfigFiles(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files["good#3:/etc/portbridge/config.yaml"] != "server: {}" {
		t.Errorf("config files %v", files)
	}
}

// edit replaces the first old in doc with new; old must be there.
func edit(t *testing.T, doc, old, new string) string {
	t.Helper()
	out := strings.Replace(doc, old, new, 1)
	if out == doc {
		t.Fatalf("replacement %q not found", old)
	}
	return out
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, old, new, want string }{
		{"misspelled field", "  replicas: 1", "  replica: 1", `unknown field "spec.replica"`},
		{"misspelled nested field", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", "unknown field"},
		{"duplicate field", "  replicas: 1", "  replicas: 1\n  replicas: 2", "duplicate field"},
		{"wrong type", "  replicas: 1", "  replicas: one", "cannot unmarshal"},
		{"bad quantity", "memory: 320Mi", "memory: 320 MB", "quantities must match"},
		{"unknown kind", "kind: Deployment", "kind: Deploymnt", "no kind \"Deploymnt\""},
		{"unknown group version", "apiVersion: apps/v1", "apiVersion: apps/v2", "apps/v2"},
		{"no apiVersion", "apiVersion: apps/v1\n", "", "apiVersion"},
		{"not yaml", "  replicas: 1", "  replicas: [1", "yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := edit(t, good, tc.old, tc.new)
			_, err := Decode(tc.name, []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, old, new, want string }{
		{"mount without volume", "{name: state, mountPath: /var/lib/portbridge}", "{name: stat, mountPath: /var/lib/portbridge}", `volumeMount "stat"`},
		{"unknown ConfigMap", "configMap: {name: cfg}", "configMap: {name: other}", `ConfigMap "other" is not defined`},
		{"unknown secret key", "key: port-client-secret", "key: client-secret", `has no key "client-secret"`},
		{"unknown secret", "{secretKeyRef: {name: s, key: server-token}}", "{secretKeyRef: {name: t, key: server-token}}", `Secret "t" is not defined`},
		{"literal secret", "{name: PORTBRIDGE_PORT_CLIENT_SECRET, valueFrom: {secretKeyRef: {name: s, key: port-client-secret}}}", "{name: PORTBRIDGE_PORT_CLIENT_SECRET, value: hunter2}", "PORTBRIDGE_PORT_CLIENT_SECRET must come from a secretKeyRef"},
		{"root allowed", "securityContext: {runAsNonRoot: true}", "securityContext: {}", "runAsNonRoot is not true"},
		{"uid 0", "securityContext: {runAsNonRoot: true}", "securityContext: {runAsNonRoot: true, runAsUser: 0}", "runAsUser is 0"},
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem is not true"},
		{"escalation", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation is not false"},
		{"capabilities kept", "capabilities: {drop: [ALL]}", "capabilities: {drop: [NET_RAW]}", "drop ALL"},
		{"wrong liveness path", "path: /healthz", "path: /health", "livenessProbe is not an httpGet of /healthz"},
		{"probe on undeclared port", "readinessProbe: {httpGet: {path: /readyz, port: http}}", "readinessProbe: {httpGet: {path: /readyz, port: metrics}}", "readinessProbe port metrics"},
		{"no memory limit", "limits: {memory: 320Mi}", "limits: {}", "limits lack memory"},
		{"limit below request", "limits: {memory: 320Mi}", "limits: {memory: 100Mi}", "below the request"},
		{"no state mount", "{name: state, mountPath: /var/lib/portbridge}", "{name: state, mountPath: /data}", "state directory"},
		{"writable config mount", "{name: config, mountPath: /etc/portbridge, readOnly: true}", "{name: config, mountPath: /etc/portbridge}", "read-only mount"},
		{"not serve", "args: [serve, --config, /etc/portbridge/config.yaml]", "args: [dev]", "are not `serve --config FILE`"},
		{"unused volume", "        - {name: state, emptyDir: {}}", "        - {name: state, emptyDir: {}}\n        - {name: spare, emptyDir: {}}", `volume "spare" is mounted by no container`},
		{"selector mismatch", "selector: {matchLabels: {app: pb}}", "selector: {matchLabels: {app: other}}", "does not match the pod template labels"},
		{"service selects nothing", "selector: {app: pb}", "selector: {app: other}", "matches no pod template"},
		{"service target port", "targetPort: http}", "targetPort: grpc}", `targetPort "grpc"`},
		{"defined twice", "---\napiVersion: apps/v1", "---\napiVersion: v1\nkind: Service\nmetadata: {name: pb}\nspec: {selector: {app: pb}}\n---\napiVersion: apps/v1", "Service pb (defined twice#3): defined twice"},
		{"no portbridge container", "- name: portbridge", "- name: bridge", `no workload has a "portbridge" container`},
		{"envFrom unknown Secret", "          ports: [{name: http, containerPort: 8080}]", "          ports: [{name: http, containerPort: 8080}]\n          envFrom: [{secretRef: {name: more}}]", `container portbridge envFrom: Secret "more" is not defined`},
		{"envFrom unknown ConfigMap", "          ports: [{name: http, containerPort: 8080}]", "          ports: [{name: http, containerPort: 8080}]\n          envFrom: [{configMapRef: {name: env}}]", `container portbridge envFrom: ConfigMap "env" is not defined`},
		{"Recreate with rollingUpdate", "  replicas: 1\n", "  replicas: 1\n  strategy: {type: Recreate, rollingUpdate: {maxSurge: 0}}\n", "rollingUpdate may not be specified when strategy type is Recreate"},
		{"unknown service account", "      securityContext: {runAsNonRoot: true}", "      serviceAccountName: pb\n      securityContext: {runAsNonRoot: true}", `serviceAccountName "pb" is not defined`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := edit(t, good, tc.old, tc.new)
			objs, err := Decode(tc.name, []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			err = Check(objs, goodExt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDecodeInto(t *testing.T) {
	t.Parallel()
	var ok []corev1.Container
	if err := DecodeInto("ok", []any{map[string]any{"name": "a", "image": "b"}}, &ok); err != nil || ok[0].Image != "b" {
		t.Errorf("decode: %v %v", ok, err)
	}
	var bad []corev1.Container
	err := DecodeInto("bad", []any{map[string]any{"name": "a", "imag": "b"}}, &bad)
	if err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("err %v, want an unknown field", err)
	}
}

// monitored is good plus a ServiceMonitor, a PodMonitor and a PrometheusRule
// for it.
var monitored = strings.Replace(good, "metadata: {name: pb}\nspec:\n  selector: {app: pb}", "metadata: {name: pb, labels: {app: pb}}\nspec:\n  selector: {app: pb}", 1) + `---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: pb}
spec:
  selector: {matchLabels: {app: pb}}
  endpoints: [{port: http, path: /metrics, interval: 30s, scrapeTimeout: 10s}]
---
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: pb}
spec:
  selector: {matchLabels: {app: pb}}
  podMetricsEndpoints: [{port: http, interval: 30s}]
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: pb}
spec:
  groups:
    - name: pb
      rules:
        - alert: PbDown
          expr: up == 0
          for: 5m
          annotations: {summary: down}
        - record: pb:up
          expr: up
`

func TestMonitoring(t *testing.T) {
	t.Parallel()
	objs, err := Decode("monitored", []byte(monitored))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(objs, goodExt); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"misspelled field", "podMetricsEndpoints: [{port: http,", "podMetricsEndpoints: [{prot: http,", `unknown field "spec.podMetricsEndpoints[0].prot"`},
		{"rule field misspelled", "          for: 5m", "          fro: 5m", `unknown field "spec.groups[0].rules[0].fro"`},
		{"service monitor selects nothing", "selector: {matchLabels: {app: pb}}\n  endpoints", "selector: {matchLabels: {app: other}}\n  endpoints", "ServiceMonitor pb (service monitor selects nothing#4): selector app=other matches no Service"},
		{"service monitor port", "endpoints: [{port: http,", "endpoints: [{port: metrics,", `port "metrics" is not a port name of Service pb`},
		{"service monitor empty selector", "selector: {matchLabels: {app: pb}}\n  endpoints", "selector: {}\n  endpoints", "empty selector"},
		{"bad interval", "interval: 30s, scrapeTimeout", "interval: 30 s, scrapeTimeout", "endpoints[0] interval"},
		{"timeout over interval", "scrapeTimeout: 10s", "scrapeTimeout: 1m", "scrapeTimeout 1m is longer than the interval 30s"},
		{"relative path", "path: /metrics", "path: metrics", `path "metrics" does not start with /`},
		{"pod monitor selects nothing", "selector: {matchLabels: {app: pb}}\n  podMetricsEndpoints", "selector: {matchLabels: {app: x}}\n  podMetricsEndpoints", "selector app=x matches no pod template"},
		{"pod monitor port", "podMetricsEndpoints: [{port: http,", "podMetricsEndpoints: [{port: portbridge,", `port "portbridge" is not a container port name of Deployment pb`},
		{"pod monitor no port", "podMetricsEndpoints: [{port: http, interval: 30s}]", "podMetricsEndpoints: [{interval: 30s}]", "neither port nor portNumber"},
		{"alert and record", "        - record: pb:up", "        - alert: PbUp\n          record: pb:up", "set exactly one of alert and record"},
		{"neither alert nor record", "        - record: pb:up\n", "        - labels: {a: b}\n", "set exactly one of alert and record"},
		{"alert twice", "        - record: pb:up", "        - alert: PbDown", "alert PbDown: alert name used twice"},
		{"empty expr", "expr: up == 0", "expr: ' '", "expr is not a non-empty string"},
		{"bad for", "for: 5m", "for: 5 minutes", "alert PbDown for"},
		{"no rules", "      rules:\n        - alert: PbDown", "      rules: []\n    - name: other\n      rules:\n        - alert: PbDown", "group pb has no rules"},
		{"group twice", "    - name: pb\n", "    - name: pb\n      rules: [{record: a, expr: up}]\n    - name: pb\n", `group name "pb" is empty or used twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := edit(t, monitored, tc.old, tc.new)
			objs, err := Decode(tc.name, []byte(doc))
			if err == nil {
				err = Check(objs, goodExt)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
