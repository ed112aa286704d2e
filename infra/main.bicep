// Dynamics 365 (Dataverse) <-> Spotler Mail+ contact sync: Azure Functions (Flex Consumption, Python) with a
// user-assigned identity, Entra-only storage, Key Vault references for every secret and Entra-authenticated
// Application Insights.
//
// Scope: subscription, like the azd templates: the deployment creates (or reuses) the resource group, so
// `azd up` and `az deployment sub create` work the same way. No secret value is a parameter: the template
// creates the vault and the references, operators put the values in (docs/deploy.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd AZURE_ENV_NAME); seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region of all resources. Must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse; empty derives rg-<environmentName>.')
param resourceGroupName string = ''

@description('Extra tags applied to every resource (azd-env-name is always added).')
param tags object = {}

@description('Python version of the Functions runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Upper bound on Flex Consumption scale-out instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Bulk runs and the live push stop before anonymizing or unsubscribing more records than this.')
@minValue(0)
param massChangeLimit int = 100

@description('Bulk runs stop before anonymizing or unsubscribing more than this share (0..1) of their records.')
param massChangeShare string = '0.05'

@description('NCRONTAB schedule of the reconciliation run (Dataverse change tracking).')
param reconcileSchedule string = '0 30 2 * * *'

@description('Spread the Flex Consumption plan across availability zones (only in regions that support it).')
param zoneRedundant bool = false

