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
			doc := strings.Replace(good, tc.old, tc.new, 1)
			if doc == good {
				t.Fatalf("replacement %q not found", tc.old)
			}
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
			doc := strings.Replace(good, tc.old, tc.new, 1)
			if doc == good {
				t.Fatalf("replacement %q not found", tc.old)
			}
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
