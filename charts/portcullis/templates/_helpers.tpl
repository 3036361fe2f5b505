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

{{/* Whether the gateway runs portcullis's ingress auth endpoint (gateway.config.ingress_auth). */}}
{{- define "portcullis.gateway.ingressAuth" -}}
{{- if and .Values.gateway.enabled (dig "ingress_auth" "enabled" false .Values.gateway.config) -}}
true
{{- end -}}
{{- end -}}

{{/*
What every ingress controller's objects are made of (ingressAuth), as YAML for fromYaml: the auth
URL, the headers the controller copies from portcullis's answer, the hosts, the sign-in URL.
Fails on values that would render an ingress that cannot work or that exposes the auth port.
*/}}
{{- define "portcullis.ingressAuth.context" -}}
{{- $g := .Values.gateway -}}
{{- $ia := .Values.ingressAuth -}}
{{- if not (include "portcullis.gateway.ingressAuth" .) -}}
{{- fail "ingressAuth.enabled needs gateway.enabled and gateway.config.ingress_auth.enabled" -}}
{{- end -}}
{{- $cfg := $g.config.ingress_auth -}}
{{- $controller := required "gateway.config.ingress_auth.controller is required with ingressAuth.enabled" $cfg.controller -}}
{{- $publicUrl := required "gateway.config.public_url is required" $g.config.public_url -}}
{{- $public := urlParse $publicUrl -}}
{{- $publicHost := regexReplaceAll ":[0-9]+$" $public.host "" -}}
{{- $portSuffix := trimPrefix $publicHost $public.host -}}
{{- $cookieDomain := dig "session" "cookie_domain" "" $g.config -}}
{{- $svc := include "portcullis.gateway.fullname" . -}}
{{- $appNs := default .Release.Namespace $ia.namespace -}}
{{- $configHosts := list -}}
{{- range $cfg.hosts }}{{ $configHosts = append $configHosts .host }}{{ end -}}
{{- if not $ia.hosts -}}
{{- fail "ingressAuth.hosts is required with ingressAuth.enabled: the app's Services per host" -}}
{{- end -}}
{{- $hosts := list -}}
{{- range $i, $h := $ia.hosts -}}
{{- if not (has $h.host $configHosts) -}}
{{- fail (printf "ingressAuth.hosts[%d].host %s must be one of gateway.config.ingress_auth.hosts (portcullis answers 403 for any other host)" $i $h.host) -}}
{{- end -}}
{{- if has $h.host $hosts -}}
{{- fail (printf "ingressAuth.hosts[%d].host %s is listed twice" $i $h.host) -}}
{{- end -}}
{{- $hosts = append $hosts $h.host -}}
{{- range $j, $p := $h.paths -}}
{{- if or (eq $p.path "/bff") (hasPrefix "/bff/" $p.path) -}}
{{- fail (printf "ingressAuth.hosts[%d].paths[%d].path %s: /bff/ belongs to portcullis and is routed to it by the chart" $i $j $p.path) -}}
{{- end -}}
{{- if and (eq $p.service $svc) (eq $appNs $.Release.Namespace) -}}
{{- fail (printf "ingressAuth.hosts[%d].paths[%d].service %s is portcullis itself: never route browsers to it (its auth port answers with tokens); /bff/ is routed to it by the chart" $i $j $p.service) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $bffHosts := $hosts -}}
{{- if not (has $publicHost $bffHosts) }}{{ $bffHosts = append $bffHosts $publicHost }}{{ end -}}
{{- $identity := list "X-Auth-Request-User" "X-Auth-Request-Email" "X-Auth-Request-Preferred-Username" "X-Auth-Request-Groups" -}}
{{- with $cfg.identity_headers }}{{ $identity = keys . | sortAlpha }}{{ end -}}
{{- if $cfg.identity_assertion -}}
{{- $identity = append $identity (($g.config.identity_assertion | default dict).header | default "X-Portcullis-Assertion") -}}
{{- end -}}
{{- $headers := concat (list "Authorization") $identity (list "Cookie") -}}
{{- /* Without cookie_domain each host has its own session, so the login runs on the host the
       browser is on; with it, on public_url's host, which then needs one redirect URI only. */ -}}
{{- $signin := printf "%s://$host%s/bff/login?rd=$escaped_request_uri" $public.scheme $portSuffix -}}
{{- if $cookieDomain -}}
{{- $signin = printf "%s://%s/bff/login?rd=%s://$host%s$escaped_request_uri" $public.scheme $public.host $public.scheme $portSuffix -}}
{{- end -}}
controller: {{ $controller }}
service: {{ $svc }}
releaseNamespace: {{ .Release.Namespace }}
appNamespace: {{ $appNs }}
authPort: {{ $g.ports.auth }}
authURL: {{ printf "http://%s.%s.svc.%s:%d/bff/auth" $svc .Release.Namespace $ia.clusterDomain (int $g.ports.auth) }}
proxyPort: {{ $g.service.port }}
responseHeaders: {{ toJson $headers }}
hosts: {{ toJson $hosts }}
bffHosts: {{ toJson $bffHosts }}
signin: {{ $signin | quote }}
{{- end -}}
