{{- define "twinfer.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "twinfer.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "twinfer.labels" -}}
app.kubernetes.io/name: {{ include "twinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "twinfer.selector" -}}
app.kubernetes.io/name: {{ include "twinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{/* GPU scheduling (gpu.enabled): the resources with `gpu.count` of `gpu.resourceName` in the limits (an extended
resource's request defaults to its limit), and gpu.nodeSelector / gpu.tolerations added to the pod's own. */}}
{{- define "gpu.resources" -}}
{{- $resources := deepCopy (default (dict) .Values.resources) -}}
{{- if .Values.gpu.enabled -}}
{{- if lt (int .Values.gpu.count) 1 -}}{{- fail "gpu.count must be at least 1 with gpu.enabled" -}}{{- end -}}
{{- $limits := deepCopy (default (dict) $resources.limits) -}}
{{- $_ := set $limits (required "gpu.resourceName is required with gpu.enabled" .Values.gpu.resourceName) (int .Values.gpu.count) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}
{{- define "gpu.nodeSelector" -}}
{{- $selector := deepCopy (default (dict) .Values.nodeSelector) -}}
{{- if .Values.gpu.enabled -}}{{- $selector = mergeOverwrite $selector (deepCopy (default (dict) .Values.gpu.nodeSelector)) -}}{{- end -}}
{{- if $selector -}}{{- toYaml $selector -}}{{- end -}}
{{- end -}}
{{- define "gpu.tolerations" -}}
{{- $tolerations := default (list) .Values.tolerations -}}
{{- if .Values.gpu.enabled -}}{{- $tolerations = concat $tolerations (default (list) .Values.gpu.tolerations) -}}{{- end -}}
{{- if $tolerations -}}{{- toYaml $tolerations -}}{{- end -}}
{{- end -}}
