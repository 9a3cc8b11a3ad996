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
