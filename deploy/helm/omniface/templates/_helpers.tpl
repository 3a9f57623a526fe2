{{/* Names and labels shared by every object of the chart. */}}

{{- define "omniface.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "omniface.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "omniface.selectorLabels" -}}
app.kubernetes.io/name: {{ include "omniface.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: inference-server
{{- end -}}

{{- define "omniface.labels" -}}
{{ include "omniface.selectorLabels" . }}
app.kubernetes.io/part-of: omniface
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "omniface.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "omniface.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "omniface.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Where tritonserver reads the repository. */}}
{{- define "omniface.modelRepository" -}}
{{- if eq .Values.modelRepository.source "s3" -}}
{{- .Values.modelRepository.s3.url -}}
{{- else -}}
{{- .Values.modelRepository.volume.mountPath -}}
{{- end -}}
{{- end -}}

{{/* What the init container installs: the cpu target's graphs need ONNX Runtime too. */}}
{{- define "omniface.packages" -}}
{{- $packages := .Values.omniface.install.packages -}}
{{- if eq .Values.target "cpu" -}}
{{- $packages = append $packages "onnxruntime>=1.17" -}}
{{- end -}}
{{- join " " $packages -}}
{{- end -}}