@description('Replication of the storage account that holds the sync state.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_ZRS'

@description('Public network access of the Key Vault. Disabled requires VNet integration and a private endpoint, which this template does not create.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('Spotler Mail+ REST API base URL.')
param spotlerBaseUrl string = 'https://restapi.mailplus.nl'

@description('Spotler Mail+ REST API path prefix.')
param spotlerPathPrefix string = '/integrationservice-1.1.0'

@description('Spotler Mail+ OAuth 1.0a consumer key (an identifier, not a secret; the consumer secret goes into Key Vault).')
param spotlerConsumerKey string = ''

@description('Dataverse environment URL, e.g. https://contoso.crm4.dynamics.com.')
param dataverseUrl string = ''

@description('How the app gets Dataverse tokens: managed_identity (the user-assigned identity; preferred) or client_secret (app registration; secret in Key Vault).')
@allowed([
  'managed_identity'
  'client_secret'
])
param dataverseAuth string = 'managed_identity'

@description('Entra tenant of the Dataverse environment; empty uses the deployment tenant.')
param dataverseTenantId string = ''

@description('Application (client) id of the app registration; only used with dataverseAuth = client_secret.')
param dataverseClientId string = ''

@description('systemuser id of the connector\'s Dataverse application user, so its own writes are not pushed back; may be empty.')
param dataverseAppUserId string = ''

@description('Who wins when both sides changed a two-way field since the last sync.')
@allowed([
  'dynamics'
  'most_recent'
])
param conflictWinner string = 'dynamics'

@description('Anonymize the Spotler contact when its Dataverse record is deactivated.')
param anonymizeOnDeactivate bool = true

@description('Clear a Spotler property when the Dataverse value is blank.')
param purgeExistingPropertiesWhenNotSet bool = false

@description('E-mail address that receives the connector\'s alerts (dead letters, poison queue, no completed pull, failure share); empty creates the alerts with an action group without a receiver.')
param alertEmail string = ''

@description('Alert when more than this percentage of push deliveries fail within an hour.')
@minValue(1)
@maxValue(100)
param alertFailureSharePercent int = 10

// --- Every other connector setting (sync_core/settings.py) is a parameter too, so `azd env set <SETTING> <value>`
// gives it and a later `azd provision` keeps it. main.parameters.json maps each to the azd environment value of
// the same name; tests/infra/test_bicep.py keeps the two in step with the settings module.

@description('Prefix of the state tables (SYNC_TABLE_PREFIX).')
param tablePrefix string = 'sync'

@description('Storage queue of accepted Dataverse events (SYNC_QUEUE_NAME).')
param queueName string = 'dataverse-events'

@description('Timeout of one Spotler call in seconds (SPOTLER_TIMEOUT_SECONDS).')
param spotlerTimeoutSeconds string = '30.0'

@description('Attempts per Spotler call (SPOTLER_MAX_ATTEMPTS).')
param spotlerMaxAttempts int = 5

@description('Spotler calls per second of one instance (SPOTLER_CALLS_PER_SECOND): the account\'s limit divided by maximumInstanceCount, e.g. \'0.1\' for 10 calls/s over 100 instances. \'0\': unpaced.')
param spotlerCallsPerSecond string = '0'

@description('Column that receives the Spotler status reason (DATAVERSE_STATUS_COLUMN); `dataverse setup` prints it. Empty: not written.')
param dataverseStatusColumn string = ''

@description('Column that receives the status detail text (DATAVERSE_STATUS_DETAIL_COLUMN); empty: not written.')
param dataverseStatusDetailColumn string = ''

@description('How the status column holds the reason: choice option values or the code as text (DATAVERSE_STATUS_COLUMN_TYPE).')
@allowed([
  'choice'
  'text'
])
param dataverseStatusColumnType string = 'choice'

@description('Date-time column that receives when the record was last in sync (DATAVERSE_STATUS_SYNCED_ON_COLUMN); empty: not written.')
param dataverseStatusSyncedOnColumn string = ''

@description('What happens in Spotler when a synced record stops qualifying (ON_LEAVING_SCOPE).')
@allowed([
  'unsubscribe'
  'anonymize'
  'keep'
])
param onLeavingScope string = 'unsubscribe'

@description('Timeout of one Dataverse call in seconds (DATAVERSE_TIMEOUT_SECONDS).')
param dataverseTimeoutSeconds string = '30.0'

@description('Authentication the Dataverse webhook registration uses (WEBHOOK_AUTH_MODE).')
@allowed([
  'webhook_key'
  'http_header'
  'http_query_string'
])
param webhookAuthMode string = 'webhook_key'

@description('Header or query parameter name for http_header / http_query_string (WEBHOOK_AUTH_NAME).')
param webhookAuthName string = 'x-spotler-sync-key'

@description('Largest accepted webhook body in bytes (WEBHOOK_MAX_BYTES).')
param webhookMaxBytes int = 1048576

@description('During a webhook secret rotation: also accept the Key Vault secret webhook-secret-next (WEBHOOK_SECRET_NEXT).')
param webhookRotation bool = false

@description('The public webhook URL `dataverse setup` registers (WEBHOOK_PUBLIC_URL); empty: pass --url.')
param webhookPublicUrl string = ''

@description('Mapping file deployed with the app, relative to the app root (MAPPING_FILE); empty: the shipped default.')
param mappingFile string = ''

@description('Mapping file in a blob of the storage account, as container/path.json (MAPPING_BLOB; wins over mappingFile); empty: not used.')
param mappingBlob string = ''

@description('Minutes the pull re-reads before the watermark (PULL_OVERLAP_MINUTES).')
param pullOverlapMinutes int = 10

@description('Hours the first pull reads back (PULL_INITIAL_LOOKBACK_HOURS).')
param pullInitialLookbackHours int = 24

@description('Spotler feed page size (PULL_PAGE_SIZE).')
param pullPageSize int = 500

@description('How the pull pages Spotler\'s feed (PULL_FEED_PAGING).')
@allowed([
  'timestamp'
  'offset'
])
param pullFeedPaging string = 'timestamp'

@description('Queue deliveries of an event before it becomes a dead letter (MAX_DELIVERY_ATTEMPTS; match host.json).')
param maxDeliveryAttempts int = 5

@description('Automatic replays of a dead letter before it waits for an operator (DEAD_LETTER_MAX_REPLAYS).')
param deadLetterMaxReplays int = 12

@description('Seconds between live mapping checks while the mapping does not fit (MAPPING_RECHECK_SECONDS).')
param mappingRecheckSeconds int = 60

@description('Optional principal id (e.g. the user running azd) granted Key Vault Secrets Officer so it can set the secret values. Empty to skip.')
param principalId string = ''

@description('Principal type of principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, {
  'azd-env-name': environmentName
})
var functionAppName = '${abbrs.webSitesFunctions}sync-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
@description('Storage queue of bulk work items: backfill, resync, reconcile (BULK_QUEUE_NAME).')
param bulkQueueName string = 'bulk-work'

@description('Dataverse rows read per request by bulk runs (BULK_PAGE_SIZE).')
@minValue(1)
@maxValue(5000)
param bulkPageSize int = 5000

@description('Work items one command-line run handles at a time when it drives the bulk queue itself (BULK_CONCURRENCY).')
param bulkConcurrency int = 8
var stateTables = [
  'links'
  'watermarks'
  'status'
  'deadletters'
  'suppressions'
  'deliveries'
  'index'
  'runs'
  'bulkruns'
  'bulkitems'
  'bulkindex'
  'guard'
]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: allTags
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}sync-${resourceToken}'
    location: location
    tags: allTags
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: allTags
  }
}

module alerts 'core/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: allTags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupName: 'ag-sync-${resourceToken}'
    alertEmail: alertEmail
    failureSharePercent: alertFailureSharePercent
    namePrefix: 'sync-${resourceToken}'
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: allTags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    queueNames: [
      queueName
      '${queueName}-poison'
      bulkQueueName
      '${bulkQueueName}-poison'
    ]
    tableNames: [for table in stateTables: '${tablePrefix}${table}']
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: allTags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

// Key Vault references without a version follow the latest secret version (rotation needs no redeploy).
var secretsUri = '${keyVault.outputs.uri}secrets/'

