{{/*
Instance name: the chart name, or the alias the parent runs it under in kebab case
(dedupeRedis -> dedupe-redis), so that two instances in one release do not collide.
*/}}
{{- define "redis.name" -}}
{{- .Chart.Name | kebabcase | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name: <release>-<name> unless overridden. The parent chart derives the host the same way. */}}
{{- define "redis.fullname" -}}
{{- default (printf "%s-%s" .Release.Name (include "redis.name" .)) .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "redis.labels" -}}
{{ include "redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.component }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "redis.secretName" -}}
{{- default (include "redis.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{/*
The --maxmemory argument: .Values.maxmemory, or else maxmemoryPercent of resources.limits.memory
(an integer with no suffix or k, M, G, Ki, Mi, Gi), in whole MiB. Never 0, which Redis reads as
"no limit".
*/}}
{{- define "redis.maxmemory" -}}
{{- if .Values.maxmemory -}}
{{- .Values.maxmemory -}}
{{- else -}}
{{- printf "%smb" (include "orderflow.percentOfMemoryLimit" (dict "chart" .Chart.Name "setting" "maxmemory" "resources" .Values.resources "percent" .Values.maxmemoryPercent)) -}}
{{- end -}}
{{- end -}}
