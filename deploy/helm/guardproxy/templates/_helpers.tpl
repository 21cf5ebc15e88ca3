{{- define "guardproxy.name" -}}{{ .Release.Name }}-guardproxy{{- end -}}
{{- define "guardproxy.guardName" -}}{{ .Release.Name }}-guard{{- end -}}
{{- define "guardproxy.labels" -}}
app.kubernetes.io/name: guardproxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "guardproxy.selector" -}}
app.kubernetes.io/name: guardproxy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "guardproxy.guardSelector" -}}
app.kubernetes.io/name: guard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "guardproxy.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-keys" (include "guardproxy.name" .)) -}}
{{- end -}}
{{/* The proxy's metrics.port when it serves /metrics on a port of its own, else empty:
     /metrics is then on the main port. */}}
{{- define "guardproxy.metricsPort" -}}
{{- (.Values.config.metrics | default dict).port | default "" -}}
{{- end -}}
{{/* The container port that answers /metrics, by name. */}}
{{- define "guardproxy.metricsTarget" -}}
{{- if include "guardproxy.metricsPort" . -}}metrics{{- else -}}http{{- end -}}
{{- end -}}
{{/* guardproxy.yaml: guards without a url point at the vLLM Service; a metrics port of its
     own listens on every address, so the Service and Prometheus reach it. */}}
{{- define "guardproxy.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $guardUrl := printf "http://%s:%v/v1" (include "guardproxy.guardName" .) .Values.vllm.port -}}
{{- range $name, $guard := $config.guards -}}
{{- if not $guard.url -}}{{- $_ := set $guard "url" (list $guardUrl) -}}{{- end -}}
{{- end -}}
{{- if include "guardproxy.metricsPort" . -}}
{{- if ne (toString .Values.workers) "1" -}}
{{- fail "config.metrics.port needs workers: 1 (with more, /metrics is served on the main port, where the workers' values are merged)" -}}
{{- end -}}
{{- $_ := set $config.metrics "host" ($config.metrics.host | default "0.0.0.0") -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
{{- define "guardproxy.adminSelector" -}}
app.kubernetes.io/name: guardproxy-admin
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
