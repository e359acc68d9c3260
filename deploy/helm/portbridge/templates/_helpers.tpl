{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "portbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name, or release-chart when the release name lacks the chart name. */}}
{{- define "portbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "portbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: bridge
{{- end }}

{{- define "portbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portbridge.image" -}}
{{- $repo := required "image.repository is required: the registry path you pushed `make image` to (see deploy/README.md)" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The config file: .Values.config, with mapping.file pointing at the mounted port-app-config when one is given. */}}
{{- define "portbridge.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.portAppConfig }}
{{- $_ := set $cfg "mapping" (merge (dict "file" "/etc/portbridge/port-app-config.yaml") (default (dict) $cfg.mapping)) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Labels of the monitoring objects: the chart's, with component monitoring, and the given extra labels (they win). Call with (dict "ctx" $ "extra" .labels). */}}
{{- define "portbridge.monitoringLabels" -}}
{{- $l := include "portbridge.labels" .ctx | fromYaml }}
{{- $_ := set $l "app.kubernetes.io/component" "monitoring" }}
{{- toYaml (merge (dict) (default (dict) .extra) $l) }}
{{- end }}
