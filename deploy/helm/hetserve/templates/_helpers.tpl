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

{{- define "hetserve.gateway.metricsService" -}}
{{- printf "%s-gateway-metrics" (include "hetserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hetserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hetserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: include with (dict "image" .Values.x.image "root" .).
[registry/]repository:tag, or [registry/]repository@digest when a digest pins it. The image's
own registry wins; empty, global.imageRegistry; empty too, the runtime's default. */}}
{{- define "hetserve.image" -}}
{{- $registry := .image.registry | default ((.root.Values.global).imageRegistry) -}}
{{- $name := .image.repository -}}
{{- if $registry -}}{{- $name = printf "%s/%s" $registry $name -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $name .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name (toString .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level fields every pod of the chart shares: its ServiceAccount, the token choice and
the pull secrets (global.imagePullSecrets, then imagePullSecrets). */}}
{{- define "hetserve.podIdentity" -}}
serviceAccountName: {{ include "hetserve.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- $secrets := concat (default list ((.Values.global).imagePullSecrets)) .Values.imagePullSecrets }}
{{- with $secrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* "true" when a Prometheus Operator object is to be rendered: include with
(dict "enabled" .Values.serviceMonitor.enabled "root" .). auto: where the cluster serves
monitoring.coreos.com/v1 (helm template: --api-versions monitoring.coreos.com/v1). */}}
{{- define "hetserve.monitoring.enabled" -}}
{{- if eq (toString .enabled) "auto" -}}
{{- if .root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- else if .enabled -}}
true
{{- end -}}
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
{{- printf "%s-predictor.%s.svc.%s:80" (include "hetserve.kserve.name" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "hetserve.triton.headless" .) .Release.Namespace .Values.clusterDomain (int .Values.triton.ports.grpc) -}}
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


{{/* The gateway's Service address inside the cluster (the helm test calls it). */}}
{{- define "hetserve.gateway.serviceUrl" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "hetserve.gateway.name" .) .Release.Namespace .Values.clusterDomain (int .Values.gateway.service.port) -}}
{{- end -}}

{{/* The model repository's OCI image for KServe's modelcars (storageUri oci://...). */}}
{{- define "hetserve.kserve.storageUri" -}}
{{- if .Values.kserve.storageUri -}}
{{- .Values.kserve.storageUri -}}
{{- else -}}
{{- printf "oci://%s" (include "hetserve.image" (dict "image" .Values.triton.modelRepository.image "root" .)) -}}
{{- end -}}
{{- end -}}
