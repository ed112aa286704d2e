// Flex Consumption (FC1) plan and the Linux Python function app. Everything the app touches is reached with
// the user-assigned identity: deployment package, AzureWebJobsStorage (blobs, the event queue, tables),
// Key Vault references and Application Insights ingestion.

@description('Name of the function app.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region.')
param location string

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('azd service name (azure.yaml); only the function app carries the azd-service-name tag.')
param serviceName string = 'app'

@description('Python version of the Functions runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Upper bound on scale-out instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Spread the plan across availability zones (region must support it for Flex Consumption).')
param zoneRedundant bool = false

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Name of the storage account (host storage, queue, tables, deployment container).')
param storageAccountName string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('The connector\'s own app settings (see main.bicep).')
param appSettings object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  //checkov:skip=CKV_AZURE_225:Zone redundancy is the zoneRedundant parameter; it is off by default because Flex Consumption supports it only in some regions.
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

// Host settings: identity-based AzureWebJobsStorage (the queue trigger uses the same connection) and
// Entra-authenticated Application Insights. FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION must not
// be set on Flex Consumption: functionAppConfig.runtime replaces them.
var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  //checkov:skip=CKV_AZURE_17:Dataverse webhooks cannot present client certificates.
  //checkov:skip=CKV_AZURE_212:Flex Consumption has no fixed worker count; it scales out per event up to maximumInstanceCount and the platform replaces failed instances.
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  //checkov:skip=CKV_AZURE_222:Dataverse delivers the webhook from its service over the internet, so the endpoint must be publicly reachable (HTTPS only, TLS 1.2, every call authenticated with the Key Vault-held webhook key).
  //checkov:skip=CKV_AZURE_213:No App Service health check on Flex Consumption: instances scale per event (down to zero) and are managed by the platform; failures surface in Application Insights.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, hostSettings)
  }

  // Publishing credentials (FTP and SCM basic auth) are off: deployments use Entra ID.
  resource ftpCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scmCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }
}

output name string = functionApp.name
output id string = functionApp.id
output defaultHostName string = functionApp.properties.defaultHostName
