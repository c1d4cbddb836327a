{{/* Names and labels shared by every object. */}}

{{- define "hetserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hetserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "hetserve.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "hetserve.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hetserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hetserve
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" . "component" "triton"). */}}
{{- define "hetserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hetserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hetserve.triton.name" -}}
{{- printf "%s-triton" (include "hetserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hetserve.triton.headless" -}}
{{- printf "%s-triton-headless" (include "hetserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hetserve.gateway.name" -}}
{{- printf "%s-gateway" (include "hetserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hetserve.kserve.name" -}}
{{- printf "%s-triton" (include "hetserve.fullname" .) | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{/* The gateway's Triton address: every ready Triton pod through the headless Service's DNS
name (client-side round-robin), or KServe's predictor Service (one address). */}}
{{- define "hetserve.gateway.tritonUrl" -}}
{{- if .Values.gateway.tritonUrl -}}
{{- .Values.gateway.tritonUrl -}}
{{- else if .Values.kserve.enabled -}}
{{- printf "%s-predictor.%s.svc.cluster.local:80" (include "hetserve.kserve.name" .) .Release.Namespace -}}
{{- else -}}
{{- printf "dns:///%s.%s.svc.cluster.local:%d" (include "hetserve.triton.headless" .) .Release.Namespace (int .Values.triton.ports.grpc) -}}
{{- end -}}
{{- end -}}

{{- define "hetserve.apiKeys.secretName" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- .Values.apiKeys.existingSecret -}}
{{- else -}}
{{- printf "%s-api-keys" (include "hetserve.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "hetserve.apiKeys.enabled" -}}
{{- if or .Values.apiKeys.existingSecret .Values.apiKeys.keys -}}true{{- end -}}
{{- end -}}

{{/* A container's security context: non-root, read-only root filesystem, no capabilities. */}}
{{- define "hetserve.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Topology spread over nodes and zones: include with (dict "root" . "component" "x");
empty when topologySpread.enabled is false. */}}
{{- define "hetserve.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled -}}
topologySpreadConstraints:
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "hetserve.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}
