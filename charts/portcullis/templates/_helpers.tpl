{{/* Names, labels and shared fragments. */}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.injector.fullname" -}}
{{- printf "%s-injector" (include "portcullis.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.gateway.fullname" -}}
{{- printf "%s-gateway" (include "portcullis.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.injector.tlsSecret" -}}
{{- if eq .Values.injector.webhook.tls.mode "existingSecret" -}}
{{- required "injector.webhook.tls.existingSecret.name is required with tls.mode existingSecret" .Values.injector.webhook.tls.existingSecret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "portcullis.injector.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Standard labels; call with (dict "root" $ "component" "injector"). */}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "portcullis.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{- printf "%s/%s@%s" $i.registry $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $i.registry $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{/* The portcullis probes: startup and liveness ask "is the process serving", readiness
     adds the IdP discovery and the session store. */}}
{{- define "portcullis.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 1
  failureThreshold: 60
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  failureThreshold: 3
{{- end -}}

{{/* Same labels for every pod template: selector labels plus any common labels. */}}
{{- define "portcullis.podLabels" -}}
{{ include "portcullis.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The scheduling block shared by the workloads; call with the component's values. */}}
{{- define "portcullis.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An alert's severity, summary and description, plus the labels and annotations every alert
     gets; call with (dict "alert" <its values> "rule" .Values.prometheusRule "summary" … "description" …). */}}
{{- define "portcullis.alertMeta" -}}
labels:
  severity: {{ .alert.severity }}
  {{- with .rule.additionalRuleLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  summary: {{ .summary | quote }}
  description: {{ .description | quote }}
  {{- with .rule.additionalRuleAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/*
A portcullis configuration file: `config` with the chart-wide `telemetry` values merged into its
own `telemetry` block, whose keys win. Call with (dict "root" $ "config" $config).
*/}}
{{- define "portcullis.config" -}}
{{- $config := deepCopy .config -}}
{{- with .root.Values.telemetry -}}
{{- $own := get $config "telemetry" | default dict -}}
{{- $_ := set $config "telemetry" (merge (deepCopy $own) (deepCopy .)) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
