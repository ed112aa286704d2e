// Alerts on the connector's telemetry in Application Insights (see docs/operations.md, "Alerts"):
// dead letters waiting, anything in the poison queue, no completed pull for an hour, and the share of failed
// pushes above a threshold. Every rule notifies one action group that e-mails the operators.

@description('Azure region of the alert rules (the action group is global).')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Name of the action group.')
param actionGroupName string

@description('Address that receives the alerts; empty creates the action group without a receiver (add one later).')
param alertEmail string = ''

@description('Alert when more than this percentage of pushes fail within an hour.')
@minValue(1)
@maxValue(100)
param failureSharePercent int = 10

@description('Name prefix of the alert rules.')
param namePrefix string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'syncalerts'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    name: 'dead-letters'
    description: 'Dead letters wait for a replay (the gauge the pull run publishes, or new dead letters).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT30M'
    query: 'customMetrics | where name in ("sync.dead_letters.waiting", "sync.dead_letters") | summarize AggregatedValue = max(value)'
    measure: 'AggregatedValue'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'poison-queue'
    description: 'A message reached the poison queue (the poison trigger ran, or the worker forwarded one there).'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'union (requests | where operation_Name == "poison_worker"), (traces | where message startswith "dead letter not stored") | summarize AggregatedValue = count()'
    measure: 'AggregatedValue'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'no-completed-pull'
    description: 'No pull run completed in the last hour (the timer stopped, or every run fails or stops early).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    query: 'dependencies | where name == "sync.pull" and tostring(customDimensions["sync.completed"]) =~ "true" | summarize AggregatedValue = count()'
    measure: 'AggregatedValue'
    operator: 'LessThan'
    threshold: 1
  }
  {
    name: 'push-failure-share'
    description: 'The share of failed push deliveries in the last hour is above ${failureSharePercent}%.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    query: 'dependencies | where name == "sync.push" | summarize total = count(), failed = countif(success == false) | extend AggregatedValue = iff(total == 0, 0.0, 100.0 * failed / total)'
    measure: 'AggregatedValue'
    operator: 'GreaterThan'
    threshold: failureSharePercent
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}: ${rule.name}'
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: rule.measure
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
