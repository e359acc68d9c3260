package render

import (
	"context"

	"helm.sh/helm/v3/pkg/chart"
)

// backstageStandIn renders the values keys our values file uses the way the
// official Backstage chart turns them into objects (chart "backstage",
// version 2.8.2: backstage-deployment.yaml and extra-list.yaml):
//   - extraAppConfig entries become a configMap volume named after the
//     ConfigMap, mounted into the Backstage container at installDir/filename
//     with subPath, and a --config argument;
//   - extraEnvVars, extraVolumeMounts, extraVolumes, extraContainers and
//     podAnnotations are pasted in after Helm's `tpl` (the chart's
//     common.tplvalues.render), so values may hold templates;
//   - extraVolumes are only rendered when extraAppConfig is set, or
//     extraVolumeMounts is set too;
//   - extraDeploy items are rendered with `tpl` as separate objects.
//
// It is our own template, written from the chart's documented behaviour, so
// the values file can be validated without downloading the chart.
const backstageStandIn = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: backstage, app.kubernetes.io/instance: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: backstage, app.kubernetes.io/instance: {{ .Release.Name }}}
      {{- with .Values.backstage.podAnnotations }}
      annotations:
        {{- tpl (toYaml .) $ | nindent 8 }}
      {{- end }}
    spec:
      volumes:
        {{- if or .Values.backstage.extraAppConfig (and .Values.backstage.extraVolumeMounts .Values.backstage.extraVolumes) }}
        {{- range .Values.backstage.extraAppConfig }}
        - name: {{ .configMapRef }}
          configMap:
            name: {{ .configMapRef }}
        {{- end }}
        {{- with .Values.backstage.extraVolumes }}
        {{- tpl (toYaml .) $ | nindent 8 }}
        {{- end }}
        {{- end }}
      containers:
        - name: backstage-backend
          image: ghcr.io/backstage/backstage:latest
          args:
            {{- range .Values.backstage.extraAppConfig }}
            - --config
            - /app/{{ .filename }}
            {{- end }}
          env:
            - name: APP_CONFIG_backend_listen_port
              value: "7007"
            {{- with .Values.backstage.extraEnvVars }}
            {{- tpl (toYaml .) $ | nindent 12 }}
            {{- end }}
          ports:
            - name: backend
              containerPort: 7007
              protocol: TCP
          volumeMounts:
            {{- range .Values.backstage.extraAppConfig }}
            - name: {{ .configMapRef }}
              mountPath: /app/{{ .filename }}
              subPath: {{ .filename }}
            {{- end }}
            {{- with .Values.backstage.extraVolumeMounts }}
            {{- tpl (toYaml .) $ | nindent 12 }}
            {{- end }}
        {{- with .Values.backstage.extraContainers }}
        {{- tpl (toYaml .) $ | nindent 8 }}
        {{- end }}
{{- range .Values.extraDeploy }}
---
{{ tpl (toYaml .) $ }}
{{- end }}
`

// BackstageChart renders values the way the official Backstage chart
// renders the keys our values file sets (see backstageStandIn).
func BackstageChart(ctx context.Context, release, namespace string, values map[string]any) (string, error) {
	ch := &chart.Chart{
		Metadata:  &chart.Metadata{APIVersion: chart.APIVersionV2, Name: "backstage-stand-in", Version: "2.8.2"},
		Templates: []*chart.File{{Name: "templates/backstage.yaml", Data: []byte(backstageStandIn)}},
	}
	return HelmChart(ctx, ch, release, namespace, values)
}
