{{/* Helpers of the nodemesh chart: labels, the image, the control plane's address. */}}
{{- define "nodemesh.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nodemesh.image" -}}
{{ required "image.repository is required" .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "nodemesh.controlPlaneAddress" -}}
nodemesh-control-plane.{{ .Release.Namespace }}.svc:15012
{{- end }}
