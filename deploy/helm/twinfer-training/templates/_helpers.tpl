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
    resources: {{- toYaml .Values.resources | nindent 6 }}
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
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
