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
{{- define "guardproxy.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-keys" (include "guardproxy.name" .)) -}}
{{- end -}}
{{/* guardproxy.yaml: guards without a url point at the vLLM Service. */}}
{{- define "guardproxy.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $guardUrl := printf "http://%s:%v/v1" (include "guardproxy.guardName" .) .Values.vllm.port -}}
{{- range $name, $guard := $config.guards -}}
{{- if not $guard.url -}}{{- $_ := set $guard "url" (list $guardUrl) -}}{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