// The connector's app settings, exactly the environment variable names of sync_core/settings.py.
// tests/infra/test_bicep.py compares these keys with the settings module; host settings live in app/function.bicep.
var appSettings = union({
  SPOTLER_BASE_URL: spotlerBaseUrl
  SPOTLER_PATH_PREFIX: spotlerPathPrefix
  SPOTLER_CONSUMER_KEY: spotlerConsumerKey
  SPOTLER_CONSUMER_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}spotler-consumer-secret/)'
  DATAVERSE_URL: dataverseUrl
  DATAVERSE_AUTH: dataverseAuth
  DATAVERSE_TENANT_ID: !empty(dataverseTenantId) ? dataverseTenantId : tenant().tenantId
  DATAVERSE_CLIENT_ID: dataverseAuth == 'client_secret' ? dataverseClientId : identity.outputs.clientId
  WEBHOOK_AUTH_MODE: webhookAuthMode
  WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}webhook-secret/)'
  SUPPRESSION_HASH_KEY: '@Microsoft.KeyVault(SecretUri=${secretsUri}suppression-hash-key/)'
  SYNC_TABLE_PREFIX: tablePrefix
  SYNC_QUEUE_NAME: queueName
  ANONYMIZE_ON_DEACTIVATE: anonymizeOnDeactivate ? 'true' : 'false'
  ON_LEAVING_SCOPE: onLeavingScope
  DATAVERSE_STATUS_COLUMN_TYPE: dataverseStatusColumnType
  PurgeExistingPropertiesWhenNotSet: purgeExistingPropertiesWhenNotSet ? 'true' : 'false'
  CONFLICT_WINNER: conflictWinner
  SPOTLER_TIMEOUT_SECONDS: spotlerTimeoutSeconds
  SPOTLER_MAX_ATTEMPTS: string(spotlerMaxAttempts)
  SPOTLER_CALLS_PER_SECOND: spotlerCallsPerSecond
  DATAVERSE_TIMEOUT_SECONDS: dataverseTimeoutSeconds
  WEBHOOK_AUTH_NAME: webhookAuthName
  WEBHOOK_MAX_BYTES: string(webhookMaxBytes)
  PULL_OVERLAP_MINUTES: string(pullOverlapMinutes)
  PULL_INITIAL_LOOKBACK_HOURS: string(pullInitialLookbackHours)
  PULL_PAGE_SIZE: string(pullPageSize)
  PULL_FEED_PAGING: pullFeedPaging
  MAX_DELIVERY_ATTEMPTS: string(maxDeliveryAttempts)
  DEAD_LETTER_MAX_REPLAYS: string(deadLetterMaxReplays)
  MAPPING_RECHECK_SECONDS: string(mappingRecheckSeconds)
  BULK_QUEUE_NAME: bulkQueueName
  BULK_PAGE_SIZE: string(bulkPageSize)
  BULK_CONCURRENCY: string(bulkConcurrency)
  MASS_CHANGE_LIMIT: string(massChangeLimit)
  MASS_CHANGE_SHARE: massChangeShare
  RECONCILE_SCHEDULE: reconcileSchedule
}, empty(dataverseAppUserId) ? {} : {
  DATAVERSE_APP_USER_ID: dataverseAppUserId
}, empty(dataverseStatusColumn) ? {} : {
  DATAVERSE_STATUS_COLUMN: dataverseStatusColumn
}, empty(dataverseStatusDetailColumn) ? {} : {
  DATAVERSE_STATUS_DETAIL_COLUMN: dataverseStatusDetailColumn
}, empty(dataverseStatusSyncedOnColumn) ? {} : {
  DATAVERSE_STATUS_SYNCED_ON_COLUMN: dataverseStatusSyncedOnColumn
}, empty(webhookPublicUrl) ? {} : {
  WEBHOOK_PUBLIC_URL: webhookPublicUrl
}, empty(mappingFile) ? {} : {
  MAPPING_FILE: mappingFile
}, empty(mappingBlob) ? {} : {
  MAPPING_BLOB: mappingBlob
}, webhookRotation ? {
  WEBHOOK_SECRET_NEXT: '@Microsoft.KeyVault(SecretUri=${secretsUri}webhook-secret-next/)'
} : {}, dataverseAuth == 'client_secret' ? {
  DATAVERSE_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}dataverse-client-secret/)'
} : {})

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  dependsOn: [
    // The host resolves Key Vault references and opens storage at start-up: grant access first.
    rbac
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: allTags
    serviceName: 'app'
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: 2048
    zoneRedundant: zoneRedundant
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appSettings: appSettings
  }
}

var baseUrl = 'https://${functionApp.outputs.defaultHostName}'

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_DEFAULT_HOST_NAME string = functionApp.outputs.defaultHostName
@description('Register this URL as the Dataverse webhook endpoint (WebhookKey authentication).')
output DATAVERSE_WEBHOOK_URL string = '${baseUrl}/api/dynamics/webhook'
@description('Base of the sync status endpoint.')
output STATUS_ENDPOINT_BASE string = '${baseUrl}/api/status'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
