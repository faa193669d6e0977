{{/* Chart name, at most 63 characters as a label value must be. */}}
{{- define "runnerpool-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release whose name already holds the chart
name (the usual `helm install runnerpool-operator ...`) is not repeated.
*/}}
{{- define "runnerpool-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "runnerpool-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "runnerpool-operator.labels" -}}
helm.sh/chart: {{ include "runnerpool-operator.chart" . }}
{{ include "runnerpool-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "runnerpool-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runnerpool-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "runnerpool-operator.serviceAccountName" -}}
{{- default (include "runnerpool-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "runnerpool-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret holding the webhook secret; empty when there is none. */}}
{{- define "runnerpool-operator.webhookSecretName" -}}
{{- if .Values.webhook.secret.existingSecret }}
{{- .Values.webhook.secret.existingSecret }}
{{- else if .Values.webhook.secret.value }}
{{- printf "%s-webhook" (include "runnerpool-operator.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The manager's rules: config/rbac/role.yaml, which controller-gen writes from the
controllers' RBAC markers, copied into files/ by `make chart-sync`. Reading the
copy keeps the chart from growing its own, drifting list.
*/}}
{{- define "runnerpool-operator.managerRules" -}}
{{- $role := .Files.Get "files/rbac/role.yaml" | fromYaml }}
{{- if not $role.rules }}
{{- fail "files/rbac/role.yaml has no rules: run make chart-sync" }}
{{- end }}
{{- toYaml $role.rules }}
{{- end }}

{{/* Rules of the secure metrics endpoint, from config/rbac/metrics_auth/role.yaml the same way. */}}
{{- define "runnerpool-operator.metricsAuthRules" -}}
{{- $role := .Files.Get "files/rbac/metrics_auth_role.yaml" | fromYaml }}
{{- if not $role.rules }}
{{- fail "files/rbac/metrics_auth_role.yaml has no rules: run make chart-sync" }}
{{- end }}
{{- toYaml $role.rules }}
{{- end }}

{{/* Leader election rules, from config/rbac/leader_election_role.yaml the same way. */}}
{{- define "runnerpool-operator.leaderElectionRules" -}}
{{- $role := .Files.Get "files/rbac/leader_election_role.yaml" | fromYaml }}
{{- if not $role.rules }}
{{- fail "files/rbac/leader_election_role.yaml has no rules: run make chart-sync" }}
{{- end }}
{{- toYaml $role.rules }}
{{- end }}

{{/*
Rules between values that values.schema.json cannot state with a readable message.
*/}}
{{- define "runnerpool-operator.validate" -}}
{{- $webhook := .Values.webhook }}
{{- if and $webhook.secret.existingSecret $webhook.secret.value }}
{{- fail "webhook.secret: set existingSecret or value, not both" }}
{{- end }}
{{- if and $webhook.ingress.enabled (not $webhook.enabled) }}
{{- fail "webhook.ingress.enabled needs webhook.enabled: the Ingress routes to the webhook receiver" }}
{{- end }}
{{- if and $webhook.enabled $webhook.ingress.enabled (not $webhook.ingress.hosts) }}
{{- fail "webhook.ingress.hosts: name at least one host for Bitbucket to post to" }}
{{- end }}
{{- if and $webhook.enabled (not (or $webhook.secret.existingSecret $webhook.secret.value)) (not $webhook.allowUnsigned) }}
{{- fail "webhook.secret: the webhook receiver needs a secret, so set webhook.secret.existingSecret or webhook.secret.value (and the same secret in Bitbucket), or webhook.allowUnsigned=true to accept unsigned deliveries" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (toString $pdb.maxUnavailable) "") (kindIs "float64" $pdb.minAvailable) (ge (int $pdb.minAvailable) (int .Values.replicas)) }}
{{- fail "podDisruptionBudget: minAvailable must be below replicas, or no manager pod could ever be evicted and node drains would hang; set replicas to 2 or more, or use maxUnavailable" }}
{{- end }}
{{- if and $pdb.enabled (has (toString $pdb.maxUnavailable) (list "0" "0%")) }}
{{- fail "podDisruptionBudget: maxUnavailable 0 lets no manager pod be evicted, and node drains would hang" }}
{{- end }}
{{- end }}
