{{- define "training.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "training.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "training.pod" -}}
restartPolicy: Never
automountServiceAccountToken: false   # training never calls the Kubernetes API
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
containers:
  - name: train
    image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true      # writes go to the models PVC (its staging directory) and /tmp
      capabilities: {drop: [ALL]}
    args: {{- concat (list "train" .Values.model "--repository" .Values.modelRepository.mountPath) .Values.extraArgs | toYaml | nindent 6 }}
    env:
      - {name: ORT_DISABLE_TELEMETRY, value: "1"}
    resources: {{- include "gpu.resources" . | nindent 6 }}
    volumeMounts:
      - {name: models, mountPath: {{ .Values.modelRepository.mountPath }}}
      - {name: tmp, mountPath: /tmp}
      - {name: cache, mountPath: /home/twinfer/.cache}
volumes:
  - name: models
    persistentVolumeClaim: {claimName: {{ required "modelRepository.existingClaim is required" .Values.modelRepository.existingClaim }}}
  - name: tmp
    emptyDir: {}
  - name: cache
    emptyDir: {}
{{- if and .Values.gpu.enabled .Values.gpu.runtimeClassName }}
runtimeClassName: {{ .Values.gpu.runtimeClassName }}
{{- end }}
{{- with include "gpu.nodeSelector" . }}
nodeSelector: {{- . | nindent 2 }}
{{- end }}
{{- with include "gpu.tolerations" . }}
tolerations: {{- . | nindent 2 }}
{{- end }}
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
