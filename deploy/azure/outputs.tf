# What first-run.sh, GitHub and the operator need after `terraform apply`.

output "public_url" {
  description = "Hangar's public URL (server.public_url): the CLI, GitHub's webhooks and the runners use it."
  value       = local.public_url
}

output "webhook_url_base" {
  description = "Entity webhook URLs are <this>/<entity id>; `hangar repo ls` shows each one."
  value       = "${local.public_url}/webhooks"
}

output "public_ip" {
  description = "Public IP of Hangar's VM, or of the load balancer in front of the replicas (point public_hostname's DNS record here)."
  value       = azurerm_public_ip.hangar.ip_address
}

output "resource_group" {
  description = "Resource group of Hangar's VM, Key Vault, storage and registry."
  value       = azurerm_resource_group.hangar.name
}

output "vm_name" {
  description = "Hangar's (first) VM (az vm run-command invoke -g <resource_group> -n <vm_name> …)."
  value       = azurerm_linux_virtual_machine.hangar[0].name
}

output "vm_names" {
  description = "Every VM running a hangard replica."
  value       = azurerm_linux_virtual_machine.hangar[*].name
}

output "postgres_server" {
  description = "The flexible server's private name (database = \"postgres\"), else null. The URL with its password is the Key Vault secret hangar-database-url."
  value       = local.pg ? azurerm_postgresql_flexible_server.hangar[0].fqdn : null
}

output "key_vault_name" {
  description = "Key Vault with the generated secrets (first-run.sh reads the admin password and webhook secret from it)."
  value       = azurerm_key_vault.hangar.name
}

output "key_vault_uri" {
  value = azurerm_key_vault.hangar.vault_uri
}

output "registry_login_server" {
  description = "Where to push the image (empty when create_registry is false)."
  value       = local.registry
}

output "hangar_image" {
  description = "The image the VM runs."
  value       = local.image
}

output "identity_client_id" {
  description = "Client id of the managed identity (provider.azure.credential.client_id)."
  value       = azurerm_user_assigned_identity.hangar.client_id
}

output "identity_principal_id" {
  value = azurerm_user_assigned_identity.hangar.principal_id
}

output "provider_name" {
  description = "The [[provider]] name pools use (pool add --provider-name)."
  value       = var.provider_name
}

output "runner_resource_group" {
  description = "The runner VMs' resource group (provider.azure.resource_group)."
  value       = azurerm_resource_group.runners.name
}

output "runner_subnet_id" {
  description = "provider.azure.subnet_id."
  value       = azurerm_subnet.runners.id
}

output "runner_outbound_ip" {
  description = "The address GitHub and Hangar see runner traffic come from (NAT gateway), if any."
  value       = var.runner_nat_gateway ? azurerm_public_ip.runners_nat[0].ip_address : null
}

output "backup_container_url" {
  description = "Blob container that receives the hourly SQLite backups (with PostgreSQL the flexible server keeps its own)."
  value       = local.host_settings.backup_url
}

output "hangard_config" {
  description = "The rendered hangard.toml (no secrets in it)."
  value       = local.hangard_toml
}

output "first_run_env" {
  description = "Environment for deploy/azure/first-run.sh (add REPO_OWNER and REPO_NAME)."
  value       = <<-EOT
    export HANGAR_SERVER_URL=${local.public_url}
    export KEY_VAULT_NAME=${azurerm_key_vault.hangar.name}
    export PROVIDER_NAME=${var.provider_name}
  EOT
}
