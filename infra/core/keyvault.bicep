// Key Vault for the connector's secrets. RBAC authorization only (no access policies), soft delete with purge
// protection. The template creates the vault, never the secret values: operators set those with
// `az keyvault secret set` (docs/deploy.md).

@description('Name of the vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Public network access. Keep Enabled unless the function app reaches the vault through a private endpoint: Flex Consumption without VNet integration resolves Key Vault references over the public endpoint.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Days a deleted vault or secret stays recoverable.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Log Analytics workspace that receives the vault audit log; empty to skip.')
param logAnalyticsWorkspaceId string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  //checkov:skip=CKV_AZURE_189:Public network access is the keyVaultPublicNetworkAccess parameter (default Enabled): Flex Consumption without VNet integration can only resolve Key Vault references over the public endpoint. Access is RBAC-only, and Disabled is available once a private endpoint is added.
  //checkov:skip=CKV_AZURE_109:The firewall default follows the keyVaultPublicNetworkAccess parameter. The function app (Flex Consumption, no VNet) resolves Key Vault references from non-fixed outbound addresses that the trusted-services bypass does not cover; access is RBAC-only (Key Vault Secrets User for the app identity).
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
      bypass: 'AzureServices'
    }
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'vault-audit'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
