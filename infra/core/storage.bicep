// The one storage account for the Functions host and the connector's state: the Flex Consumption deployment
// container, the host's own blobs, the Dataverse event queue and the state tables.
// Only Entra ID (RBAC) access: shared keys, SAS and anonymous blob access are all off.

@description('Name of the storage account (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Replication. Zone- or geo-redundant by default because the tables hold the sync state.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_ZRS'

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Queues to create (the Dataverse event queue and its poison queue).')
param queueNames array = []

@description('Tables to create (the app also creates them on first use).')
param tableNames array = []

@description('Days deleted blobs and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

@description('Log Analytics workspace that receives the storage data-plane logs; empty to skip.')
param logAnalyticsWorkspaceId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  //checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches its host storage over the public endpoint, so the firewall cannot default to Deny. Shared keys, SAS and anonymous access are off: every request needs an Entra token with an RBAC role.
  //checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: public network access stays enabled for the Flex Consumption host; data access is Entra-only.
  //checkov:skip=CKV_AZURE_206:Replication is the skuName parameter, default Standard_ZRS (zone-redundant); checkov does not resolve parameter defaults. LRS stays allowed for regions without availability zones.
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    isLocalUserEnabled: false
    isSftpEnabled: false
    isHnsEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: deleteRetentionDays
      }
      containerDeleteRetentionPolicy: {
        enabled: true
        days: deleteRetentionDays
      }
    }

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'
  }

  resource tableService 'tableServices' = {
    name: 'default'
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: storage::queueService
  name: queueName
}]

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: storage::tableService
  name: tableName
}]

// Data-plane audit logs (who read, wrote or deleted what) for blobs, queues and tables.
var logCategories = [
  {
    category: 'StorageRead'
    enabled: true
  }
  {
    category: 'StorageWrite'
    enabled: true
  }
  {
    category: 'StorageDelete'
    enabled: true
  }
]

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'storage-logs'
  scope: storage::blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: logCategories
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'storage-logs'
  scope: storage::queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: logCategories
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'storage-logs'
  scope: storage::tableService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: logCategories
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
