{{/*
Name helpers. With the release called "tessera" (as in manifests/install) the
objects are named tessera-scheduler and tessera-device-plugin.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's name prefix: fullnameOverride, the release name if it
already contains the chart name, or "<release>-<chart>". */}}
{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tessera.scheduler.fullname" -}}
{{- printf "%s-scheduler" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tessera.devicePlugin.fullname" -}}
{{- printf "%s-device-plugin" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The lease tessera-scheduler replicas elect a leader with. */}}
{{- define "tessera.scheduler.leaseName" -}}
{{- default (include "tessera.scheduler.fullname" .) .Values.scheduler.leaderElection.resourceName -}}
{{- end -}}

{{/* The device plugin's user name, as the admission policies match it. */}}
{{- define "tessera.devicePlugin.user" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "tessera.devicePlugin.fullname" .) -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of an object that belongs to one component; call with
(list $ "scheduler") or (list $ "device-plugin"). app.kubernetes.io/name is
the component's, as on its pods, so `kubectl get all,cm,sa,role,clusterrole
-l app.kubernetes.io/name=tessera-scheduler` finds all of it. */}}
{{- define "tessera.componentLabels" -}}
{{- $root := index . 0 -}}
{{ include "tessera.labels" $root }}
app.kubernetes.io/name: tessera-{{ index . 1 }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Selector labels of a component; call with (list $ "component-name"). */}}
{{- define "tessera.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end -}}

{{/* An image reference; call with (list $ .Values.<component>.image). The
top-level imageRegistry, when set, replaces the registry of the repository
(its first path part when that names a host: it has a dot or a port, or is
localhost) or is put in front of a repository that names none. A digest
pins the image and wins over the tag. */}}
{{- define "tessera.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $repo := $img.repository -}}
{{- with $root.Values.imageRegistry -}}
{{- $parts := splitList "/" $repo -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repo = join "/" (rest $parts) -}}
{{- end -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The scheduler's KubeSchedulerConfiguration as YAML: files/tessera-scheduler.yaml
(a copy of config/examples/tessera-scheduler.yaml that `make manifests` keeps
in sync) with leader election set from the values and scheduler.pluginArgs
merged over each profile's pluginConfig.
*/}}
{{- define "tessera.scheduler.config" -}}
{{- $cfg := .Files.Get "files/tessera-scheduler.yaml" | fromYaml -}}
{{- if or (not $cfg) (hasKey $cfg "Error") -}}
{{- fail (printf "files/tessera-scheduler.yaml is not a valid KubeSchedulerConfiguration: %v" $cfg) -}}
{{- end -}}
{{- $le := .Values.scheduler.leaderElection -}}
{{- $election := dict "leaderElect" (ternary true false $le.enabled) -}}
{{- if $le.enabled -}}
{{- $_ := set $election "resourceLock" "leases" -}}
{{- $_ := set $election "resourceName" (include "tessera.scheduler.leaseName" .) -}}
{{- $_ := set $election "resourceNamespace" .Release.Namespace -}}
{{- $_ := set $election "leaseDuration" $le.leaseDuration -}}
{{- $_ := set $election "renewDeadline" $le.renewDeadline -}}
{{- $_ := set $election "retryPeriod" $le.retryPeriod -}}
{{- end -}}
{{- $_ := set $cfg "leaderElection" $election -}}
{{- $profiles := $cfg.profiles -}}
{{- if ne (len $profiles) 1 -}}
{{- fail "files/tessera-scheduler.yaml must have exactly one profile" -}}
{{- end -}}
{{- $prof := index $profiles 0 -}}
{{- $_ := set $prof "schedulerName" .Values.scheduler.schedulerName -}}
{{- $pcs := default list $prof.pluginConfig -}}
{{- $seen := dict -}}
{{- range $pc := $pcs -}}
{{- $_ := set $seen $pc.name true -}}
{{- with get $.Values.scheduler.pluginArgs $pc.name -}}
{{- $_ := set $pc "args" (mergeOverwrite (default dict $pc.args) (deepCopy .)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $args := .Values.scheduler.pluginArgs -}}
{{- if and $args (not (hasKey $seen $name)) -}}
{{- $pcs = append $pcs (dict "name" $name "args" (deepCopy $args)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $prof "pluginConfig" $pcs -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
The pods both opt-in policies select: created in a namespace that opted in
(their bindings' namespaceSelector), asking for a GPU resource in any
container, and naming no scheduler. The API server has already defaulted an
empty spec.schedulerName to default-scheduler when admission runs, so the
two cannot be told apart. Pods that name another scheduler are left alone.
*/}}
{{- define "tessera.optIn.conditions" -}}
{{- $gpus := toJson .Values.scheduler.optIn.gpuResources -}}
- name: names-no-other-scheduler
  expression: >-
    !has(object.spec.schedulerName) || object.spec.schedulerName == "" ||
    object.spec.schedulerName == "default-scheduler"
- name: asks-for-a-gpu
  expression: >-
    (object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers : [])).exists(c,
    has(c.resources) && (
    (has(c.resources.limits) && c.resources.limits.exists(r, r in {{ $gpus }})) ||
    (has(c.resources.requests) && c.resources.requests.exists(r, r in {{ $gpus }}))))
{{- end -}}

{{/*
Whether to render a monitoring object; call with (list $ value "group/version/Kind").
value true renders it, false does not, "auto" renders it when the cluster
serves the kind (helm template, without a cluster, renders none).
*/}}
{{- define "tessera.monitoring.want" -}}
{{- $root := index . 0 -}}
{{- $v := toString (index . 1) -}}
{{- if or (eq $v "true") (and (eq $v "auto") ($root.Capabilities.APIVersions.Has (index . 2))) -}}
true
{{- end -}}
{{- end -}}
